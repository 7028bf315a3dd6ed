"""Bill files (CSV, CSV.gz, Parquet, XLSX) read as text, chunk by chunk, each record indexed by its row number."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from openpyxl.utils.exceptions import InvalidFileException

from agent.errors import BillFormatError

CHUNK_ROWS = 200_000
# What the CSV, gzip, Parquet and XLSX libraries raise on a file they cannot read (openpyxl: KeyError for a
# zip archive that holds no workbook).
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, InvalidFileException, pa.ArrowException, KeyError)


def file_sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def read_header(path: Path, *, source: str) -> list[str]:
    """The column names of the bill, in file order."""
    try:
        return _HEADER_READERS[_kind(path)](path)
    except _READ_ERRORS as e:
        raise BillFormatError(f"cannot read the file: {e}", source=source) from e


def read_chunks(path: Path, *, columns: list[str], source: str) -> Iterator[pd.DataFrame]:
    """The bill's records as text (NaN where a cell is absent), restricted to `columns`.

    The index is the row number: spreadsheet row for CSV and XLSX (header = 1), record number for Parquet.
    Blank lines of CSV and XLSX are skipped: they are layout, not records.
    """
    try:
        yield from _CHUNK_READERS[_kind(path)](path, columns)
    except _READ_ERRORS as e:
        raise BillFormatError(f"cannot read the file: {e}", source=source) from e


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".xlsx", ".gz"):
        return suffix
    return ".csv"


def _csv_options(path: Path) -> dict[str, object]:
    # utf-8-sig: Azure exports start with a byte-order mark that would otherwise stick to the first name.
    return {
        "dtype": str,
        "keep_default_na": False,
        "na_filter": False,
        "encoding": "utf-8-sig",
        "engine": "c",
        "compression": "gzip" if path.suffix.lower() == ".gz" else None,
    }


def _csv_header(path: Path) -> list[str]:
    return [str(name) for name in pd.read_csv(path, nrows=0, **_csv_options(path)).columns]


def _csv_chunks(path: Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    # Blank lines are kept so the record count stays aligned with the file's rows, then dropped here: a record
    # whose read columns are all empty is taken for one (only the columns the import uses are parsed).
    with pd.read_csv(path, usecols=columns, chunksize=CHUNK_ROWS, skip_blank_lines=False,
                     **_csv_options(path)) as chunks:
        for chunk in chunks:
            chunk.index = chunk.index + 2
            blank = chunk.apply(lambda cells: cells.str.strip() == "").all(axis=1)
            yield chunk[~blank]


def _parquet_header(path: Path) -> list[str]:
    return list(pq.read_schema(path).names)


def _parquet_chunks(path: Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    first_row = 1
    for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS, columns=columns):
        index = pd.RangeIndex(first_row, first_row + batch.num_rows)
        yield pd.DataFrame({name: _arrow_text(batch.column(name), index) for name in columns}, index=index)
        first_row += batch.num_rows


def _arrow_text(array: pa.Array, index: pd.Index) -> pd.Series:
    """A Parquet column as exact text: Arrow prints decimals exactly and floats in their shortest form."""
    kind = array.type
    if pa.types.is_map(kind) or pa.types.is_struct(kind) or pa.types.is_list(kind):
        # Tag maps arrive as lists of (key, value) pairs; the tag lookup reads JSON objects.
        values = [None if value is None else json.dumps(dict(value) if pa.types.is_map(kind) else value, default=str)
                  for value in array.to_pylist()]
        return pd.Series(values, index=index, dtype="str")
    return pc.cast(array, pa.string()).to_pandas().astype("str").set_axis(index)


def _xlsx_header(path: Path) -> list[str]:
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        header = next(workbook.worksheets[0].iter_rows(max_row=1, values_only=True), ())
    finally:
        workbook.close()
    return [_cell_text(value) or "" for value in header]


def _xlsx_chunks(path: Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        rows = workbook.worksheets[0].iter_rows(values_only=True)
        header = [_cell_text(value) or "" for value in next(rows, ())]
        positions = [header.index(name) for name in columns]
        records: list[list[str | None]] = []
        numbers: list[int] = []
        # read_only mode yields the empty rows in between too, so counting gives the sheet's row number.
        for number, row in enumerate(rows, start=2):
            cells = [_cell_text(value) for value in row]
            if all(cell is None or not cell.strip() for cell in cells):
                continue
            records.append([cells[position] if position < len(cells) else None for position in positions])
            numbers.append(number)
            if len(records) == CHUNK_ROWS:
                yield _text_frame(records, numbers, columns)
                records, numbers = [], []
        if records:
            yield _text_frame(records, numbers, columns)
    finally:
        workbook.close()


def _cell_text(value: object) -> str | None:
    # str() of an openpyxl number is its shortest exact form: 5.64902e-05 stays 5.64902e-05.
    return None if value is None else str(value)


def _text_frame(records: list[list[str | None]], numbers: list[int], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(records, columns=columns, index=pd.Index(numbers), dtype="str")


_HEADER_READERS = {".csv": _csv_header, ".gz": _csv_header, ".parquet": _parquet_header, ".xlsx": _xlsx_header}
_CHUNK_READERS = {".csv": _csv_chunks, ".gz": _csv_chunks, ".parquet": _parquet_chunks, ".xlsx": _xlsx_chunks}
