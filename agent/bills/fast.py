"""The vectorised import of well-formed rows: Arrow and numpy over a whole chunk, no Python per row.

`clean_rows` takes a chunk of bill text as Arrow columns and splits it in two: the rows whose every field
is valid (a plain decimal cost of at most 12 decimals, a currency, a tag, a date), taken here as the
numbers of their values (agent.bills.totals sums them by those numbers) with the cost as an exact decimal;
and the other rows, left as text for `agent.bills.convert`, which accepts or rejects each one with its reason.

Bills repeat a few values over millions of lines, so every column but the cost is handled as a dictionary:
convert.py's own cell functions judge each distinct value once, and the verdicts are spread over the rows
by index. A row therefore gives the same line item whichever way it goes; only the speed differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from agent.bills import convert
from agent.bills.columns import ColumnMap
from agent.bills.options import ImportOptions
from agent.bills.tags import TagReader
from agent.core.money import AMOUNT_DIGITS

# The characters str.strip() removes, so that Arrow trims a cell as Python does.
STRIP_CHARACTERS = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006" \
                   "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
DECIMALS = 12
COST_TYPE = pa.decimal128(38, DECIMALS)
# Costs taken here: plain decimals that fit COST_TYPE exactly. Others (exponents, more decimals, non-ASCII
# digits, underscores, NaN) go row by row to convert.py, which parses them as Python's Decimal does.
_PLAIN_COST = rf"^[+-]?(?:[0-9]{{1,{AMOUNT_DIGITS}}}(?:\.[0-9]{{0,{DECIMALS}}})?|\.[0-9]{{1,{DECIMALS}}})$"
# Costs taken here have at most FAST_DIGITS digits before the point, so that Arrow's sums, which wrap around
# silently past COST_TYPE's 26 digits, stay exact over SUM_ROWS lines (agent.bills.totals settles before).
FAST_DIGITS = 18
SUM_ROWS = 10**(38 - DECIMALS - FAST_DIGITS - 1)
TEXT_FIELDS = ("sub_account", "workspace", "api_key")
MISSING = -1
REJECTED = -1
# The distinct texts a field remembers verdicts for; a column of unique values would otherwise grow without bound.
KNOWN_TEXTS = 100_000


@dataclass(frozen=True)
class Encoded:
    """A column as dictionary codes: `codes[i]` indexes `values`, MISSING where the cell is absent."""

    codes: np.ndarray
    values: list[str | None]

    def verdicts(self, per_value: list[bool], *, missing: bool) -> np.ndarray:
        """Each row's verdict, given one per distinct value and one for absent cells."""
        return np.append(np.asarray(per_value, dtype=bool), missing)[self.codes]


@dataclass(frozen=True)
class Lines:
    """Clean rows of a chunk as the judges' value numbers (`numbers[field]`, see `Numbering`), with each row's
    exact cost as the two little-endian 64-bit words of its COST_TYPE (`cost`, one pair per row), the decimals
    its cost was written with, and its row number."""

    numbers: dict[str, np.ndarray]
    cost: np.ndarray
    places: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class Numbering:
    """What the value numbers of one chunk's `Lines` stand for: each field's count of numbers (`sizes`) and its
    text for a number (`text`). `generation` changes when a judge starts its numbers afresh."""

    sizes: dict[str, int]
    generation: tuple[int, ...]
    text: Callable[[str, int], str | None]


@dataclass(frozen=True)
class CleanRows:
    """A chunk split: the clean rows (in and out of the period), and the other rows' text (None if none)."""

    inside: Lines
    outside: Lines
    numbering: Numbering
    others: pd.DataFrame | None


@dataclass(frozen=True)
class Chunk:
    """Records as read, with their row numbers, costs parsed and other columns encoded (see `prepared`)."""

    table: pa.Table
    rows: np.ndarray
    cost: pa.Array
    places: pa.Array
    plain_cost: np.ndarray
    encoded: dict[str, Encoded]


def prepared(chunks: Iterable[tuple[pa.Table, np.ndarray]], *, columns: ColumnMap) -> Iterator[Chunk]:
    """Each chunk's Arrow work that needs no verdict: the exact costs, and the judged columns as dictionary
    codes. Run on the reading thread (agent.bills.reader.prefetched), it overlaps the judging of the previous
    chunk."""
    judged = [columns.currency, columns.tag, columns.billing_period, columns.charge_period, columns.charge_kind,
              *(getattr(columns, name) for name in TEXT_FIELDS)]
    for table, rows in chunks:
        cost, places, plain_cost = _costs(table[columns.cost])
        yield Chunk(table=table, rows=rows, cost=cost, places=places, plain_cost=plain_cost,
                    encoded={name: encode(table[name]) for name in judged if name is not None})


def encode(column: pa.ChunkedArray | pa.Array) -> Encoded:
    array = column.unify_dictionaries().combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array)
    values = pc.cast(array.dictionary, pa.string()).to_pylist()
    return Encoded(codes=array.indices.fill_null(MISSING).to_numpy(zero_copy_only=False).astype(np.int64),
                   values=values)


def trimmed(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Text trimmed as str.strip() trims it: Arrow's fast ASCII trim unless a cell holds a control or
    non-ASCII character, which Python may also count as white space."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.type != pa.string():
        array = pc.cast(array, pa.string())
    raw = _text_bytes(array)
    if ((raw < 0x20) | (raw >= 0x80)).any():
        return pc.utf8_trim(array, characters=STRIP_CHARACTERS)
    if not (raw == 0x20).any():
        return array
    return pc.ascii_trim_whitespace(array)


def _text_bytes(array: pa.Array) -> np.ndarray:
    """The bytes of a string array's values (of its whole buffer: a slice may show more)."""
    data = array.buffers()[2]
    return np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, dtype=np.uint8)


def blank_records(table: pa.Table, *, cost: str) -> np.ndarray:
    """Records whose cells are all empty or white space: blank lines, or lines of bare separators."""
    blank = np.asarray(pc.equal(pc.utf8_length(trimmed(table[cost])), 0).fill_null(True))
    if not blank.any():
        return blank
    for name in table.column_names:
        if name != cost:
            column = encode(table[name])
            blank &= column.verdicts([value.strip() == "" for value in column.values], missing=True)
    return blank


class Judges:
    """convert.py's verdicts on the distinct values of each field, kept across the chunks of one file, so
    that a value repeated over millions of lines is judged once."""

    def __init__(self, *, columns: ColumnMap, options: ImportOptions, tag_reader: TagReader):
        self.columns = columns
        self.options = options
        self.currency = _Judge(columns.currency, lambda frame: convert.currency_cells(
            frame, columns=columns, default=options.default_currency))
        self.tag = _Judge(columns.tag, lambda frame: convert.tag_cells(frame, columns=columns, tag_reader=tag_reader))
        self.billing = _Judge(columns.billing_period, lambda frame: convert.month_cells(frame, columns.billing_period))
        self.charge = _Judge(columns.charge_period, lambda frame: convert.month_cells(frame, columns.charge_period))
        self.day = _Judge(columns.charge_period, lambda frame: (convert.day_cells(frame, columns.charge_period), None))
        self.kind = _Judge(columns.charge_kind, lambda frame: (convert.kind_cells(frame, columns=columns), None))
        self.text = {name: _Judge(getattr(columns, name), lambda frame, name=name: (
            convert.text_cells(frame, getattr(columns, name)), None)) for name in TEXT_FIELDS}

    def numbering(self) -> Numbering:
        """What the numbers of `_Fields` stand for now: a period number indexes the billing values, then the
        charge values, then the requested period; a dimension of the tag group (`tag_sub_account`, ...) is the
        field's number, or one past its last for a tagged line. The values lists only grow until a judge starts
        afresh with new ones, so the numbering stays true for the numbers it was taken with."""
        billing, charge = self.billing.values, self.charge.values
        bills, charges = len(billing), len(charge)
        plain = {"currency": self.currency.values, "tag": self.tag.values, "day": self.day.values,
                 "kind": self.kind.values, **{name: self.text[name].values for name in TEXT_FIELDS}}
        sizes = {"period": bills + charges + 1, **{field: max(len(values), 1) for field, values in plain.items()},
                 **{f"tag_{name}": len(self.text[name].values) + 1 for name in TEXT_FIELDS}}

        def text(field: str, number: int) -> str | None:
            if field == "period":
                return billing[number] if number < bills else charge[number - bills] if number < bills + charges \
                    else self.options.period
            if field in plain:
                return plain[field][number]
            values = plain[field.removeprefix("tag_")]
            return values[number] if number < sizes[field] - 1 else None

        judges = [self.currency, self.tag, self.billing, self.charge, self.day, self.kind, *self.text.values()]
        return Numbering(sizes=sizes, generation=tuple(judge.generation for judge in judges), text=text)


def clean_rows(chunk: Chunk, *, judges: Judges) -> CleanRows:
    """Split one chunk."""
    fields = _Fields(chunk, judges=judges)
    clean = chunk.plain_cost & fields.clean
    lines = Lines(numbers=fields.numbers, cost=_cost_words(chunk.cost), places=np.asarray(chunk.places),
                  rows=chunk.rows)
    unclean = ~clean
    return CleanRows(inside=_taken(lines, clean & ~fields.outside), outside=_taken(lines, clean & fields.outside),
                     numbering=judges.numbering(),
                     others=_text_frame(chunk.table.filter(unclean), chunk.rows[unclean]) if unclean.any() else None)


class _Judge:
    """One field's verdicts: per distinct text, the number of the value convert.py gives it (several texts
    can give one value: ' USD' and 'usd'), or REJECTED. Bounded: past KNOWN_TEXTS texts it starts afresh."""

    def __init__(self, name: str | None, judge: Callable[[pd.DataFrame], tuple[pd.Series, object]]):
        self._name = name
        self._judge = judge
        self.generation = 0
        self._start()

    def _start(self) -> None:
        self.generation += 1
        self.values: list[str | None] = []
        self._numbers: dict[str | None, int] = {}
        self._known: dict[str, int] = {}
        # An absent cell is judged as the value of an absent column.
        self.absent = self._number(pd.Series([None], dtype="str"))[0]

    def numbers(self, encoded: Encoded | None, length: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Each row's value number (0 where rejected), and which rows convert.py would reject for this field (None
        if none); `encoded` is None for a column the bill does not have."""
        if encoded is None:
            per_text = np.array([self.absent], dtype=np.int64)
            codes = np.zeros(length, dtype=np.int64)
        else:
            if len(self._known) > KNOWN_TEXTS:
                self._start()
            new = [text for text in encoded.values if text not in self._known]
            if new:
                self._known.update(zip(new, self._number(pd.Series(new, dtype="str"))))
            per_text = np.array([*(self._known[text] for text in encoded.values), self.absent], dtype=np.int64)
            codes = encoded.codes
        refused = per_text == REJECTED
        if not refused.any():
            return per_text[codes], None
        return np.where(refused, 0, per_text)[codes], refused[codes]

    def _number(self, texts: pd.Series) -> list[int]:
        frame = pd.DataFrame({self._name: texts}) if self._name else pd.DataFrame(index=pd.RangeIndex(len(texts)))
        values, check = self._judge(frame)
        rejected = ([isinstance(reason, str) for reason in check.reasons] if check is not None
                    else [False] * len(texts))
        numbers = []
        for value, refused in zip(values, rejected):
            value = value if isinstance(value, str) else None
            if refused:
                numbers.append(REJECTED)
                continue
            if value not in self._numbers:
                self._numbers[value] = len(self.values)
                self.values.append(value)
            numbers.append(self._numbers[value])
        return numbers


class _Fields:
    """The chunk's fields other than the cost, as judged by `Judges`: each row's value numbers (`numbers`, as
    `Judges.numbering` tells them), whether it is clean (no field rejected, a period known) and whether its period
    is other than the requested one (`outside`)."""

    def __init__(self, chunk: Chunk, *, judges: Judges):
        self._chunk = chunk
        self.clean = np.ones(len(chunk.rows), dtype=bool)
        self.numbers: dict[str, np.ndarray] = {}
        columns = judges.columns
        self._field("currency", columns.currency, judges.currency)
        self._field("tag", columns.tag, judges.tag)
        billing = self._field("billing", columns.billing_period, judges.billing)
        charge = self._field("charge", columns.charge_period, judges.charge)
        self._field("day", columns.charge_period, judges.day)
        self._field("kind", columns.charge_kind, judges.kind)
        for name in TEXT_FIELDS:
            self._field(name, getattr(columns, name), judges.text[name])
        self._period(billing, charge, judges=judges)
        untagged = _per_value([value is None for value in judges.tag.values], self.numbers["tag"])
        for name in TEXT_FIELDS:
            self.numbers[f"tag_{name}"] = np.where(untagged, self.numbers[name], len(judges.text[name].values))

    def _field(self, field: str, name: str | None, judge: _Judge) -> np.ndarray:
        """The field's value numbers; rows whose value convert.py would reject are marked unclean (number 0)."""
        numbers, rejected = judge.numbers(self._chunk.encoded.get(name), len(self._chunk.rows))
        if rejected is not None:
            self.clean &= ~rejected
        if field not in ("billing", "charge"):
            self.numbers[field] = numbers
        return numbers

    def _period(self, billing: np.ndarray, charge: np.ndarray, *, judges: Judges) -> None:
        """The period is the billing month, else the charge month, else the requested period (convert.py's
        order); a row without any is unclean."""
        period, bills, charges = judges.options.period, judges.billing.values, judges.charge.values
        if bills and None not in bills:
            # Every row has its billing month (a rejected one is unclean anyway).
            self.numbers["period"] = billing
            others = [value != period for value in bills] if period is not None else []
            self.outside = _per_value(others, billing) if any(others) else np.zeros(len(billing), dtype=bool)
            return
        billed = _per_value([value is not None for value in bills], billing)
        charged = _per_value([value is not None for value in charges], charge)
        self.numbers["period"] = np.where(billed, billing, np.where(charged, len(bills) + charge,
                                                                     len(bills) + len(charges)))
        if period is None:
            self.clean &= billed | charged
            self.outside = np.zeros(len(billing), dtype=bool)
            return
        other_billed = _per_value([value not in (None, period) for value in bills], billing)
        other_charged = _per_value([value not in (None, period) for value in charges], charge)
        self.outside = other_billed | (~billed & other_charged)


def _per_value(verdicts: list[bool], numbers: np.ndarray) -> np.ndarray:
    """Each row's verdict from one per value number (False past them, for the 0 of a rejected row)."""
    return np.append(np.asarray(verdicts, dtype=bool), False)[numbers]


def _taken(lines: Lines, rows: np.ndarray) -> Lines:
    """The lines of the rows selected."""
    if rows.all():
        return lines
    return Lines(numbers={field: numbers[rows] for field, numbers in lines.numbers.items()}, cost=lines.cost[rows],
                 places=lines.places[rows], rows=lines.rows[rows])


def _cost_words(cost: pa.Array) -> np.ndarray:
    """A COST_TYPE array's values as pairs of little-endian 64-bit words, low word first (anything where null)."""
    data = cost.buffers()[1]
    if data is None:
        return np.zeros((len(cost), 2), dtype="<u8")
    words = np.frombuffer(data, dtype="<u8")
    return words[2 * cost.offset:2 * (cost.offset + len(cost))].reshape(-1, 2)


def _costs(column: pa.ChunkedArray) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Exact costs, their written decimals, and which rows' costs are plain decimals."""
    if pa.types.is_decimal(column.type):
        try:
            return _decimal_costs(column)
        except pa.ArrowInvalid:
            # Past COST_TYPE's digits before the point: taken as text, where such a cost goes to convert.py.
            column = pc.cast(column, pa.string())
    text = trimmed(column)
    # An exponent changes the decimals a cost is written with: 5.6E-05 has 6, not 4.
    exponents = ((_text_bytes(text) | 0x20) == ord("e")).any()
    present = pc.and_(pc.greater(pc.utf8_length(text), 0), pc.not_equal(text, "NULL"))
    text = pc.if_else(present, text, pa.scalar(None, pa.string()))
    plain = pc.invert(pc.match_substring(text, "e", ignore_case=True)) if exponents else pa.scalar(True)
    dot = pc.find_substring(text, ".")
    places = pc.if_else(pc.greater_equal(dot, 0), pc.subtract(pc.subtract(pc.utf8_length(text), dot), 1), 0)
    try:
        cost = pc.cast(text, COST_TYPE)
        # The cast also takes more decimals when the extra ones are zeros (1.000...0 with 30 of them), which
        # parse_amount may refuse: held to DECIMALS, as the pattern below holds them, the verdict does not
        # depend on whether another cost in the chunk made the cast fail.
        clean = pc.and_(pc.and_(pc.is_valid(cost), plain), pc.less_equal(places, DECIMALS))
    except pa.ArrowInvalid:
        clean = pc.match_substring_regex(text, _PLAIN_COST)
        cost = pc.cast(pc.if_else(clean, text, pa.scalar(None, pa.string())), COST_TYPE)
    # Larger amounts are left to parse_amount, which takes them exactly or rejects them as out of range.
    clean = pc.and_(clean, pc.less(pc.abs(cost), pa.scalar(Decimal(10) ** FAST_DIGITS, COST_TYPE)))
    return cost, pc.fill_null(places, 0).cast(pa.int32()), np.asarray(pc.fill_null(clean, False))


def _decimal_costs(column: pa.ChunkedArray) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """A Parquet decimal cost (agent.bills.reader.is_exact_decimal), taken as its text would be: written with as
    many decimals as its scale; with a scale over 6, a cost below 10**-6 in magnitude (0 included) is printed in
    scientific notation (0E-12, 1.5E-7), so it goes to convert.py."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    cost = pc.cast(array, COST_TYPE)
    size = pc.abs(cost)
    clean = pc.and_(pc.is_valid(cost), pc.less(size, pa.scalar(Decimal(10) ** FAST_DIGITS, COST_TYPE)))
    if array.type.scale > 6:
        clean = pc.and_(clean, pc.greater_equal(size, pa.scalar(Decimal("0.000001"), COST_TYPE)))
    places = pa.array(np.full(len(array), array.type.scale, dtype=np.int32))
    return cost, places, np.asarray(pc.fill_null(clean, False))


def _text_frame(chunk: pa.Table, rows: np.ndarray) -> pd.DataFrame:
    """Rows as convert.convert_chunk reads them: text columns indexed by row number."""
    frame = pd.DataFrame({name: pd.Series(pc.cast(chunk[name], pa.string()).to_pylist(), dtype="str")
                          for name in chunk.column_names})
    frame.index = pd.Index(rows)
    return frame
