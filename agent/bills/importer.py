"""Reads one bill file of any supported format into exact group totals (DESIGN section 3): the one entry of the
bill import."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

from agent.bills import reader
from agent.bills.columns import ColumnMap, resolve_columns
from agent.bills.convert import convert_chunk
from agent.bills.detect import SPECS, detect_format
from agent.bills.fast import Judges, clean_rows, prepared
from agent.bills.files import file_identity, file_sha256
from agent.bills.options import ImportOptions
from agent.bills.tags import TagReader
from agent.bills.totals import BillTotals
from agent.core.bill_formats import AUTO_DETECT, BILL_FORMAT_CHOICES
from agent.core.money import is_currency_code
from agent.core.periods import Period
from agent.errors import BillFormatError, FastReadError, PeriodError

log = logging.getLogger(__name__)


# Rows in the chunk just read, and bytes of the file read so far (None where the container does not tell).
RowsRead = Callable[[int, int | None], None]


def total_bill(path: Path, *, options: ImportOptions, on_rows: RowsRead | None = None) -> BillTotals:
    """The bill reduced to exact group totals (agent.bills.totals), read chunk by chunk in bounded memory.

    Rows that cannot be imported are listed in `rejected` and the rest of the file is still read; BillFormatError if
    the file as a whole cannot be imported. Well-formed rows are converted by Arrow compute (agent.bills.fast), the
    others row by row by agent.bills.convert, the exact judge: a row gets the same verdict either way.
    """
    source, bill_format, columns = _open(path, options)
    before = _identity(path, source=source)
    position = reader.ReadPosition(total=before[0])
    used = columns.used()
    # The resource and product columns are read as plain text: a resource ID is often unique per line.
    plain = {columns.cost, columns.resource_id, columns.service_name}
    # The file's digest is computed alongside, on a thread of its own.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bill-sha256") as hashing:
        sha256 = hashing.submit(file_sha256, path)
        try:
            batches = reader.read_batches(path, columns=used, plain=plain, source=source, limits=options.limits,
                                          position=position)
            totals = _totals(batches, columns=columns, options=options, source=source, on_rows=on_rows,
                             position=position)
        except FastReadError as e:
            log.info("%s: read again with the row-by-row CSV reader (%s)", source, e)
            chunks = ((pa.Table.from_pandas(chunk, preserve_index=False), chunk.index.to_numpy(dtype="int64"))
                      for chunk in reader.read_chunks(path, columns=used, source=source, limits=options.limits))
            totals = _totals(chunks, columns=columns, options=options, source=source, on_rows=on_rows,
                             position=reader.ReadPosition(total=before[0]))
        totals.sha256 = sha256.result()
    # Arrow's allocator keeps the pages the chunks used (tens of MiB); the next stages (another bill, the allocation,
    # the store) would otherwise add their own on top of them.
    pa.default_memory_pool().release_unused()
    if _identity(path, source=source) != before:
        raise BillFormatError("the file changed while it was read (its size, modification time or inode); it is "
                              "read again once it stops changing", source=source)
    totals.bill_format = bill_format
    totals.cost_column = columns.cost
    log.info("read %s bill %s: %d rows, %d items, %d out of period, %d rejected", bill_format, source,
             totals.input_rows, totals.accepted_rows, totals.out_of_period_rows, len(totals.rejected))
    return totals


def _totals(chunks: Iterable[tuple[pa.Table, np.ndarray]], *, columns: ColumnMap, options: ImportOptions,
            source: str, on_rows: RowsRead | None, position: reader.ReadPosition) -> BillTotals:
    tag_reader = TagReader(options.tag_key)
    totals = BillTotals(source=source)
    judges = Judges(columns=columns, options=options, tag_reader=tag_reader)
    for chunk in reader.prefetched(prepared(chunks, columns=columns)):
        split = clean_rows(chunk, judges=judges)
        totals.add_lines(split)
        if split.others is not None:
            result = convert_chunk(split.others, columns=columns, options=options, source=source,
                                   tag_reader=tag_reader)
            totals.add_items(result.items, outside=result.out_of_period)
            totals.rejected += result.rejected
        totals.input_rows += len(chunk.rows)
        if on_rows is not None:
            on_rows(len(chunk.rows), position.done())
    totals.settle()
    return totals


def _open(path: Path, options: ImportOptions) -> tuple[str, str, ColumnMap]:
    """The bill's source name, format and column map; BillFormatError if it cannot be imported at all."""
    source = str(path)
    check_options(options, source=source)
    if not path.is_file():
        raise BillFormatError("no such file", source=source)
    header, bill_format = header_and_format(path, options=options)
    return source, bill_format, resolve_columns(header, spec=SPECS[bill_format], options=options, source=source)


def header_and_format(path: Path, *, options: ImportOptions) -> tuple[list[str], str]:
    """The bill's column names and its format: the one options name, else the one its header shows."""
    source = str(path)
    header = reader.read_header(path, source=source, limits=options.limits)
    return header, format_of(header, options=options, source=source)


def format_of(header: list[str], *, options: ImportOptions, source: str) -> str:
    """The bill's format: the one options name, else the one its header shows."""
    return detect_format(header, source=source) if options.bill_format == AUTO_DETECT else options.bill_format


def _identity(path: Path, *, source: str) -> tuple[int, int, int]:
    try:
        return file_identity(path)
    except OSError as e:
        raise BillFormatError(f"cannot read the file: {e.strerror or e}", source=source) from e


def check_options(options: ImportOptions, *, source: str) -> None:
    """BillFormatError if the options name an unknown format, a period not YYYY-MM or a default currency that is
    not a currency code."""
    if options.bill_format not in BILL_FORMAT_CHOICES:
        raise BillFormatError(f"unknown bill format {options.bill_format!r}; expected {AUTO_DETECT} or one of "
                              f"{', '.join(SPECS)}", source=source)
    if options.period is not None:
        try:
            Period.parse(options.period)
        except PeriodError as e:
            raise BillFormatError(f"period {options.period!r} is not YYYY-MM", source=source) from e
    default = options.default_currency
    if default is not None and not is_currency_code(default.strip().upper()):
        raise BillFormatError(f"default currency {default!r} is not a 3-letter currency code", source=source)

