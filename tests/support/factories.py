"""Line-item frames for tests of the pure core, built from (tag, cost) pairs."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd

from agent.bills.lineitems import LINE_ITEM_COLUMNS


def line_items(lines: list[tuple[str | None, str]], *, currency: str = "USD", period: str = "2026-10",
               source: str = "bill.csv") -> pd.DataFrame:
    records = [
        {
            "period": period, "cost": Decimal(cost), "currency": currency, "tag": tag, "sub_account": None,
            "workspace": None, "api_key": None, "source": source, "row": index + 2,
        }
        for index, (tag, cost) in enumerate(lines)
    ]
    return pd.DataFrame(records, columns=LINE_ITEM_COLUMNS)
