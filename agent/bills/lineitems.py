"""The canonical line item every bill format is turned into (DESIGN section 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from agent.core.model import RejectedRow

if TYPE_CHECKING:
    import pandas as pd

# Columns of the line-item frame, in order. `cost` holds decimal.Decimal objects; the optional text
# columns hold None where the bill has no value; `row` is the 1-based line in the source file.
LINE_ITEM_COLUMNS = [
    "period",
    "cost",
    "currency",
    "tag",
    "sub_account",
    "workspace",
    "api_key",
    "resource_id",
    "service_name",
    "source",
    "row",
]


def empty_line_items() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({name: pd.Series(dtype=object) for name in LINE_ITEM_COLUMNS})


@dataclass
class BillImport:
    """What one bill file gave: the in-period line items, and every row that was set aside."""

    source: str
    sha256: str
    bill_format: str
    input_rows: int
    items: pd.DataFrame
    rejected: list[RejectedRow] = field(default_factory=list)
    # Rows outside the requested period: one line item each, same columns as `items`.
    out_of_period: pd.DataFrame = field(default_factory=empty_line_items)

    def out_of_period_totals(self) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = {}
        for currency, cost in zip(self.out_of_period["currency"], self.out_of_period["cost"]):
            totals[currency] = totals.get(currency, Decimal(0)) + cost
        return totals
