"""A bill reduced to exact sums per group of lines, in memory that grows with the number of groups, not lines.

Allocation and the split views only need, per group of lines, the exact total, the line count and which
rows are behind it. `BillTotals` keeps exactly that, fed chunk by chunk, so a bill of ten million lines
is read in the memory of one chunk plus its groups:

- tag groups: (period, currency, tag value, sub-account, workspace, API key), the last three kept only for
  untagged lines, whose attribution rule depends on them; a tagged line's tag decides on its own;
- split groups: (period, currency, sub-account, workspace, API key), for the split views;
- day groups: (period, currency, tag value, charge day, charge kind), for the forecast;
- lines outside the requested period: (period, currency), with their first rows as a sample.

Sums are exact: Decimal in a context wide enough that no addition rounds. A total keeps the number of
decimals of its most precise line, as a plain sum of the lines' Decimals would.
"""

from __future__ import annotations

import decimal
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from agent.bills.fast import DECIMALS, SUM_ROWS, CleanRows, Lines, Numbering
from agent.core.model import CHARGE_KINDS, RejectedRow

# The rows kept per group to show where its cost came from; a group of contiguous rows is shown whole.
ROW_SAMPLE = 100

TagKey = tuple[str, str, str | None, str | None, str | None, str | None]
SplitKey = tuple[str, str, str | None, str | None, str | None]
OutsideKey = tuple[str, str]
DayKey = tuple[str, str, str | None, str | None, str]

_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                         traps=[decimal.Inexact, decimal.InvalidOperation])
_TAG_COLUMNS = ["period", "currency", "tag", "tag_sub_account", "tag_workspace", "tag_api_key"]
_SPLIT_COLUMNS = ["period", "currency", "sub_account", "workspace", "api_key"]
_DAY_COLUMNS = ["period", "currency", "tag", "day", "kind"]


@dataclass(slots=True)
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
        return self.amount.quantize(_quantum(self.places), context=_EXACT)


@functools.cache
def _quantum(places: int) -> Decimal:
    return Decimal(1).scaleb(-places)


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
    # The header's column the costs come from: the cost basis.
    cost_column: str = ""
    input_rows: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    tag_groups: dict[TagKey, GroupTotal] = field(default_factory=dict)
    tag_rows: dict[TagKey, RowSample] = field(default_factory=dict)
    split_groups: dict[SplitKey, GroupTotal] = field(default_factory=dict)
    day_groups: dict[DayKey, GroupTotal] = field(default_factory=dict)
    outside: dict[OutsideKey, GroupTotal] = field(default_factory=dict)
    # The first out-of-period lines: (row, period).
    outside_rows: list[tuple[int, str]] = field(default_factory=list)
    _fast_tags: _Sums = field(default_factory=lambda: _Sums(_TAG_COLUMNS, sample=True), repr=False)
    _fast_splits: _Sums = field(default_factory=lambda: _Sums(_SPLIT_COLUMNS), repr=False)
    _fast_days: _Sums = field(default_factory=lambda: _Sums(_DAY_COLUMNS), repr=False)
    _fast_outside: _Sums = field(default_factory=lambda: _Sums(["period", "currency"]), repr=False)
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
            day_key = tuple(getattr(record, name) for name in _DAY_COLUMNS)
            self.day_groups.setdefault(day_key, GroupTotal()).add(record.cost, 1, places)
        for period, currency, cost in zip(outside["period"], outside["currency"], outside["cost"]):
            self.outside.setdefault((period, currency), GroupTotal()).add(cost, 1, _places(cost))
        self._sample_outside(zip(outside["row"].head(ROW_SAMPLE).astype(int), outside["period"].head(ROW_SAMPLE)))

    def add_group(self, key: SplitKey, *, tag: str | None, amount: Decimal, lines: int, places: int,
                  outside: bool) -> None:
        """Add lines already summed elsewhere (a query engine's group), with no rows to show for them; their charge
        days come apart (`add_day_group`)."""
        if outside:
            self.outside.setdefault(key[:2], GroupTotal()).add(amount, lines, places)
            return
        period, currency, *dimensions = key
        tag_key = (period, currency, tag, *(dimensions if tag is None else (None, None, None)))
        self.tag_groups.setdefault(tag_key, GroupTotal()).add(amount, lines, places)
        self.tag_rows.setdefault(tag_key, RowSample())
        self.split_groups.setdefault(key, GroupTotal()).add(amount, lines, places)

    def add_day_group(self, key: DayKey, *, amount: Decimal, lines: int, places: int) -> None:
        """Add the lines of one charge day and kind already summed elsewhere (a query engine's day group)."""
        self.day_groups.setdefault(key, GroupTotal()).add(amount, lines, places)

    def add_lines(self, clean: CleanRows) -> None:
        """Add a chunk's clean rows (agent.bills.fast), summed as integers; settled every SUM_ROWS lines so that
        no sum wraps around. Call `settle` before reading the groups."""
        inside, outside = clean.inside, clean.outside
        if self._unsettled_rows + len(inside) + len(outside) > SUM_ROWS:
            self.settle()
        self._unsettled_rows += len(inside) + len(outside)
        self._fast_tags.add(inside, clean.numbering)
        self._fast_splits.add(inside, clean.numbering)
        self._fast_days.add(inside, clean.numbering)
        self._fast_outside.add(outside, clean.numbering)
        if len(outside) and len(self.outside_rows) < ROW_SAMPLE:
            periods = [clean.numbering.text("period", number) for number in outside.numbers["period"][:ROW_SAMPLE]]
            self._sample_outside(zip(outside.rows[:ROW_SAMPLE].tolist(), periods))

    def settle(self) -> None:
        """Fold the integer sums into the groups."""
        for key, amount, lines, places, low, high, first in self._fast_tags.groups():
            self.tag_groups.setdefault(key, GroupTotal()).add(amount, lines, places)
            self.tag_rows.setdefault(key, RowSample()).add(first, low=low, high=high, count=lines)
        for key, amount, lines, places, *_ in self._fast_splits.groups():
            self.split_groups.setdefault(key, GroupTotal()).add(amount, lines, places)
        for key, amount, lines, places, *_ in self._fast_days.groups():
            self.day_groups.setdefault(key, GroupTotal()).add(amount, lines, places)
        for key, amount, lines, places, *_ in self._fast_outside.groups():
            self.outside.setdefault(key, GroupTotal()).add(amount, lines, places)
        self._fast_tags, self._fast_splits, self._fast_days, self._fast_outside = (
            _Sums(_TAG_COLUMNS, sample=True), _Sums(_SPLIT_COLUMNS), _Sums(_DAY_COLUMNS), _Sums(["period", "currency"]))
        self._unsettled_rows = 0

    def _sample_outside(self, rows: Iterable[tuple[int, str]]) -> None:
        self.outside_rows = sorted([*self.outside_rows, *rows])[:ROW_SAMPLE]


class _Sums:
    """Exact sums of clean lines (agent.bills.fast.Lines) per group of `fields`, in integer arrays indexed by group.

    A chunk's rows are grouped by their value numbers, hashed together; each distinct key of numbers gets its group
    once per numbering (`_KeyCodes`), and groups are kept by their text, so that keys whose texts read the same fall
    in one group. A cost, a 128-bit integer of 10**-DECIMALS, is summed in three int64 parts: its two low 32-bit words
    and its signed high 64-bit word, the last below 2**36 in magnitude (costs here are below 10**FAST_DIGITS):
    none wraps around over SUM_ROWS lines. With `sample`, the first ROW_SAMPLE rows of each group are kept too:
    chunks arrive in row order, and rows in order within a chunk.
    """

    def __init__(self, fields: list[str], *, sample: bool = False) -> None:
        self._fields = fields
        self._sample = sample
        self._keys: list[tuple] = []
        self._by_text: dict[tuple, int] = {}
        self._codes = _KeyCodes()
        self._parts = np.zeros((3, 0), dtype=np.int64)
        self._lines = np.zeros(0, dtype=np.int64)
        self._places = np.zeros(0, dtype=np.int64)
        self._low = np.zeros(0, dtype=np.int64)
        self._high = np.zeros(0, dtype=np.int64)
        self._samples: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, lines: Lines, numbering: Numbering) -> None:
        if not len(lines):
            return
        numbers = [lines.numbers[name] for name in self._fields]
        sizes = [numbering.sizes[name] for name in self._fields]
        local, first = _local_groups(numbers, sizes)
        codes = self._codes.encode([column[first] for column in numbers], sizes=sizes,
                                   generation=numbering.generation)
        groups = self._codes.groups(codes, lambda new: self._add_keys(new, numbering))[local]
        self._grow()
        low_words = lines.cost[:, 0]
        np.add.at(self._parts[0], groups, (low_words & 0xFFFFFFFF).view(np.int64))
        np.add.at(self._parts[1], groups, (low_words >> 32).view(np.int64))
        np.add.at(self._parts[2], groups, lines.cost[:, 1].view(np.int64))
        np.maximum.at(self._places, groups, lines.places.astype(np.int64, copy=False))
        if self._sample:
            np.minimum.at(self._low, groups, lines.rows)
            np.maximum.at(self._high, groups, lines.rows)
            self._take_samples(groups, lines.rows)
        self._lines += np.bincount(groups, minlength=len(self._lines))

    def groups(self) -> Iterator[tuple[tuple, Decimal, int, int, int, int, list[int]]]:
        """Each group's key, exact total, lines, most decimals, lowest and highest row, and first rows (those
        two and the rows only if sampled)."""
        first = self._first_rows()
        parts = self._parts.tolist()
        for group, key in enumerate(self._keys):
            value = parts[0][group] + (parts[1][group] << 32) + (parts[2][group] << 64)
            yield (key, Decimal(value).scaleb(-DECIMALS, _EXACT), int(self._lines[group]), int(self._places[group]),
                   int(self._low[group]), int(self._high[group]), first.get(group, []))

    def _add_keys(self, keys: list[tuple], numbering: Numbering) -> list[int]:
        """The groups of keys of value numbers not met in this numbering yet. Each field's text is looked up once per
        value number: tens of thousands of groups (a tag per day) combine a few values of each field."""
        columns = []
        for name, numbers in zip(self._fields, zip(*keys)):
            text_of = {number: numbering.text(name, number) for number in set(numbers)}
            columns.append([text_of[number] for number in numbers])
        groups = []
        for text in zip(*columns):
            group = self._by_text.setdefault(text, len(self._keys))
            if group == len(self._keys):
                self._keys.append(text)
            groups.append(group)
        return groups

    def _grow(self) -> None:
        """Room in the arrays for every group."""
        more = len(self._keys) - len(self._lines)
        if more <= 0:
            return
        more = max(more, len(self._lines))
        self._parts = np.concatenate([self._parts, np.zeros((3, more), dtype=np.int64)], axis=1)
        self._lines = np.concatenate([self._lines, np.zeros(more, dtype=np.int64)])
        self._places = np.concatenate([self._places, np.zeros(more, dtype=np.int64)])
        self._low = np.concatenate([self._low, np.full(more, np.iinfo(np.int64).max)])
        self._high = np.concatenate([self._high, np.full(more, -1)])

    def _take_samples(self, groups: np.ndarray, rows: np.ndarray) -> None:
        """Keep the rows of the chunk that are among the first ROW_SAMPLE of their group."""
        seen = self._lines[groups]
        wanted = seen < ROW_SAMPLE
        if not wanted.any():
            return
        groups, rows, seen = groups[wanted], rows[wanted], seen[wanted]
        order = np.argsort(groups, kind="stable")
        groups, rows, seen = groups[order], rows[order], seen[order]
        starts = np.flatnonzero(np.diff(groups, prepend=-1))
        rank = np.arange(len(groups)) - np.repeat(starts, np.diff(starts, append=len(groups)))
        kept = rank + seen < ROW_SAMPLE
        self._samples.append((groups[kept], rows[kept]))

    def _first_rows(self) -> dict[int, list[int]]:
        if not self._samples:
            return {}
        groups = np.concatenate([groups for groups, _ in self._samples])
        rows = np.concatenate([rows for _, rows in self._samples])
        order = np.argsort(groups, kind="stable")
        groups, rows = groups[order], rows[order]
        starts = np.flatnonzero(np.diff(groups, prepend=-1))
        return {int(groups[start]): part.tolist() for start, part in zip(starts, np.split(rows, starts[1:]))}


class _KeyCodes:
    """The group of each key of value numbers met in one numbering, found for a chunk's keys at once: a key is coded
    as one integer, its numbers side by side in fixed bit fields, and the codes met are kept sorted beside their
    groups. The fields are sized when the numbering starts, with room to grow; a number outgrowing its field starts
    the codes afresh (the groups stay). Codes of more than 62 bits are Python integers: slower, as exact."""

    def __init__(self) -> None:
        self._generation: tuple[int, ...] | None = None
        self._bits: list[int] = []
        self._codes = np.zeros(0, dtype=np.int64)
        self._groups = np.zeros(0, dtype=np.int64)

    def encode(self, numbers: list[np.ndarray], *, sizes: list[int], generation: tuple[int, ...]) -> np.ndarray:
        """Each key's code; `numbers` holds one array per field, `sizes` the count of numbers of each field."""
        if generation != self._generation or any(size > 1 << bits for size, bits in zip(sizes, self._bits)):
            self._generation = generation
            self._bits = [size.bit_length() + 1 for size in sizes]
            wide = sum(self._bits) > 62
            self._codes = np.zeros(0, dtype=object if wide else np.int64)
            self._groups = np.zeros(0, dtype=np.int64)
        code = np.zeros(len(numbers[0]), dtype=self._codes.dtype)
        for column, bits in zip(numbers, self._bits):
            code = (code << bits) | column.astype(self._codes.dtype)
        return code

    def groups(self, codes: np.ndarray, add: Callable[[list[tuple]], list[int]]) -> np.ndarray:
        """The group of each of the distinct `codes`; `add` gives the groups of keys met for the first time (as
        tuples of value numbers)."""
        found = np.zeros(len(codes), dtype=bool)
        at = np.searchsorted(self._codes, codes)
        if len(self._codes):
            at = np.minimum(at, len(self._codes) - 1)
            found = self._codes[at] == codes
        groups = np.zeros(len(codes), dtype=np.int64)
        groups[found] = self._groups[at[found]]
        if not found.all():
            new = codes[~found]
            added = np.array(add(self._decoded(new)), dtype=np.int64)
            groups[~found] = added
            codes_met = np.concatenate([self._codes, new])
            order = np.argsort(codes_met, kind="stable")
            self._codes, self._groups = codes_met[order], np.concatenate([self._groups, added])[order]
        return groups

    def _decoded(self, codes: np.ndarray) -> list[tuple]:
        fields = []
        for bits in reversed(self._bits):
            fields.append((codes & ((1 << bits) - 1)).tolist())
            codes = codes >> bits
        return list(zip(*reversed(fields)))


def _local_groups(numbers: list[np.ndarray], sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's group among the distinct keys of the chunk (numbered from 0), and the first row of each group.
    The numbers, each below its size, are combined into one integer per row, renumbered where the product of
    sizes would overflow."""
    code = np.zeros(len(numbers[0]), dtype=np.int64)
    bound = 1
    for column, size in zip(numbers, sizes):
        if bound * size >= 2**62:
            code, bound = _renumbered(code)
        code = code * size + column
        bound *= size
    local, count = _renumbered(code)
    first = np.full(count, len(code), dtype=np.int64)
    np.minimum.at(first, local, np.arange(len(code)))
    return local, first


def _renumbered(code: np.ndarray) -> tuple[np.ndarray, int]:
    """The integers as their distinct values' numbers (from 0), and how many there are."""
    encoded = pc.dictionary_encode(pa.array(code))
    return encoded.indices.to_numpy().astype(np.int64), len(encoded.dictionary)


def _with_tag_dimensions(items: pd.DataFrame) -> pd.DataFrame:
    """The items, missing text as None (frames built by hand may hold NaN), a missing kind as usage, with the tag
    group's dimensions."""
    frame = items.copy()
    for name in ("period", "currency", "tag", "sub_account", "workspace", "api_key", "day"):
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    frame["kind"] = frame["kind"].astype(object).where(frame["kind"].notna(), CHARGE_KINDS[0])
    untagged = frame["tag"].isna()
    for name in ("sub_account", "workspace", "api_key"):
        frame[f"tag_{name}"] = frame[name].where(untagged, None)
    return frame


def _places(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0
