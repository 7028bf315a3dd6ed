"""The canonical line item every bill format is turned into (DESIGN section 3)."""

from __future__ import annotations

# Columns of the line-item frame, in order. `cost` holds decimal.Decimal objects; the optional text
# columns hold None where the bill has no value; `day` is the charge day as YYYY-MM-DD (None where the bill has no
# charge date), `kind` the charge kind (agent.core.model.CHARGE_KINDS); `row` is the 1-based line in the source file.
LINE_ITEM_COLUMNS = [
    "period",
    "cost",
    "currency",
    "tag",
    "sub_account",
    "workspace",
    "api_key",
    "day",
    "kind",
    "source",
    "row",
]
