"""Turns a chunk of bill text into canonical line items, rows outside the period, and rejected rows."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pandas as pd

from agent.bills.columns import ColumnMap
from agent.bills.dates import days, months
from agent.bills.lineitems import LINE_ITEM_COLUMNS
from agent.bills.options import ImportOptions
from agent.bills.tags import TagReader
from agent.core.model import CHARGE_KINDS, RejectedRow
from agent.core.money import parse_amount

_CURRENCY_CODE = r"[A-Z]{3}"


@dataclass(frozen=True)
class ChunkResult:
    """What one chunk gave; items and out-of-period rows have LINE_ITEM_COLUMNS and a fresh index."""

    items: pd.DataFrame
    out_of_period: pd.DataFrame
    rejected: list[RejectedRow]


@dataclass(frozen=True)
class _Check:
    """One validation over a chunk: the reason each row fails it (missing where the row passes)."""

    column: str
    reasons: pd.Series


def convert_chunk(chunk: pd.DataFrame, *, columns: ColumnMap, options: ImportOptions, source: str,
                  tag_reader: TagReader) -> ChunkResult:
    """Validate each row (cost first: a row reports its first problem) and build the line items."""
    costs, cost_check = _costs(chunk, columns.cost)
    currencies, currency_check = currency_cells(chunk, columns=columns, default=options.default_currency)
    tag_values, tag_check = tag_cells(chunk, columns=columns, tag_reader=tag_reader)
    billing_month, billing_check = month_cells(chunk, columns.billing_period)
    charge_month, charge_check = month_cells(chunk, columns.charge_period)
    period = billing_month.fillna(charge_month)
    if options.period is not None:
        period = period.fillna(options.period)
    period_check = _Check(columns.billing_period or columns.charge_period or "period",
                          _reason_where(period.isna(), "no billing or charge date, and no period was requested"))
    column, reason = _first_failures([cost_check, currency_check, tag_check, billing_check, charge_check,
                                      period_check])
    items = _line_items(chunk, columns=columns, source=source, fields={
        "period": period, "cost": costs, "currency": currencies, "tag": tag_values,
        "day": day_cells(chunk, columns.charge_period), "kind": kind_cells(chunk, columns=columns)})
    accepted = reason.isna()
    outside = _outside_period(period, options.period)
    return ChunkResult(
        items=items[accepted & ~outside].reset_index(drop=True),
        out_of_period=items[accepted & outside].reset_index(drop=True),
        rejected=_rejected_rows(chunk, columns=columns, source=source, failures=(column, reason)),
    )


def text_cells(chunk: pd.DataFrame, column: str | None) -> pd.Series:
    """Stripped text of a column; missing where the cell is empty, the literal NULL, or the column absent."""
    if column is None:
        return pd.Series(np.nan, index=chunk.index, dtype="str")
    text = chunk[column].str.strip()
    return text.mask(text.isin(["", "NULL"]))


def _reason_where(failing: pd.Series, reason: str | pd.Series) -> pd.Series:
    return pd.Series(None, index=failing.index, dtype=object).mask(failing, reason)


def _costs(chunk: pd.DataFrame, column: str) -> tuple[pd.Series, _Check]:
    amounts: list[Decimal | None] = []
    reasons: list[str | None] = []
    for text in text_cells(chunk, column):
        amount, reason = _parse_cost(text)
        amounts.append(amount)
        reasons.append(reason)
    return (pd.Series(amounts, index=chunk.index, dtype=object),
            _Check(column, pd.Series(reasons, index=chunk.index, dtype=object)))


def _parse_cost(text: object) -> tuple[Decimal | None, str | None]:
    if not isinstance(text, str):
        return None, "missing cost"
    try:
        return parse_amount(text), None
    except ValueError as e:
        return None, f"cost is {e}"


def currency_cells(chunk: pd.DataFrame, *, columns: ColumnMap, default: str | None) -> tuple[pd.Series, _Check]:
    currencies = text_cells(chunk, columns.currency).str.upper()
    if default is not None:
        currencies = currencies.fillna(default.strip().upper())
    invalid = currencies.notna() & ~currencies.str.fullmatch(_CURRENCY_CODE).astype(bool)
    reasons = _reason_where(currencies.isna(), "missing currency, and no default currency was given")
    reasons = reasons.mask(invalid, "not a 3-letter currency code: '" + currencies + "'")
    return currencies, _Check(columns.currency or "currency", reasons)


def tag_cells(chunk: pd.DataFrame, *, columns: ColumnMap, tag_reader: TagReader) -> tuple[pd.Series, _Check]:
    cells = text_cells(chunk, columns.tag)
    if not columns.tags_are_json:
        return cells, _Check(columns.tag or "tag", pd.Series(None, index=chunk.index, dtype=object))
    found = tag_reader.read(cells)
    values = pd.Series([value for value, _ in found], index=chunk.index, dtype=object)
    reasons = pd.Series([reason for _, reason in found], index=chunk.index, dtype=object)
    return values, _Check(columns.tag or "tags", reasons)


def month_cells(chunk: pd.DataFrame, column: str | None) -> tuple[pd.Series, _Check]:
    dates = text_cells(chunk, column)
    month = months(dates) if column is not None else dates
    reasons = _reason_where(dates.notna() & month.isna(), "not a date: '" + dates + "'")
    return month, _Check(column or "date", reasons)


def day_cells(chunk: pd.DataFrame, column: str | None) -> pd.Series:
    """The charge day (YYYY-MM-DD) of each row; missing where the date has no day. Never a reason to reject a row:
    month_cells judges the date."""
    dates = text_cells(chunk, column)
    return days(dates) if column is not None else dates


def kind_cells(chunk: pd.DataFrame, *, columns: ColumnMap) -> pd.Series:
    """The charge kind of each row (ColumnMap.charge_kind): usage where the cell says so or is missing, else fixed.
    Never a reason to reject a row: the kind only shapes the forecast."""
    usage, fixed = CHARGE_KINDS
    kinds = text_cells(chunk, columns.charge_kind)
    says_usage = kinds.str.casefold().isin([kind.casefold() for kind in columns.usage_kinds])
    return pd.Series(fixed, index=chunk.index, dtype="str").mask(kinds.isna() | says_usage, usage)


def _first_failures(checks: list[_Check]) -> tuple[pd.Series, pd.Series]:
    """The column and reason of each row's first failing check, in the order given; missing if none fails."""
    index = checks[0].reasons.index
    column = pd.Series(None, index=index, dtype=object)
    reason = pd.Series(None, index=index, dtype=object)
    for check in checks:
        first = reason.isna() & check.reasons.notna()
        column = column.mask(first, check.column)
        reason = reason.mask(first, check.reasons)
    return column, reason


def _outside_period(line_period: pd.Series, period: str | None) -> pd.Series:
    """Rows whose own period (the billing month where the bill has one, else the charge month) is another."""
    if period is None:
        return pd.Series(False, index=line_period.index)
    return line_period.notna() & (line_period != period)


def _line_items(chunk: pd.DataFrame, *, columns: ColumnMap, source: str,
                fields: dict[str, pd.Series]) -> pd.DataFrame:
    text_columns = {
        "sub_account": columns.sub_account,
        "workspace": columns.workspace,
        "api_key": columns.api_key,
    }
    values = {**fields, **{field: text_cells(chunk, column) for field, column in text_columns.items()}}
    frame = pd.DataFrame({field: _optional(series) for field, series in values.items()}, index=chunk.index)
    frame["source"] = pd.Series(source, index=chunk.index, dtype=object)
    frame["row"] = chunk.index.to_numpy(dtype="int64")
    return frame[LINE_ITEM_COLUMNS]


def _optional(series: pd.Series) -> pd.Series:
    """Object values with None, not NaN, where missing: consumers test `is None`."""
    return series.astype(object).mask(series.isna(), None)


def _rejected_rows(chunk: pd.DataFrame, *, columns: ColumnMap, source: str,
                   failures: tuple[pd.Series, pd.Series]) -> list[RejectedRow]:
    column, reason = failures
    failing = reason.notna()
    raw_costs = chunk[columns.cost].str.strip().fillna("")
    return [
        RejectedRow(source=source, row=int(row), column=failed_column, reason=failed_reason, raw_cost=raw_cost)
        for row, failed_column, failed_reason, raw_cost in zip(
            chunk.index[failing], column[failing], reason[failing], raw_costs[failing])
    ]
