"""Bill lines grouped by currency, period, sub-account, workspace and API key, with one pandas groupby over
the text columns and exact Decimal sums, for the split (agent.core.split)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import pandas as pd

from agent.bills.totals import BillTotals
from agent.core.money import exact_arithmetic
from agent.core.split import NO_VALUE, BillSplit, Group, check_split, split_groups


def split_bill(items: pd.DataFrame, *, columns: Sequence[str], precision: int | None = None) -> BillSplit:
    """Group the line items by currency, period and `columns`; amounts rounded to `precision` decimals
    (default: each currency's minor unit)."""
    check_split(columns, precision)
    return split_groups(_group_sums(items, columns=list(columns)), columns=columns, precision=precision)


def _group_sums(items: pd.DataFrame, *, columns: list[str]) -> list[Group]:
    """(currency, period, *values), exact cost and line count of each group, sorted by key."""
    if items.empty:
        return []
    keys = [_values(items["currency"]), _values(items["period"]), *(_values(items[column]) for column in columns)]
    grouped = items["cost"].groupby(keys, sort=True)
    with exact_arithmetic():
        sums = grouped.sum()
    # Lines already summed (a bill's group totals, a run's stored split) say how many lines each row stands for.
    counts = items["line_count"].groupby(keys, sort=True).sum() if "line_count" in items else grouped.size()
    return [(tuple(key), Decimal(amount), int(count))
            for key, amount, count in zip(sums.index.tolist(), sums.tolist(), counts.tolist())]


def _values(column: pd.Series) -> pd.Series:
    # The importer gives None for empty and NULL cells, already trimmed; other frames may hold NaN or blanks.
    missing = column.isna()
    text = column.where(~missing, "").astype(str).str.strip()
    return text.mask(missing | (text == ""), NO_VALUE)


def bill_lines(bills: Sequence[BillTotals]) -> pd.DataFrame:
    """The bills' split groups as line items, each with the count of lines it sums, for `split_bill`."""
    records = [(*key, group.exact(), group.lines) for bill in bills for key, group in bill.split_groups.items()]
    return pd.DataFrame(records, columns=["period", "currency", "sub_account", "workspace", "api_key", "cost",
                                          "line_count"], dtype=object)
