"""The vectorised import of well-formed rows: Arrow and numpy over a whole chunk, no Python per row.

`clean_rows` takes a chunk of bill text as Arrow columns and splits it in two: the rows whose every field
is valid (a plain decimal cost of at most 12 decimals, a currency, a tag, a date), converted here to line
items with the cost as an exact decimal; and the other rows, left as text for `agent.bills.convert`, which
accepts or rejects each one with its reason.

Bills repeat a few values over millions of lines, so every column but the cost is handled as a dictionary:
convert.py's own cell functions judge each distinct value once, and the verdicts are spread over the rows
by index. A row therefore gives the same line item whichever way it goes; only the speed differs.
"""

from __future__ import annotations

import math
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
class CleanRows:
    """A chunk split: line items of the clean rows (in and out of the period), and the other rows' text."""

    items: pa.Table
    outside: pa.Table
    others: pd.DataFrame


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
    judged = [columns.currency, columns.tag, columns.billing_period, columns.charge_period,
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
        self.text = {name: _Judge(getattr(columns, name), lambda frame, name=name: (
            convert.text_cells(frame, getattr(columns, name)), None)) for name in TEXT_FIELDS}


def clean_rows(chunk: Chunk, *, judges: Judges) -> CleanRows:
    """Split one chunk."""
    fields = _Fields(chunk, judges=judges)
    clean = chunk.plain_cost & fields.clean
    table = pa.table({
        "period": fields.period,
        "currency": fields.currency,
        "tag": fields.tag,
        **fields.text,
        "cost": chunk.cost,
        "places": chunk.places,
        "row": pa.array(chunk.rows, pa.int64()),
        **fields.group_codes(),
    })
    inside = clean & ~fields.outside
    return CleanRows(items=table.filter(inside), outside=table.filter(clean & fields.outside),
                     others=_text_frame(chunk.table.filter(~clean), chunk.rows[~clean]))


class _Judge:
    """One field's verdicts: per distinct text, the number of the value convert.py gives it (several texts
    can give one value: ' USD' and 'usd'), or REJECTED. Bounded: past KNOWN_TEXTS texts it starts afresh."""

    def __init__(self, name: str | None, judge: Callable[[pd.DataFrame], tuple[pd.Series, object]]):
        self._name = name
        self._judge = judge
        self._start()

    def _start(self) -> None:
        self.values: list[str | None] = []
        self._dictionary = pa.array([], pa.string())
        self._numbers: dict[str | None, int] = {}
        self._known: dict[str, int] = {}
        # An absent cell is judged as the value of an absent column.
        self.absent = self._number(pd.Series([None], dtype="str"))[0]

    def codes(self, encoded: Encoded | None, length: int) -> np.ndarray:
        """Each row's value number, REJECTED where convert.py would reject the row for this field; `encoded` is
        None for a column the bill does not have."""
        if encoded is None:
            return np.full(length, self.absent, dtype=np.int64)
        if len(self._known) > KNOWN_TEXTS:
            self._start()
        new = [text for text in encoded.values if text not in self._known]
        if new:
            self._known.update(zip(new, self._number(pd.Series(new, dtype="str"))))
        per_text = np.array([*(self._known[text] for text in encoded.values), self.absent], dtype=np.int64)
        return per_text[encoded.codes]

    def take(self, codes: np.ndarray) -> pa.DictionaryArray:
        """The values of value numbers, as indices into `values` (no text is copied); null where the value is
        missing or REJECTED."""
        missing = (codes == REJECTED) | (codes == self._numbers.get(None, REJECTED))
        indices = pa.array(np.where(missing, 0, codes).astype(np.int32), mask=missing)
        if len(self._dictionary) != len(self.values):
            self._dictionary = pa.array(self.values, pa.string())
        return pa.DictionaryArray.from_arrays(indices, self._dictionary)

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
    """The chunk's fields other than the cost, as judged by `Judges`.

    Each field also keeps its value numbers (`codes[name]`, with how many numbers it can take), from which
    `group_codes` numbers the chunk's groups without comparing text.
    """

    def __init__(self, chunk: Chunk, *, judges: Judges):
        self._chunk = chunk
        self.clean = np.ones(len(chunk.rows), dtype=bool)
        self.codes: dict[str, tuple[np.ndarray, int]] = {}
        columns, period = judges.columns, judges.options.period
        self.currency = self._field("currency", columns.currency, judges.currency)
        self.tag = self._field("tag", columns.tag, judges.tag)
        billing = self._field("billing", columns.billing_period, judges.billing).dictionary_decode()
        charge = self._field("charge", columns.charge_period, judges.charge).dictionary_decode()
        self.period = pc.coalesce(billing, charge, pa.scalar(period, pa.string()))
        self.clean &= np.asarray(pc.is_valid(self.period))
        self.outside = _outside(self.period, period=period)
        self.text = {name: self._field(name, getattr(columns, name), judges.text[name]) for name in TEXT_FIELDS}

    def group_codes(self) -> dict[str, np.ndarray]:
        """Per row, a number for its tag group and one for its split group (see agent.bills.totals); none when
        the numbers could overflow."""
        untagged = np.asarray(pc.is_null(self.tag))
        period = [self.codes["billing"], self.codes["charge"]]
        dimensions = [self.codes[name] for name in TEXT_FIELDS]
        tag_dimensions = [(np.where(untagged, codes, size), size + 1) for codes, size in dimensions]
        groups = {"tag_group": [*period, self.codes["currency"], self.codes["tag"], *tag_dimensions],
                  "split_group": [*period, self.codes["currency"], *dimensions]}
        return {name: code for name, parts in groups.items() if (code := _mixed_radix(parts)) is not None}

    def _field(self, field: str, name: str | None, judge: _Judge) -> pa.DictionaryArray:
        """The field's value per row; rows whose value convert.py would reject are marked unclean."""
        codes = judge.codes(self._chunk.encoded.get(name), len(self._chunk.rows))
        rejected = codes == REJECTED
        self.clean &= ~rejected
        self.codes[field] = (np.where(rejected, 0, codes), max(len(judge.values), 1))
        return judge.take(codes)


def _mixed_radix(parts: list[tuple[np.ndarray, int]]) -> np.ndarray | None:
    """One int64 per row from several codes, each below its size; None if the product of sizes overflows."""
    if math.prod(size for _, size in parts) >= 2**62:
        return None
    combined = np.zeros(len(parts[0][0]), dtype=np.int64)
    for codes, size in parts:
        combined = combined * size + codes
    return combined


def _costs(column: pa.ChunkedArray) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Exact costs, their written decimals, and which rows' costs are plain decimals."""
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


def _outside(line_period: pa.Array, *, period: str | None) -> np.ndarray:
    """Rows whose own period is another than the requested one (as convert.py decides)."""
    if period is None:
        return np.zeros(len(line_period), dtype=bool)
    return np.asarray(pc.fill_null(pc.not_equal(line_period, pa.scalar(period)), False))


def _text_frame(chunk: pa.Table, rows: np.ndarray) -> pd.DataFrame:
    """Rows as convert.convert_chunk reads them: text columns indexed by row number."""
    frame = pd.DataFrame({name: pd.Series(pc.cast(chunk[name], pa.string()).to_pylist(), dtype="str")
                          for name in chunk.column_names})
    frame.index = pd.Index(rows)
    return frame
