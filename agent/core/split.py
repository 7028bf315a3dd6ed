"""Pure bill splitting by sub-account, workspace and API key: exact group sums in, rows that add up to the bill out.

No I/O and no clock here. Each currency's groups are rounded with the largest-remainder method so that they add
up to the rounded bill total of that currency (agent.bills.grouping sums the lines into groups).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from agent.core.money import exact_sum, largest_remainder, minor_unit, round_amount
from agent.errors import SplitError

# --by name -> line-item column (and output column) it groups on.
DIMENSIONS: dict[str, str] = {"subaccount": "sub_account", "workspace": "workspace", "apikey": "api_key"}
# Lines without a value for a dimension are grouped under this value.
NO_VALUE = "(none)"


class SplitRow(NamedTuple):
    """One group of bill lines: its dimension values in the requested order, and its rounded amount.

    A NamedTuple rather than a frozen dataclass: a split can have hundreds of thousands of groups."""

    period: str
    values: tuple[str, ...]
    amount: Decimal
    currency: str
    exact_amount: Decimal
    line_count: int


# The exact cost and line count of one group of bill lines, keyed by (currency, period, *dimension values).
Group = tuple[tuple[str, ...], Decimal, int]


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


def split_groups(groups: Sequence[Group], *, columns: Sequence[str], precision: int | None = None) -> BillSplit:
    """The rows of groups of bill lines, sorted by (currency, period, *values of `columns`); amounts rounded to
    `precision` decimals (default: each currency's minor unit)."""
    check_split(columns, precision)
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
        bill_totals[currency] = exact_sum(exact)
        rounded_totals[currency] = round_amount(bill_totals[currency], places)
    return BillSplit(columns=tuple(columns), rows=rows, bill_totals=bill_totals, rounded_totals=rounded_totals)


def check_split(columns: Sequence[str], precision: int | None) -> None:
    if not columns or len(set(columns)) != len(columns) or not set(columns) <= set(DIMENSIONS.values()):
        raise SplitError(f"split columns must be distinct names among {', '.join(DIMENSIONS.values())}, "
                         f"got {list(columns)}")
    if precision is not None and precision < 0:
        raise SplitError(f"precision must be >= 0, got {precision}")
