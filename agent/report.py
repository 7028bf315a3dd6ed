"""Report files: the chargeback rows as CSV, JSON or Parquet, written atomically and byte-reproducibly."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from agent.allocate import ReportRow
from agent.errors import AgentError

REPORT_COLUMNS = ("period", "company", "service", "category", "cluster", "amount", "currency")
FORMATS = ("csv", "json", "parquet")


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
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(records)
    return out.getvalue().encode()


def _parquet(rows: Sequence[ReportRow]) -> bytes:
    # The amount column is an exact decimal128 with the widest precision of the rows' currencies.
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
