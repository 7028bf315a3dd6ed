"""Which bill format a header belongs to."""

from __future__ import annotations

from agent.bills import azure, cur, focus, native
from agent.bills.columns import find_column
from agent.bills.spec import FormatSpec
from agent.errors import BillFormatError

# Every format of agent.core.bill_formats, in detection order: the specific markers before the generic native
# `unblendedCost`.
SPECS: dict[str, FormatSpec] = {
    spec.name: spec for spec in (cur.LEGACY_SPEC, cur.CUR2_SPEC, focus.SPEC, azure.SPEC, native.SPEC)
}


def detect_format(columns: list[str], *, source: str = "bill") -> str:
    """The name of the format whose marker columns the header has; BillFormatError if none matches."""
    for spec in SPECS.values():
        if all(find_column(columns, group) is not None for group in spec.markers):
            return spec.name
    looked_for = "; ".join(f"{spec.describe_markers()} ({spec.name})" for spec in SPECS.values())
    raise BillFormatError(f"unknown bill format: the header has none of the columns looked for: {looked_for}",
                          source=source)
