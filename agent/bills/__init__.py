"""Bill import: CSV, CSV.gz, Parquet and XLSX bills in native, FOCUS, AWS CUR and Azure formats."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from agent.bills.options import ImportOptions

if TYPE_CHECKING:
    from agent.bills.detect import detect_format
    from agent.bills.importer import total_bill

__all__ = ["ImportOptions", "detect_format", "total_bill"]
# The importer needs pandas and Arrow: it is loaded when first used, so that an idle `cz-agent serve` does
# without them.
_LAZY = {"detect_format": "agent.bills.detect", "total_bill": "agent.bills.importer"}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
