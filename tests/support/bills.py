"""What the bill tests read from an import (agent.bills.total_bill, the one entry production runs): its group
totals, rejected rows and row samples as plain values; and the reference it is checked against, every row judged
by convert.py, the exact judge."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from agent.bills import ImportOptions, reader
from agent.bills.columns import resolve_columns
from agent.bills.convert import convert_chunk
from agent.bills.detect import SPECS
from agent.bills.importer import header_and_format
from agent.bills.tags import TagReader
from agent.bills.totals import BillTotals, GroupTotal
from agent.errors import FastReadError


def tag_groups(bill: BillTotals) -> dict[tuple, tuple[Decimal, int, str]]:
    """(period, currency, tag, and for untagged lines sub-account, workspace, API key): total, lines, rows."""
    return {key: (group.exact(), group.lines, bill.tag_rows[key].describe()) for key, group in bill.tag_groups.items()}


def split_groups(bill: BillTotals) -> dict[tuple, tuple[Decimal, int]]:
    """(period, currency, sub-account, workspace, API key): total and lines."""
    return _sums(bill.split_groups)


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
    return (tag_groups(bill), split_groups(bill), outside_groups(bill), rejects(bill), bill.input_rows,
            bill.outside_rows)


def judged_row_by_row(path: Path, options: ImportOptions) -> BillTotals:
    """The bill as total_bill must give it, with every row judged by convert.py, none by the Arrow path: read by
    reader.read_chunks (the reader total_bill falls back on for CSV; the only one for Parquet and XLSX)."""
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


def read_csv_by_the_fallback(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Make total_bill read every CSV file with its row-by-row fallback reader, as it reads a file Arrow cannot
    parse (ragged rows, invalid UTF-8); the files it read so are listed, for the test to check it happened."""
    fallen_back: list[Path] = []

    def refuse(path: Path, *_args: object, **_kwargs: object) -> None:
        fallen_back.append(path)
        raise FastReadError("refused by the test")

    monkeypatch.setattr(reader, "_arrow_csv_batches", refuse)
    return fallen_back


def _sums(groups: dict[tuple, GroupTotal]) -> dict[tuple, tuple[Decimal, int]]:
    return {key: (group.exact(), group.lines) for key, group in groups.items()}
