"""Bill files (CSV, CSV.gz, Parquet, XLSX) read as text, chunk by chunk, each record indexed by its row number."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import queue
import secrets
import sys
import threading
import zipfile
import zlib
from collections.abc import Callable, Collection, Generator, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from xml.etree.ElementTree import ParseError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from agent.bills.bounds import BoundedCsv, check_frame_cells, check_table_cells, check_xlsx
from agent.bills.fast import DECIMALS, blank_records
from agent.core.bill_limits import BillLimits
from agent.core.text import one_line
from agent.errors import BillFormatError, FastReadError, InvalidTextError

if TYPE_CHECKING:
    import openpyxl
    from openpyxl.worksheet._read_only import ReadOnlyWorksheet

CHUNK_ROWS = 100_000
# Bytes of CSV text Arrow parses at a time (about 10 000 lines of a typical bill). Arrow reads ahead a fixed
# number of blocks, so this bounds the memory the reader holds; blocks are gathered into chunks of CHUNK_ROWS.
CSV_BLOCK_BYTES = 1 << 20
T = TypeVar("T")
_END = object()
_DICTIONARY = pa.dictionary(pa.int32(), pa.string())
# What the CSV, gzip, Parquet and XLSX libraries raise on a file they cannot read (openpyxl: KeyError for a
# zip archive that holds no workbook, ElementTree's ParseError for malformed XML inside it; zlib's error for a
# gzip stream that is corrupt, rather than truncated); openpyxl's own exception is added by `_read_errors`.
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, pa.ArrowException, KeyError, ParseError, csv.Error,
                zlib.error)


def _read_errors() -> tuple[type[Exception], ...]:
    """_READ_ERRORS, and openpyxl's InvalidFileException once openpyxl is loaded (only XLSX bills load it, when
    they are read: it takes a tenth of a second to import)."""
    exceptions = sys.modules.get("openpyxl.utils.exceptions")
    return _READ_ERRORS if exceptions is None else (*_READ_ERRORS, exceptions.InvalidFileException)


def read_header(path: Path, *, source: str, limits: BillLimits) -> list[str]:
    """The column names of the bill, in file order."""
    try:
        return _HEADER_READERS[file_kind(path)](path, limits=limits, source=source)
    except _read_errors() as e:
        raise BillFormatError(f"cannot read the file: {e}", source=source) from e


def read_chunks(path: Path, *, columns: list[str], source: str, limits: BillLimits) -> Iterator[pd.DataFrame]:
    """The bill's records as text (NaN where a cell is absent), restricted to `columns`; BillFormatError as soon
    as the file goes past one of `limits`.

    The index is the row number: spreadsheet row for CSV and XLSX (header = 1), record number for Parquet.
    Blank lines of CSV and XLSX are skipped: they are layout, not records.
    """
    try:
        for chunk in _CHUNK_READERS[file_kind(path)](path, columns, limits=limits, source=source):
            check_frame_cells(chunk, limits=limits, source=source)
            yield chunk
    except InvalidTextError as e:
        raise BillFormatError("the text is not valid UTF-8", source=source, row=e.row, column=e.column) from e
    except _read_errors() as e:
        raise BillFormatError(f"cannot read the file: {e}", source=source) from e


@dataclass
class ReadPosition:
    """How far `read_batches` has read a bill, in bytes of the file as stored (compressed or not), for progress
    displays: exact for CSV, estimated from the rows read for Parquet, unknown (None) for XLSX."""

    total: int
    done: Callable[[], int | None] = lambda: None


def read_batches(path: Path, *, columns: list[str], plain: Collection[str], source: str, limits: BillLimits,
                 position: ReadPosition | None = None) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The bill's records as Arrow text columns (null where a cell is absent) with their row numbers, as
    `read_chunks` gives them. CSV is parsed by Arrow, a block at a time on one thread (run the batches through
    `prefetched` to read on a thread of their own); a file it cannot parse the way `read_chunks` would (invalid
    UTF-8, ragged rows, repeated column names, a quoted cell left open at the end) raises FastReadError, and the
    caller reads it again with `read_chunks`. Columns are read as dictionaries, except those in `plain` (the cost,
    and columns whose values rarely repeat); the first of `columns` must be the cost. A Parquet cost stored as a
    decimal whose text agent.bills.fast can tell from its value (`is_exact_decimal`) is kept as the decimal."""
    kind = file_kind(path)
    if kind in (".csv", ".gz"):
        for table, rows in _arrow_csv_batches(path, columns, plain=plain, limits=limits, source=source,
                                              position=position):
            check_table_cells(table, rows, limits=limits, source=source)
            yield table, rows
        return
    if kind == ".parquet":
        try:
            for table, rows in _parquet_batches(path, columns, plain=plain, limits=limits, source=source,
                                                position=position, decimal=columns[0]):
                check_table_cells(table, rows, limits=limits, source=source)
                yield table, rows
        except InvalidTextError as e:
            raise BillFormatError("the text is not valid UTF-8", source=source, row=e.row, column=e.column) from e
        except _read_errors() as e:
            raise BillFormatError(f"cannot read the file: {e}", source=source) from e
        return
    for chunk in read_chunks(path, columns=columns, source=source, limits=limits):
        yield pa.Table.from_pandas(chunk, preserve_index=False), chunk.index.to_numpy(dtype="int64")


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """The items, produced one ahead on a second thread: Arrow parses the next chunk (mostly without the GIL)
    while the caller works on this one, and at most three chunks are held, where Arrow's own multithreaded
    CSV reader would read ahead as far as memory lets it."""
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(handoff, (item, None), stop):
                    return
            _put(handoff, (_END, None), stop)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            _put(handoff, (_END, e), stop)
        finally:
            # A generator (the readers') is closed on this thread, so its files close here; a plain iterator
            # has nothing to close.
            if isinstance(items, Generator):
                items.close()

    producer = threading.Thread(target=produce, name="bill-reader", daemon=True)
    producer.start()
    try:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        producer.join()


def _put(handoff: queue.Queue, item: tuple, stop: threading.Event) -> bool:
    """Put unless the consumer has stopped; whether it was put."""
    while not stop.is_set():
        try:
            handoff.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _arrow_csv_batches(path: Path, columns: list[str], *, plain: Collection[str], limits: BillLimits,
                       source: str, position: ReadPosition | None) -> Iterator[tuple[pa.Table, np.ndarray]]:
    header = _csv_header(path, limits=limits, source=source)
    if len(set(header)) != len(header) or not set(columns) <= set(header):
        raise FastReadError("repeated or renamed column names")
    # Blank lines are kept as records, as pandas keeps them, so that row numbers stay aligned. Columns other
    # than the cost repeat a few values: they are read as dictionaries.
    types = {name: pa.string() if name in plain else _DICTIONARY for name in columns}
    options = {
        "read_options": pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
        "parse_options": pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
        "convert_options": pacsv.ConvertOptions(include_columns=columns, strings_can_be_null=False,
                                                column_types=types),
    }
    next_row = 2
    try:
        # The file is opened here, so that its position (compressed bytes, for a gzip file) tells the progress.
        raw = path.open("rb")
        if position is not None:
            # Read ahead on a thread of its own, the file may be read to its end and closed before the last
            # batches are taken.
            position.done = lambda: position.total if raw.closed else raw.tell()
        stream = BoundedCsv(pa.input_stream(raw, compression="gzip" if file_kind(path) == ".gz" else None),
                            limits=limits, source=source)
        marked = _EndMarked(stream, columns=len(header))
        with raw, stream, pacsv.open_csv(marked, **options) as reader:
            for batches in _gathered(marked.unmarked(reader, cost=columns[0]), rows=CHUNK_ROWS):
                table = pa.Table.from_batches(batches)
                rows = np.arange(next_row, next_row + len(table), dtype=np.int64)
                next_row += len(table)
                blank = blank_records(table, cost=columns[0]) & np.isin(rows, list(stream.blank_rows))
                yield table.filter(~blank), rows[~blank]
    except (pa.ArrowException, OSError, EOFError, UnicodeError) as e:
        raise FastReadError(str(e)) from e


class _EndMarked(io.RawIOBase):
    """A CSV text followed by one more record, on a line of its own, whose cells read a mark no bill can hold.

    Were the text to end inside a quoted cell, Arrow would read the rest of the file as that cell's text (the lines
    in it lost from the counts), where the row-by-row reader refuses the file: the record, swallowed, tells."""

    def __init__(self, text: io.RawIOBase, *, columns: int) -> None:
        super().__init__()
        self._text = text
        self._mark = f"end of file {secrets.token_hex(8)}"
        self._record = (",".join([self._mark] * columns) + "\n").encode()
        self._ended_line = True

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        if self._text is not None:
            size = self._text.readinto(buffer)
            if size:
                self._ended_line = buffer[size - 1] in b"\r\n"
                return size
            self._text = None
            self._record = (b"" if self._ended_line else b"\n") + self._record
        size = min(len(buffer), len(self._record))
        buffer[:size], self._record = self._record[:size], self._record[size:]
        return size

    def unmarked(self, batches: Iterator[pa.RecordBatch], *, cost: str) -> Iterator[pa.RecordBatch]:
        """The batches Arrow read, without the mark's record; FastReadError if a quoted cell swallowed it."""
        held = None
        for batch in batches:
            if batch.num_rows:
                if held is not None:
                    yield held
                held = batch
        if held is None or held.column(cost)[-1].as_py() != self._mark:
            raise FastReadError("the file ends inside a quoted cell")
        if held.num_rows > 1:
            yield held.slice(0, held.num_rows - 1)


def _gathered(batches: Iterator[pa.RecordBatch], *, rows: int) -> Iterator[list[pa.RecordBatch]]:
    """Consecutive batches gathered until they hold `rows` records."""
    gathered: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        gathered.append(batch)
        held += len(batch)
        if held >= rows:
            yield gathered
            gathered, held = [], 0
    if gathered:
        yield gathered


def _parquet_batches(path: Path, columns: list[str], *, plain: Collection[str], limits: BillLimits,
                     source: str, position: ReadPosition | None,
                     decimal: str | None = None) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The columns as text, but for the column `decimal` if it holds an exact decimal (`is_exact_decimal`)."""
    # pre_buffer=False: with it, the reader keeps every column chunk it has read until the file is closed.
    first_row = 1
    # Only text columns are read as dictionaries: Arrow refuses a nested one (CUR 2.0's resource_tags is a map).
    schema = pq.read_schema(path)
    text = [name for name in columns if name not in plain and _is_text(schema.field(name).type)]
    bill = pq.ParquetFile(path, read_dictionary=text, pre_buffer=False)
    _check_parquet_size(bill, columns, limits=limits, source=source)
    if position is not None:
        total_rows = max(bill.metadata.num_rows, 1)
        position.done = lambda: position.total * min(first_row - 1, total_rows) // total_rows
    kept = decimal if decimal is not None and is_exact_decimal(schema.field(decimal).type, limits=limits) else None
    for batch in bill.iter_batches(batch_size=CHUNK_ROWS, columns=columns):
        rows = np.arange(first_row, first_row + batch.num_rows, dtype=np.int64)
        yield pa.table({name: batch.column(name) if name == kept else
                        _arrow_strings(_utf8(batch.column(name), column=name, first_row=first_row))
                        for name in columns}), rows
        first_row += batch.num_rows


def is_exact_decimal(kind: pa.DataType, *, limits: BillLimits) -> bool:
    """Whether a Parquet column of this type can be left as decimals for agent.bills.fast, which takes the text
    Arrow would print from the value: as many decimals as the scale (none for 0), plain down to 10**-6 and in
    scientific notation below when the scale is over 6; a text never longer than a cell may be (digits, sign,
    point, and an exponent of at most `E-12`), so no cell the text would refuse is taken."""
    return pa.types.is_decimal(kind) and 0 <= kind.scale <= DECIMALS and kind.precision + 6 <= limits.max_cell_chars


def _is_text(kind: pa.DataType) -> bool:
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind))


def file_kind(path: Path) -> str:
    """The container: .csv, .gz (gzip CSV), .parquet or .xlsx."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".xlsx", ".gz"):
        return suffix
    return ".csv"


def _csv_options() -> dict[str, object]:
    # utf-8-sig: Azure exports start with a byte-order mark that would otherwise stick to the first name.
    return {
        "dtype": str,
        "keep_default_na": False,
        "na_filter": False,
        "encoding": "utf-8-sig",
        "engine": "c",
    }


def _csv_bytes(path: Path, *, limits: BillLimits, source: str) -> BoundedCsv:
    """The CSV text as bytes, decompressed, held to the limits."""
    raw = gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")
    return BoundedCsv(raw, limits=limits, source=source)


def _csv_header(path: Path, *, limits: BillLimits, source: str) -> list[str]:
    # The names as written: pandas would rename a repeated name (`cost`, `cost.1`) and hide the repetition.
    text = io.TextIOWrapper(io.BufferedReader(_csv_bytes(path, limits=limits, source=source)), encoding="utf-8-sig",
                            newline="")
    with text:
        header = next((row for row in csv.reader(text) if row), None)
    if header is None:
        raise ValueError("the file is empty: no header row")
    return header


def _csv_chunks(path: Path, columns: list[str], *, limits: BillLimits, source: str) -> Iterator[pd.DataFrame]:
    # Blank lines are kept so the record count stays aligned with the file's rows, then dropped here: a record
    # whose read columns are all empty and which holds no data in any column (BoundedCsv tells) is one.
    # index_col=False: a row with more fields than the header would otherwise turn its first column into the
    # index; the used fields are read by their position in the header, and the extra ones are ignored.
    with _csv_bytes(path, limits=limits, source=source) as text, pd.read_csv(
            text, usecols=columns, chunksize=CHUNK_ROWS, skip_blank_lines=False, index_col=False,
            **_csv_options()) as chunks:
        for chunk in chunks:
            chunk.index = chunk.index + 2
            empty = chunk.apply(lambda cells: cells.str.strip() == "").all(axis=1)
            blank = empty & chunk.index.isin(text.blank_rows)
            yield chunk[~blank]


def _parquet_header(path: Path, *, limits: BillLimits, source: str) -> list[str]:
    return list(pq.read_schema(path).names)


def _parquet_chunks(path: Path, columns: list[str], *, limits: BillLimits, source: str) -> Iterator[pd.DataFrame]:
    # The batches of `read_batches`, as frames: Parquet has one reader.
    for table, rows in _parquet_batches(path, columns, plain=columns, limits=limits, source=source, position=None):
        index = pd.Index(rows)
        yield pd.DataFrame({name: table[name].to_pandas().astype("str").set_axis(index) for name in columns},
                           index=index)


def _check_parquet_size(bill: pq.ParquetFile, columns: list[str], *, limits: BillLimits, source: str) -> None:
    """Refuse a file whose columns read would decompress past max_decompressed_bytes, as its metadata says."""
    metadata = bill.metadata
    chunks = (metadata.row_group(group).column(position) for group in range(metadata.num_row_groups)
              for position in range(metadata.num_columns))
    size = sum(chunk.total_uncompressed_size for chunk in chunks
               if any(chunk.path_in_schema == name or chunk.path_in_schema.startswith(f"{name}.") for name in columns))
    if size > limits.max_decompressed_bytes:
        raise BillFormatError("the columns read hold, once decompressed, "
                              + limits.more_than("max_decompressed_bytes", "bytes"), source=source)


def _utf8(array: pa.Array, *, column: str, first_row: int) -> pa.Array:
    """The column, checked: Parquet does not guarantee that its strings are UTF-8, and Arrow would otherwise fail
    on the first bad one far from the file, as a traceback."""
    values = array.dictionary if pa.types.is_dictionary(array.type) else array
    if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
        return array
    try:
        values.validate(full=True)
    except pa.ArrowInvalid:
        bad = {position for position, text in enumerate(values.cast(pa.large_binary()).to_pylist())
               if text is not None and not _decodes(text)}
        positions = array.indices.to_pylist() if pa.types.is_dictionary(array.type) else range(len(array))
        row = next(offset for offset, position in enumerate(positions) if position in bad)
        raise InvalidTextError(column=column, row=first_row + row) from None
    return array


def _decodes(text: bytes) -> bool:
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _arrow_strings(array: pa.Array) -> pa.Array:
    """A Parquet column as exact text: Arrow prints decimals exactly and floats in their shortest form."""
    if pa.types.is_dictionary(array.type) and pa.types.is_string(array.type.value_type):
        return array
    kind = array.type
    if pa.types.is_map(kind) or pa.types.is_struct(kind) or pa.types.is_list(kind):
        # Tag maps arrive as lists of (key, value) pairs; the tag lookup reads JSON objects.
        return pa.array([None if value is None else json.dumps(dict(value) if pa.types.is_map(kind) else value,
                                                               default=str)
                         for value in array.to_pylist()], pa.string())
    return pc.cast(array, pa.string())


def _xlsx_header(path: Path, *, limits: BillLimits, source: str) -> list[str]:
    import openpyxl

    check_xlsx(str(path), limits=limits, source=source)
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        header = next(_first_sheet(workbook).iter_rows(max_row=1, values_only=True), ())
    finally:
        workbook.close()
    return [_cell_text(value) or "" for value in header]


def _xlsx_chunks(path: Path, columns: list[str], *, limits: BillLimits, source: str) -> Iterator[pd.DataFrame]:
    has_formulas = check_xlsx(str(path), limits=limits, source=source)
    # The formulas as written are read alongside the values only when the sheet has some: it doubles the work.
    with _sheet_rows(path, data_only=True) as rows, \
            _sheet_rows(path, data_only=False) if has_formulas else nullcontext(itertools.repeat(())) as formulas:
        header = [_cell_text(value) or "" for value in next(rows, ())]
        next(formulas, ())
        positions = [header.index(name) for name in columns]
        records: list[list[str | None]] = []
        numbers: list[int] = []
        # read_only mode yields the empty rows in between too, so counting gives the sheet's row number.
        for number, (row, written) in enumerate(zip(rows, formulas), start=2):
            _check_xlsx_row(number, row, limits=limits, source=source)
            cells = [_cell_text(value) for value in row if value is not None]
            if all(not cell.strip() for cell in cells):
                continue
            _check_computed(number, row, written, positions=positions, columns=columns, source=source)
            records.append([_cell_text(row[position]) if position < len(row) else None for position in positions])
            numbers.append(number)
            if len(records) == CHUNK_ROWS:
                yield _text_frame(records, numbers, columns)
                records, numbers = [], []
        if records:
            yield _text_frame(records, numbers, columns)


@contextmanager
def _sheet_rows(path: Path, *, data_only: bool) -> Iterator[Iterator[tuple]]:
    """The first sheet's rows as values: the values the writer computed (`data_only`), or the formulas."""
    import openpyxl

    workbook = openpyxl.load_workbook(path, read_only=True, data_only=data_only)
    try:
        yield _first_sheet(workbook).iter_rows(values_only=True)
    finally:
        workbook.close()


def _check_computed(number: int, row: tuple, written: tuple, *, positions: list[int], columns: list[str],
                    source: str) -> None:
    """Refuse a used cell that holds a formula the writer did not compute (a library such as openpyxl writes
    formulas without values): there is no value to read, and taking it for an empty cell would mislead."""
    for position, name in zip(positions, columns):
        if position < len(written) and row[position] is None and written[position] is not None:
            formula = one_line(str(written[position]))[:60]
            raise BillFormatError(f"the cell holds a formula with no computed value ({formula!r}); save it again in "
                                  "a spreadsheet program, which computes and stores the values", source=source,
                                  row=number, column=name)


def _check_xlsx_row(number: int, row: tuple, *, limits: BillLimits, source: str) -> None:
    """Refuse a row past max_xlsx_rows, or one that reaches past max_xlsx_columns: the reader yields every row
    up to the last, and each row padded to its last cell, however far the file places them."""
    if number > limits.max_xlsx_rows:
        raise BillFormatError("the sheet has " + limits.more_than("max_xlsx_rows", "rows"), source=source, row=number)
    if len(row) > limits.max_xlsx_columns:
        from openpyxl.utils import get_column_letter

        raise BillFormatError("the row reaches " + limits.more_than("max_xlsx_columns", "columns"), source=source,
                              row=number, column=get_column_letter(len(row)))


def _first_sheet(workbook: openpyxl.Workbook) -> ReadOnlyWorksheet:
    """The bill's sheet, its size read from its cells: the `<dimension>` a file declares is not trusted, as a
    2 KB file claiming A1:XFD100000 would have every row padded to 16 384 empty cells."""
    sheet = workbook.worksheets[0]
    sheet.reset_dimensions()
    return sheet


def _cell_text(value: object) -> str | None:
    # str() of an openpyxl number is its shortest exact form: 5.64902e-05 stays 5.64902e-05.
    return None if value is None else str(value)


def _text_frame(records: list[list[str | None]], numbers: list[int], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(records, columns=columns, index=pd.Index(numbers), dtype="str")


_HEADER_READERS = {".csv": _csv_header, ".gz": _csv_header, ".parquet": _parquet_header, ".xlsx": _xlsx_header}
_CHUNK_READERS = {".csv": _csv_chunks, ".gz": _csv_chunks, ".parquet": _parquet_chunks, ".xlsx": _xlsx_chunks}
