"""Bill import: CSV, CSV.gz, Parquet and XLSX bills in native, FOCUS, AWS CUR and Azure formats."""

from __future__ import annotations

from agent.bills.detect import detect_format
from agent.bills.importer import read_bill, total_bill
from agent.bills.options import ImportOptions

__all__ = ["ImportOptions", "detect_format", "read_bill", "total_bill"]
