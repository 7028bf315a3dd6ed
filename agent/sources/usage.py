"""The offline usage table (cluster, namespace, service, memory_byte_seconds): read, validate, digest."""

from __future__ import annotations

import csv
import hashlib
import io
from decimal import Decimal
from pathlib import Path

from agent.core.model import NamespaceUsage
from agent.core.money import parse_amount
from agent.errors import UsageError

USAGE_COLUMNS = ("cluster", "namespace", "service", "memory_byte_seconds")


def read_usage(path: Path) -> list[NamespaceUsage]:
    """The usage rows of a USAGE.csv; UsageError naming file, row and column on bad input."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise UsageError(f"{path}: cannot read the usage table: {e.strerror or e}") from e
    return parse_usage(text, source=str(path))


def parse_usage(text: str, *, source: str) -> list[NamespaceUsage]:
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in USAGE_COLUMNS if name not in header]
    if missing:
        raise UsageError(f"{source}, row 1: missing column(s) {', '.join(missing)}; expected {','.join(USAGE_COLUMNS)}")
    reader.fieldnames = header
    records = [_usage_record(record, source=source, row=index) for index, record in enumerate(reader, start=2)]
    _refuse_repeats(records, source=source)
    return [record for _, record in records]


def _refuse_repeats(records: list[tuple[int, NamespaceUsage]], *, source: str) -> None:
    """A namespace's usage is one row: a second row would be summed into it and could name another service."""
    first_row: dict[tuple[str, str], tuple[int, NamespaceUsage]] = {}
    for row, record in records:
        key = (record.cluster, record.namespace)
        if key not in first_row:
            first_row[key] = (row, record)
            continue
        earlier_row, earlier = first_row[key]
        services = ("" if earlier.service == record.service else
                    f" with another service ({earlier.service or 'none'} then {record.service or 'none'})")
        raise UsageError(f"{source}, row {row}: namespace {record.namespace!r} of cluster {record.cluster!r} is "
                         f"already given on row {earlier_row}{services}; give each namespace once")


def _usage_record(record: dict[str, str], *, source: str, row: int) -> tuple[int, NamespaceUsage]:
    def cell(column: str) -> str:
        return (record.get(column) or "").strip()

    for column in ("cluster", "namespace"):
        if not cell(column):
            raise UsageError(f"{source}, row {row}, column {column!r}: empty")
    try:
        seconds = parse_amount(cell("memory_byte_seconds"))
    except ValueError as e:
        raise UsageError(f"{source}, row {row}, column 'memory_byte_seconds': {e}") from e
    if seconds < 0:
        raise UsageError(f"{source}, row {row}, column 'memory_byte_seconds': must be >= 0, got {seconds}")
    return row, NamespaceUsage(cluster=cell("cluster"), namespace=cell("namespace"), memory_byte_seconds=seconds,
                               service=cell("service") or None)


def usage_digest(usage: list[NamespaceUsage]) -> str:
    """sha256 of the usage table in its canonical CSV form (sorted), so equal tables give equal digests."""
    return hashlib.sha256(format_usage(usage).encode()).hexdigest()


def format_usage(usage: list[NamespaceUsage]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(USAGE_COLUMNS)
    for record in sorted(usage, key=lambda r: (r.cluster, r.namespace, r.service or "")):
        writer.writerow([record.cluster, record.namespace, record.service or "", _plain(record.memory_byte_seconds)])
    return out.getvalue()


def _plain(number: Decimal) -> str:
    return format(number, "f")
