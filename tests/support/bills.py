"""What the bill tests read from an import (agent.bills.total_bill, the one entry production runs): its group
totals, rejected rows and row samples as plain values; and the reference it is checked against, every row judged
by convert.py, the exact judge."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from agent.bills import ImportOptions, reader
from agent.bills.columns import resolve_columns
from agent.bills.convert import convert_chunk
from agent.bills.detect import SPECS
from agent.bills.importer import header_and_format
from agent.bills.tags import TagReader
from agent.bills.totals import BillTotals, GroupTotal


def tag_groups(bill: BillTotals) -> dict[tuple, tuple[Decimal, int, str]]:
    """(period, currency, tag, and for untagged lines sub-account, workspace, API key): total, lines, rows."""
    return {key: (group.exact(), group.lines, bill.tag_rows[key].describe()) for key, group in bill.tag_groups.items()}


def split_groups(bill: BillTotals) -> dict[tuple, tuple[Decimal, int]]:
    """(period, currency, sub-account, workspace, API key): total and lines."""
    return _sums(bill.split_groups)


def day_groups(bill: BillTotals) -> dict[tuple, tuple[Decimal, int]]:
    """(period, currency, tag, charge day, charge kind): total and lines."""
    return _sums(bill.day_groups)


def outside_groups(bill: BillTotals) -> dict[tuple, tuple[Decimal, int]]:
    """(period, currency) of the lines outside the requested period: total and lines."""
    return _sums(bill.outside)


def rejects(bill: BillTotals) -> list[tuple[int, str, str, str]]:
    """Row, column, reason and cost as written of each rejected row; each names the bill's file."""
    assert all(reject.source == bill.source for reject in bill.rejected)
    return [(reject.row, reject.column, reject.reason, reject.raw_cost) for reject in bill.rejected]


def rows_of(bill: BillTotals) -> dict[int, tuple]:
    """The tag group of each accepted row of a small bill (whose groups' rows are all sampled)."""
    found = {}
    for key, sample in bill.tag_rows.items():
        assert len(sample.first) == sample.count, "a group of more rows than are sampled"
        found |= dict.fromkeys(sample.first, key)
    return found


def tags_by_row(bill: BillTotals) -> dict[int, str | None]:
    return {row: key[2] for row, key in sorted(rows_of(bill).items())}


def total(bill: BillTotals) -> Decimal:
    """The sum of the accepted lines, whatever their currency."""
    return sum((group.amount for group in bill.split_groups.values()), Decimal(0))


def view(bill: BillTotals) -> tuple:
    """Everything an import gives, for comparing two of them: exact totals and lines of every group, the rows
    behind each tag group, the rejected rows, the row counts and the sample of rows outside the period."""
    return (tag_groups(bill), split_groups(bill), day_groups(bill), outside_groups(bill), rejects(bill),
            bill.input_rows, bill.outside_rows)


def same_lines(bill: BillTotals, *, first_row: int) -> tuple:
    """What `view` shows, rows counted from the file's first record: Parquet numbers its records from 1, CSV and
    XLSX their lines from 2 (the header is line 1)."""
    def record(row: int) -> int:
        return row - first_row

    return ({key: (amount, lines) for key, (amount, lines, _) in tag_groups(bill).items()}, split_groups(bill),
            day_groups(bill), outside_groups(bill),
            {key: ([record(row) for row in sample.first], record(sample.low), record(sample.high), sample.count)
             for key, sample in bill.tag_rows.items()},
            [(record(row), *rest) for row, *rest in rejects(bill)],
            [(record(row), period) for row, period in bill.outside_rows], bill.input_rows)


def judged_row_by_row(path: Path, options: ImportOptions) -> BillTotals:
    """The bill as total_bill must give it, with every row judged by convert.py, none by the Arrow path: read by
    reader.read_chunks (for CSV, the reader total_bill falls back on; for Parquet and XLSX, its only one)."""
    source = str(path)
    header, bill_format = header_and_format(path, options=options)
    columns = resolve_columns(header, spec=SPECS[bill_format], options=options, source=source)
    bill = BillTotals(source=source)
    tag_reader = TagReader(options.tag_key)
    for chunk in reader.read_chunks(path, columns=columns.used(), source=source, limits=options.limits):
        judged = convert_chunk(chunk, columns=columns, options=options, source=source, tag_reader=tag_reader)
        bill.add_items(judged.items, outside=judged.out_of_period)
        bill.rejected += judged.rejected
        bill.input_rows += len(chunk)
    return bill


def _sums(groups: dict[tuple, GroupTotal]) -> dict[tuple, tuple[Decimal, int]]:
    return {key: (group.exact(), group.lines) for key, group in groups.items()}
