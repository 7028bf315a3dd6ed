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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from agent.bills.fast import SUM_ROWS
from agent.core.model import RejectedRow

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
    _fast_tags: _RunningSums = field(default_factory=lambda: _RunningSums(_TAG_COLUMNS, sample=True), repr=False)
    _fast_splits: _RunningSums = field(default_factory=lambda: _RunningSums(_SPLIT_COLUMNS), repr=False)
    _fast_outside: _RunningSums = field(default_factory=lambda: _RunningSums(["period", "currency"]), repr=False)
    _unsettled_rows: int = field(default=0, repr=False)

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
        """Add canonical line items (agent.bills.lineitems): the in-period ones and those outside the period."""
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

    def add_group(self, key: SplitKey, *, tag: str | None, amount: Decimal, lines: int, places: int,
                  outside: bool) -> None:
        """Add lines already summed elsewhere (a query engine's group), with no rows to show for them."""
        if outside:
            self.outside.setdefault(key[:2], GroupTotal()).add(amount, lines, places)
            return
        period, currency, *dimensions = key
        tag_key = (period, currency, tag, *(dimensions if tag is None else (None, None, None)))
        self.tag_groups.setdefault(tag_key, GroupTotal()).add(amount, lines, places)
        self.tag_rows.setdefault(tag_key, RowSample())
        self.split_groups.setdefault(key, GroupTotal()).add(amount, lines, places)

    def add_table(self, table: pa.Table, *, outside: pa.Table) -> None:
        """Add line items held as Arrow columns (agent.bills.fast): `cost` a decimal, `places` its decimals,
        `row` its row, and where known `tag_group` and `split_group`, integer codes of the groups in the chunk.
        Summed in Arrow, settled every SUM_ROWS lines so that no sum wraps around; call `settle` before
        reading the groups."""
        if self._unsettled_rows + table.num_rows + outside.num_rows > SUM_ROWS:
            self.settle()
        self._unsettled_rows += table.num_rows + outside.num_rows
        if table.num_rows:
            self._fast_tags.add(_with_tag_dimensions_arrow(table), codes=_column(table, "tag_group"))
            self._fast_splits.add(table, codes=_column(table, "split_group"))
        if outside.num_rows:
            self._fast_outside.add(outside, codes=None)
            if len(self.outside_rows) < ROW_SAMPLE:
                head = outside.slice(0, ROW_SAMPLE)
                self._sample_outside(zip(head["row"].to_pylist(), head["period"].to_pylist()))

    def settle(self) -> None:
        """Fold the Arrow sums into the groups."""
        for record in self._fast_tags.records():
            key = tuple(record[name] for name in _TAG_COLUMNS)
            self.tag_groups.setdefault(key, GroupTotal()).add(record["cost"], record["lines"], record["places"])
            self.tag_rows.setdefault(key, RowSample()).add(record["first"], low=record["low"], high=record["high"],
                                                          count=record["lines"])
        for record in self._fast_splits.records():
            key = tuple(record[name] for name in _SPLIT_COLUMNS)
            self.split_groups.setdefault(key, GroupTotal()).add(record["cost"], record["lines"], record["places"])
        for record in self._fast_outside.records():
            key = (record["period"], record["currency"])
            self.outside.setdefault(key, GroupTotal()).add(record["cost"], record["lines"], record["places"])
        self._fast_tags, self._fast_splits, self._fast_outside = (
            _RunningSums(_TAG_COLUMNS, sample=True), _RunningSums(_SPLIT_COLUMNS), _RunningSums(["period", "currency"]))
        self._unsettled_rows = 0

    def _sample_outside(self, rows: Iterable[tuple[int, str]]) -> None:
        self.outside_rows = sorted([*self.outside_rows, *rows])[:ROW_SAMPLE]


class _RunningSums:
    """Group sums of Arrow chunks, kept as one small Arrow table re-aggregated with each chunk.

    A chunk is first reduced by its integer group codes (cheap) when it has them, by its key columns
    otherwise. With `sample`, the first ROW_SAMPLE rows of each group are kept too: chunks arrive in row
    order, so a group's first rows are taken from the chunks that come before it has ROW_SAMPLE lines.
    """

    def __init__(self, keys: list[str], *, sample: bool = False) -> None:
        self._keys = keys
        self._sample = sample
        self._table: pa.Table | None = None
        self._lines_seen: dict[tuple, int] = {}
        self._samples: dict[tuple, list[int]] = {}

    def add(self, chunk: pa.Table, *, codes: pa.ChunkedArray | None) -> None:
        part = self._reduce(chunk, codes)
        if self._sample:
            self._take_samples(part)
            part = part.drop_columns(["first"])
        self._table = part if self._table is None else self._regroup(pa.concat_tables([self._table, part]))

    def records(self) -> list[dict]:
        """One dict per group: its keys, cost, places, lines, low and high rows, and `first` rows if sampled."""
        records = [] if self._table is None else self._table.to_pylist()
        if self._sample:
            for record in records:
                sample = self._samples.get(tuple(record[name] for name in self._keys), ())
                record["first"] = sorted(sample)[:ROW_SAMPLE]
        return records

    def _reduce(self, chunk: pa.Table, codes: pa.ChunkedArray | None) -> pa.Table:
        aggregates = [("cost", "sum"), ("places", "max"), ("row", "count"), ("row", "min"), ("row", "max")]
        if self._sample:
            aggregates.append(("row", "list"))
        if codes is None:
            chunk = pa.table({name: _decoded(chunk[name]) if name in self._keys else chunk[name]
                              for name in chunk.column_names})
            groups = chunk.group_by(self._keys, use_threads=False).aggregate(aggregates)
            keys = groups.select(self._keys)
        else:
            coded = pa.table({"code": codes, "cost": chunk["cost"], "places": chunk["places"], "row": chunk["row"],
                              "index": pa.array(np.arange(len(chunk)))})
            groups = coded.group_by("code", use_threads=False).aggregate([*aggregates, ("index", "min")])
            taken = chunk.select(self._keys).take(groups["index_min"])
            keys = {name: _decoded(taken[name]) for name in self._keys}
        columns = {"cost": groups["cost_sum"], "places": groups["places_max"], "lines": groups["row_count"],
                   "low": groups["row_min"], "high": groups["row_max"]}
        if self._sample:
            columns["first"] = pc.list_slice(groups["row_list"], 0, ROW_SAMPLE)
        return pa.table({**{name: keys[name] for name in self._keys}, **columns})

    def _take_samples(self, part: pa.Table) -> None:
        """The rows of the groups that had fewer than ROW_SAMPLE lines before this chunk. A group can have
        several entries in `part` (one per code that reads the same): their first rows are all taken."""
        keys = list(zip(*(part[name].to_pylist() for name in self._keys)))
        wanted = [position for position, key in enumerate(keys) if self._lines_seen.get(key, 0) < ROW_SAMPLE]
        for key, lines in zip(keys, part["lines"].to_pylist()):
            self._lines_seen[key] = self._lines_seen.get(key, 0) + lines
        for position, rows in zip(wanted, part["first"].take(pa.array(wanted, pa.int64())).to_pylist()):
            sample = self._samples.setdefault(keys[position], [])
            sample.extend(rows)
            if len(sample) > 4 * ROW_SAMPLE:
                sample[:] = sorted(sample)[:ROW_SAMPLE]

    def _regroup(self, table: pa.Table) -> pa.Table:
        groups = table.group_by(self._keys, use_threads=False).aggregate(
            [("cost", "sum"), ("places", "max"), ("lines", "sum"), ("low", "min"), ("high", "max")])
        return pa.table({**{name: groups[name] for name in self._keys}, "cost": groups["cost_sum"],
                         "places": groups["places_max"], "lines": groups["lines_sum"], "low": groups["low_min"],
                         "high": groups["high_max"]})


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Text columns of agent.bills.fast come as dictionaries: their plain text."""
    return column.cast(pa.string()) if pa.types.is_dictionary(column.type) else column


def _column(table: pa.Table, name: str) -> pa.ChunkedArray | None:
    return table[name] if name in table.column_names else None


def _with_tag_dimensions_arrow(table: pa.Table) -> pa.Table:
    """The chunk with the tag group's dimensions: sub-account, workspace and API key of untagged lines."""
    untagged = pc.is_null(table["tag"])
    for name in ("sub_account", "workspace", "api_key"):
        table = table.append_column(f"tag_{name}", pc.if_else(untagged, table[name], pa.scalar(None, pa.string())))
    return table


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
