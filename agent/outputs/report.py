"""Report files: the chargeback rows as CSV, JSON or Parquet, written atomically and byte-reproducibly."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from agent.core.model import ReportRow
from agent.errors import AgentError
from agent.outputs.formats import FORMATS

REPORT_COLUMNS = ("period", "company", "service", "category", "cluster", "amount", "currency")
# OWASP's CSV injection list: a cell starting with one of these is a formula to a spreadsheet. Plain numbers
# (a credit of -12.50) are not, and stay numbers.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


def render_report(rows: Sequence[ReportRow], *, report_format: str) -> bytes:
    """The report in `report_format`; amounts are plain decimal strings with the report's precision."""
    if report_format == "csv":
        return render_csv(REPORT_COLUMNS, (_fields(row) for row in rows))
    if report_format == "json":
        records = [dict(zip(REPORT_COLUMNS, _fields(row))) for row in rows]
        return (json.dumps(records, indent=2, ensure_ascii=False) + "\n").encode()
    if report_format == "parquet":
        return _parquet(rows)
    raise AgentError(f"unknown report format {report_format!r}; choose one of {', '.join(FORMATS)}")


def _fields(row: ReportRow) -> list[str]:
    return [row.period, row.company, row.service, row.category, row.cluster, format(row.amount, "f"), row.currency]


def render_csv(header: Sequence[str], records: Iterable[Sequence[object]]) -> bytes:
    """CSV for people who open it in a spreadsheet: every text cell passes through csv_safe, lines end in LF."""
    lines = _CsvLines()
    text = [lines.line([csv_safe(name) for name in header])]
    text += [lines.line([csv_safe(cell) if isinstance(cell, str) else cell for cell in record]) for record in records]
    return "".join(text).encode()


class _CsvLines:
    """Writes one record at a time with CRLF endings, so the csv module quotes a cell holding a lone CR (with
    LF endings it would not, and readers would split the row there), then ends the line with LF."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def line(self, cells: Sequence[object]) -> str:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow(cells)
        return self._buffer.getvalue()[:-2] + "\n"


def csv_safe(cell: str) -> str:
    """The cell, with a leading apostrophe when a spreadsheet would read it as a formula (OWASP)."""
    if cell.startswith(_FORMULA_STARTS) and not _PLAIN_NUMBER.match(cell):
        return "'" + cell
    return cell


def _parquet(rows: Sequence[ReportRow]) -> bytes:
    # The amount column is an exact decimal128 with the widest precision of the rows' currencies.
    import pyarrow as pa
    import pyarrow.parquet as pq

    scale = max((-row.amount.as_tuple().exponent for row in rows), default=2)
    columns = {name: [getattr(row, name) for row in rows] for name in REPORT_COLUMNS}
    schema = pa.schema([(name, pa.decimal128(38, scale) if name == "amount" else pa.string())
                        for name in REPORT_COLUMNS])
    table = pa.table(columns, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def format_for(path: Path, requested: str | None) -> str:
    """The requested format, else the one the file name suggests, else CSV."""
    if requested:
        return requested
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else "csv"


def write_atomically(path: Path, content: bytes) -> None:
    """Write via a temporary file in the same directory and rename, so readers never see a partial file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise AgentError(f"{path}: cannot write: {e.strerror or e}") from e
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as e:
        Path(temporary).unlink(missing_ok=True)
        raise AgentError(f"{path}: cannot write: {e.strerror or e}") from e
