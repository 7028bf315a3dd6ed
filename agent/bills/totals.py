"""A bill reduced to exact sums per group of lines, in memory that grows with the number of groups, not lines.

Allocation and the split views only need, per group of lines, the exact total, the line count and which
rows are behind it. `BillTotals` keeps exactly that, fed chunk by chunk, so a bill of ten million lines
is read in the memory of one chunk plus its groups:

- tag groups: (period, currency, tag value, sub-account, workspace, API key), the last three kept only for
  untagged lines, whose attribution rule depends on them; a tagged line's tag decides on its own;
- split groups: (period, currency, sub-account, workspace, API key), for the split views;
- lines outside the requested period: (period, currency), with their first rows as a sample.

Sums are exact: Decimal in a context wide enough that no addition rounds. A total keeps the number of
decimals of its most precise line, as a plain sum of the lines' Decimals would.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from agent.lineitems import RejectedRow

# The rows kept per group to show where its cost came from; a group of contiguous rows is shown whole.
ROW_SAMPLE = 100

TagKey = tuple[str, str, str | None, str | None, str | None, str | None]
SplitKey = tuple[str, str, str | None, str | None, str | None]
OutsideKey = tuple[str, str]

_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                         traps=[decimal.Inexact, decimal.InvalidOperation])
_TAG_COLUMNS = ["period", "currency", "tag", "tag_sub_account", "tag_workspace", "tag_api_key"]
_SPLIT_COLUMNS = ["period", "currency", "sub_account", "workspace", "api_key"]


@dataclass
class GroupTotal:
    """Exact total and line count of a group; `places` is the most decimals any of its lines had."""

    amount: Decimal = Decimal(0)
    lines: int = 0
    places: int = 0

    def add(self, amount: Decimal, lines: int, places: int) -> None:
        self.amount = _EXACT.add(self.amount, amount)
        self.lines += lines
        self.places = max(self.places, places)

    def exact(self) -> Decimal:
        """The total with the decimals of its most precise line (`0.10 + 0.2` gives `0.30`)."""
        return self.amount.quantize(Decimal(1).scaleb(-self.places), context=_EXACT)


@dataclass
class RowSample:
    """Which rows of one file a group holds: the first ROW_SAMPLE of them, their span and their count."""

    first: list[int] = field(default_factory=list)
    low: int | None = None
    high: int | None = None
    count: int = 0

    def add(self, rows: Iterable[int], *, low: int, high: int, count: int) -> None:
        if len(self.first) < ROW_SAMPLE:
            self.first = sorted({*self.first, *rows})[:ROW_SAMPLE]
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)
        self.count += count

    def merge(self, other: RowSample) -> None:
        if other.count:
            self.add(other.first, low=other.low, high=other.high, count=other.count)

    def describe(self) -> str:
        """Row numbers as ranges: '2-4,7', '2-100001' for a contiguous group, '2,5,9,+1234 more' when sampled."""
        if not self.count:
            return ""
        if self.count == self.high - self.low + 1:
            return f"{self.low}-{self.high}" if self.count > 1 else str(self.low)
        shown = compress_rows(self.first)
        hidden = self.count - len(self.first)
        return f"{shown},+{hidden} more" if hidden else shown


def compress_rows(rows: Iterable[int]) -> str:
    """Row numbers as ranges: 2,3,4,7 -> '2-4,7'."""
    ranges: list[str] = []
    start = previous = None
    for row in sorted(int(r) for r in rows):
        if previous is not None and row == previous + 1:
            previous = row
            continue
        if start is not None:
            ranges.append(f"{start}-{previous}" if previous != start else f"{start}")
        start = previous = row
    if start is not None:
        ranges.append(f"{start}-{previous}" if previous != start else f"{start}")
    return ",".join(ranges)


@dataclass
class BillTotals:
    """What one bill file gave, reduced to group totals; see the module docstring."""

    source: str
    sha256: str = ""
    bill_format: str = ""
    input_rows: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    tag_groups: dict[TagKey, GroupTotal] = field(default_factory=dict)
    tag_rows: dict[TagKey, RowSample] = field(default_factory=dict)
    split_groups: dict[SplitKey, GroupTotal] = field(default_factory=dict)
    outside: dict[OutsideKey, GroupTotal] = field(default_factory=dict)
    # The first out-of-period lines: (row, period).
    outside_rows: list[tuple[int, str]] = field(default_factory=list)

    @property
    def accepted_rows(self) -> int:
        return sum(group.lines for group in self.split_groups.values())

    @property
    def out_of_period_rows(self) -> int:
        return sum(group.lines for group in self.outside.values())

    def out_of_period_totals(self) -> dict[str, Decimal]:
        totals: dict[str, GroupTotal] = {}
        for (_, currency), group in sorted(self.outside.items()):
            totals.setdefault(currency, GroupTotal()).add(group.amount, group.lines, group.places)
        return {currency: total.exact() for currency, total in totals.items()}

    def periods(self) -> set[str]:
        return {key[0] for key in self.split_groups} | {key[0] for key in self.outside}

    def add_items(self, items: pd.DataFrame, *, outside: pd.DataFrame) -> None:
        """Add canonical line items (agent.lineitems): the in-period ones and those outside the period."""
        for record in _with_tag_dimensions(items).itertuples(index=False):
            places = _places(record.cost)
            key = tuple(getattr(record, name) for name in _TAG_COLUMNS)
            self.tag_groups.setdefault(key, GroupTotal()).add(record.cost, 1, places)
            self.tag_rows.setdefault(key, RowSample()).add([record.row], low=record.row, high=record.row, count=1)
            split_key = tuple(getattr(record, name) for name in _SPLIT_COLUMNS)
            self.split_groups.setdefault(split_key, GroupTotal()).add(record.cost, 1, places)
        for period, currency, cost in zip(outside["period"], outside["currency"], outside["cost"]):
            self.outside.setdefault((period, currency), GroupTotal()).add(cost, 1, _places(cost))
        self._sample_outside(zip(outside["row"].head(ROW_SAMPLE).astype(int), outside["period"].head(ROW_SAMPLE)))

    def add_table(self, table: pa.Table, *, outside: pa.Table) -> None:
        """Add line items held as Arrow columns: `cost` a decimal, `places` its decimals, `row` its row."""
        if table.num_rows:
            self._add_tag_groups(table)
            for record in _grouped(table, _SPLIT_COLUMNS):
                key = tuple(record[name] for name in _SPLIT_COLUMNS)
                self.split_groups.setdefault(key, GroupTotal()).add(
                    record["cost_sum"], record["row_count"], record["places_max"])
        if outside.num_rows:
            for record in _grouped(outside, ["period", "currency"]):
                self.outside.setdefault((record["period"], record["currency"]), GroupTotal()).add(
                    record["cost_sum"], record["row_count"], record["places_max"])
            if len(self.outside_rows) < ROW_SAMPLE:
                head = outside.slice(0, ROW_SAMPLE)
                self._sample_outside(zip(head["row"].to_pylist(), head["period"].to_pylist()))

    def _add_tag_groups(self, table: pa.Table) -> None:
        untagged = table["tag"].is_null()
        dimensions = {f"tag_{name}": pc.if_else(untagged, table[name], pa.nulls(len(table), pa.string()))
                      for name in ("sub_account", "workspace", "api_key")}
        keyed = table.select(["period", "currency", "tag", "cost", "places", "row"])
        for name, column in dimensions.items():
            keyed = keyed.append_column(name, column)
        groups = keyed.group_by(_TAG_COLUMNS, use_threads=False).aggregate(
            [("cost", "sum"), ("places", "max"), ("row", "count"), ("row", "min"), ("row", "max")])
        records = groups.to_pylist()
        sampled = [key for key in (tuple(r[name] for name in _TAG_COLUMNS) for r in records)
                   if len(self.tag_rows.get(key, RowSample()).first) < ROW_SAMPLE]
        first_rows = _first_rows(keyed, sampled)
        for record in records:
            key = tuple(record[name] for name in _TAG_COLUMNS)
            self.tag_groups.setdefault(key, GroupTotal()).add(record["cost_sum"], record["row_count"],
                                                               record["places_max"])
            self.tag_rows.setdefault(key, RowSample()).add(first_rows.get(key, ()), low=record["row_min"],
                                                          high=record["row_max"], count=record["row_count"])

    def _sample_outside(self, rows: Iterable[tuple[int, str]]) -> None:
        self.outside_rows = sorted([*self.outside_rows, *rows])[:ROW_SAMPLE]


def _grouped(table: pa.Table, keys: list[str]) -> list[dict]:
    return table.group_by(keys, use_threads=False).aggregate(
        [("cost", "sum"), ("places", "max"), ("row", "count")]).to_pylist()


def _first_rows(keyed: pa.Table, keys: list[TagKey]) -> dict[TagKey, list[int]]:
    """The first ROW_SAMPLE rows of each of `keys`, the groups whose sample is not full yet."""
    if not keys:
        return {}
    wanted = set(keys)
    groups = keyed.select([*_TAG_COLUMNS, "row"]).group_by(_TAG_COLUMNS, use_threads=False).aggregate(
        [("row", "list")])
    lists = pc.list_slice(groups["row_list"], 0, ROW_SAMPLE)
    found = {}
    for position, record in enumerate(groups.select(_TAG_COLUMNS).to_pylist()):
        key = tuple(record[name] for name in _TAG_COLUMNS)
        if key in wanted:
            found[key] = lists[position].as_py()
    return found


def _with_tag_dimensions(items: pd.DataFrame) -> pd.DataFrame:
    """The items, missing text as None (frames built by hand may hold NaN), with the tag group's dimensions."""
    frame = items.copy()
    for name in ("period", "currency", "tag", "sub_account", "workspace", "api_key"):
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    untagged = frame["tag"].isna()
    for name in ("sub_account", "workspace", "api_key"):
        frame[f"tag_{name}"] = frame[name].where(untagged, None)
    return frame


def _places(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0
