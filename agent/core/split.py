"""Pure bill splitting by sub-account, workspace and API key: line items in, rows that add up to the bill out.

No I/O and no clock here. Lines are grouped with one pandas groupby over the text columns and their exact
Decimal costs summed per group; each currency's rows are then rounded with the largest-remainder method so
that they add up to the rounded bill total of that currency.
"""

from __future__ import annotations

import decimal
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, NamedTuple

from agent.errors import AgentError
from agent.core.money import minor_unit

if TYPE_CHECKING:
    import pandas as pd

    from agent.bills.totals import BillTotals

# --by name -> line-item column (and output column) it groups on.
DIMENSIONS: dict[str, str] = {"subaccount": "sub_account", "workspace": "workspace", "apikey": "api_key"}
# Lines without a value for a dimension are grouped under this value.
NO_VALUE = "(none)"
_SHOWN_LINES = 5


class SplitError(AgentError):
    """The requested split is invalid (unknown, repeated or missing dimensions, a bad precision)."""


class SplitRow(NamedTuple):
    """One group of bill lines: its dimension values in the requested order, and its rounded amount.

    A NamedTuple rather than a frozen dataclass: a split can have hundreds of thousands of groups."""

    period: str
    values: tuple[str, ...]
    amount: Decimal
    currency: str
    exact_amount: Decimal
    line_count: int


@dataclass(frozen=True)
class BillSplit:
    """The rows of a split, sorted by currency, period and dimension values, with the bill's totals."""

    columns: tuple[str, ...]
    rows: list[SplitRow]
    bill_totals: dict[str, Decimal]
    rounded_totals: dict[str, Decimal]

    def header(self) -> tuple[str, ...]:
        return ("period", *self.columns, "amount", "currency")

    def records(self) -> Iterator[tuple[str, ...]]:
        for row in self.rows:
            yield (row.period, *row.values, format(row.amount, "f"), row.currency)

    def row_totals(self) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for row in self.rows:
            totals[row.currency] += row.amount
        return dict(totals)


def parse_dimensions(text: str) -> tuple[str, ...]:
    """The line-item columns of a `--by` list such as `workspace,apikey`, in the order given."""
    names = [name.strip().lower() for name in text.split(",")]
    if not any(names):
        raise SplitError(f"give at least one dimension among {', '.join(DIMENSIONS)}")
    unknown = [name for name in names if name not in DIMENSIONS]
    if unknown:
        raise SplitError(f"unknown dimension(s) {', '.join(repr(n) for n in unknown)}; choose among "
                         f"{', '.join(DIMENSIONS)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SplitError(f"dimension(s) given more than once: {', '.join(repeated)}")
    return tuple(DIMENSIONS[name] for name in names)


def split_bill(items: pd.DataFrame, *, columns: Sequence[str], precision: int | None = None) -> BillSplit:
    """Group the line items by currency, period and `columns`; amounts rounded to `precision` decimals
    (default: each currency's minor unit)."""
    _check(columns, precision)
    groups = _group_sums(items, columns=list(columns))
    rows: list[SplitRow] = []
    bill_totals: dict[str, Decimal] = {}
    rounded_totals: dict[str, Decimal] = {}
    # The groups come sorted by currency first: each currency's groups are one contiguous run.
    for currency, currency_groups in itertools.groupby(groups, key=lambda group: group[0][0]):
        currency_groups = list(currency_groups)
        places = minor_unit(currency) if precision is None else precision
        exact = [amount for _, amount, _ in currency_groups]
        rounded = largest_remainder(exact, places)
        rows += [SplitRow(period=key[1], values=key[2:], amount=amount, currency=currency, exact_amount=exact_amount,
                          line_count=count)
                 for (key, exact_amount, count), amount in zip(currency_groups, rounded)]
        bill_totals[currency] = _exact_sum(exact)
        rounded_totals[currency] = _round_half_up(bill_totals[currency], places)
    return BillSplit(columns=tuple(columns), rows=rows, bill_totals=bill_totals, rounded_totals=rounded_totals)


def largest_remainder(amounts: Sequence[Decimal], places: int) -> list[Decimal]:
    """`agent.core.money.largest_remainder` for exact Decimals, in Decimal arithmetic: it gives the same result
    (ties go to the earlier amount) but compares remainders in C, where Fractions took a minute for half a
    million groups."""
    with _exact_arithmetic():
        scaled = [amount.scaleb(places) for amount in amounts]
        floors = [int(value.to_integral_value(rounding=decimal.ROUND_FLOOR)) for value in scaled]
        total = int(_exact_sum(scaled).to_integral_value(rounding=decimal.ROUND_HALF_UP))
        by_remainder = sorted(range(len(scaled)), key=lambda i: (floors[i] - scaled[i], i))
        for position in by_remainder[:total - sum(floors)]:
            floors[position] += 1
        return [_units(units, places) for units in floors]


def _round_half_up(amount: Decimal, places: int) -> Decimal:
    """Half away from zero, as agent.core.money.round_amount, but exact however many digits the amount has."""
    with _exact_arithmetic():
        return _units(int(amount.scaleb(places).to_integral_value(rounding=decimal.ROUND_HALF_UP)), places)


def _units(units: int, places: int) -> Decimal:
    """`units` minor units as an amount with exactly `places` decimals."""
    with _exact_arithmetic():
        quantum = Decimal(1).scaleb(-places)
        return (Decimal(units) * quantum).quantize(quantum)


def _check(columns: Sequence[str], precision: int | None) -> None:
    if not columns or len(set(columns)) != len(columns) or not set(columns) <= set(DIMENSIONS.values()):
        raise SplitError(f"split columns must be distinct names among {', '.join(DIMENSIONS.values())}, "
                         f"got {list(columns)}")
    if precision is not None and precision < 0:
        raise SplitError(f"precision must be >= 0, got {precision}")


def _group_sums(items: pd.DataFrame, *, columns: list[str]) -> list[tuple[tuple[str, ...], Decimal, int]]:
    """(currency, period, *values), exact cost and line count of each group, sorted by key."""
    if items.empty:
        return []
    keys = [_values(items["currency"]), _values(items["period"]), *(_values(items[column]) for column in columns)]
    grouped = items["cost"].groupby(keys, sort=True)
    with _exact_arithmetic():
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


def _exact_arithmetic() -> AbstractContextManager[decimal.Context]:
    # The default context keeps 28 significant digits: a month of costs with 11 decimals can need more.
    # With the largest precision and Inexact trapped, a sum is exact or fails loudly, never rounded.
    context = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                              traps=[decimal.Inexact, decimal.InvalidOperation])
    return decimal.localcontext(context)


def _exact_sum(amounts: Iterable[Decimal]) -> Decimal:
    with _exact_arithmetic():
        return sum(amounts, Decimal(0))


def bill_lines(bills: Sequence[BillTotals]) -> pd.DataFrame:
    """The bills' split groups as line items, each with the count of lines it sums, for `split_bill`."""
    import pandas as pd

    records = [(*key, group.exact(), group.lines) for bill in bills for key, group in bill.split_groups.items()]
    return pd.DataFrame(records, columns=["period", "currency", "sub_account", "workspace", "api_key", "cost",
                                          "line_count"], dtype=object)


def summary_lines(split: BillSplit, *, imports: Sequence[BillTotals], out: str) -> list[str]:
    """What the CLI prints: row counts, each currency's reconciliation, and the rows set aside."""
    rejected = [reject for bill in imports for reject in bill.rejected]
    lines = [f"split by {', '.join(split.columns)}: {len(split.rows)} rows written to {out}", _row_counts(imports),
             *_reconciliation_lines(split)]
    if rejected:
        lines.append(f"{len(rejected)} rejected row(s), excluded:")
        lines += [f"  {reject.message()}" for reject in rejected[:_SHOWN_LINES]]
        lines += [f"  ... and {len(rejected) - _SHOWN_LINES} more"] if len(rejected) > _SHOWN_LINES else []
    if any(bill.outside for bill in imports):
        lines += _out_of_period_lines(imports)
    return lines


def _reconciliation_lines(split: BillSplit) -> list[str]:
    row_totals = split.row_totals()
    row_counts = Counter(row.currency for row in split.rows)
    return [f"{currency}: bill {format(split.bill_totals[currency], 'f')} -> {format(rounded, 'f')} = sum of "
            f"{row_counts[currency]} rows {format(row_totals[currency], 'f')} "
            f"{'reconciled' if row_totals[currency] == rounded else 'DOES NOT RECONCILE'}"
            for currency, rounded in split.rounded_totals.items()]


def _row_counts(imports: Sequence[BillTotals]) -> str:
    total = sum(bill.input_rows for bill in imports)
    accepted = sum(bill.accepted_rows for bill in imports)
    rejected = sum(len(bill.rejected) for bill in imports)
    outside = sum(bill.out_of_period_rows for bill in imports)
    return (f"rows: {total} input = {accepted} accepted + {rejected} rejected + {outside} out of period "
            f"(excluded)")


def _out_of_period_lines(imports: Sequence[BillTotals]) -> list[str]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    with _exact_arithmetic():
        for bill in imports:
            for currency, amount in bill.out_of_period_totals().items():
                totals[currency] += amount
    amounts = ", ".join(f"{currency} {format(amount, 'f')}" for currency, amount in sorted(totals.items()))
    count = sum(bill.out_of_period_rows for bill in imports)
    shown = [(bill.source, row, period) for bill in imports for row, period in bill.outside_rows][:_SHOWN_LINES]
    lines = [f"{count} row(s) outside the period, excluded ({amounts}):"]
    lines += [f"  {source}, row {row}: period {period}" for source, row, period in shown]
    if count > _SHOWN_LINES:
        lines.append(f"  ... and {count - _SHOWN_LINES} more")
    return lines
