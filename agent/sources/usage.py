"""The offline usage table (cluster, namespace, service, memory_byte_seconds[, cpu_core_seconds][,
gpu_device_seconds]): read, validate against the rules, digest."""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from agent.core.model import IDLE_NAMESPACE, RESOURCE_UNITS, NamespaceUsage
from agent.core.money import parse_amount
from agent.core.rules import Rules
from agent.errors import UsageError

USAGE_COLUMNS = ("cluster", "namespace", "service", "memory_byte_seconds")
# Columns of the resources beyond memory: a table without them is read as one of memory alone.
MEASURE_COLUMNS = tuple(RESOURCE_UNITS.values())


def read_usage(path: Path, *, rules: Rules | None = None) -> list[NamespaceUsage]:
    """The usage rows of a USAGE.csv, checked to hold what the rules split clusters by; UsageError naming file,
    row and column on bad input."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise UsageError(f"{path}: cannot read the usage table: {e.strerror or e}") from e
    usage = parse_usage(text, source=str(path))
    if rules is not None:
        check_usage_measures(usage, rules=rules, source=str(path))
    return usage


def parse_usage(text: str, *, source: str) -> list[NamespaceUsage]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        return _parse_records(reader, source=source)
    except csv.Error as e:
        raise UsageError(f"{source}, row {reader.line_num}: not a CSV table: {e}") from e


def _parse_records(reader: csv.DictReader, *, source: str) -> list[NamespaceUsage]:
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in USAGE_COLUMNS if name not in header]
    if missing:
        raise UsageError(f"{source}, row 1: missing column(s) {', '.join(missing)}; expected {','.join(USAGE_COLUMNS)}"
                         f" (and optionally {','.join(MEASURE_COLUMNS[1:])})")
    reader.fieldnames = header
    measures = [column for column in MEASURE_COLUMNS if column in header]
    records = [_usage_record(record, source=source, row=index, measures=measures)
               for index, record in enumerate(reader, start=2)]
    _refuse_repeats(records, source=source)
    return [record for _, record in records]


def check_usage_measures(usage: list[NamespaceUsage], *, rules: Rules, source: str) -> None:
    """Each cluster's usage must hold every resource its usage basis weighs, and its idle capacity row where the
    rules give idle capacity a category of its own."""
    by_cluster: dict[str, list[NamespaceUsage]] = defaultdict(list)
    for record in usage:
        by_cluster[record.cluster].append(record)
    for cluster, records in sorted(by_cluster.items()):
        idle = next((record for record in records if record.namespace == IDLE_NAMESPACE), None)
        for resource in rules.usage_basis(cluster):
            column = RESOURCE_UNITS[resource]
            if all(record.used(resource) is None for record in records):
                raise UsageError(f"{source}: cluster {cluster!r} is split by {resource} usage (its usage_basis), "
                                 f"but the table has no {column} for it")
            if rules.idle != "spread" and (idle is None or idle.used(resource) is None):
                raise UsageError(f"{source}: idle: {rules.idle} needs cluster {cluster!r}'s idle capacity: a row "
                                 f"with namespace {IDLE_NAMESPACE} and its {column} (the cluster's allocatable "
                                 "capacity less the namespaces' usage)")


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


def _usage_record(record: dict[str, str], *, source: str, row: int,
                  measures: list[str]) -> tuple[int, NamespaceUsage]:
    def cell(column: str) -> str:
        return (record.get(column) or "").strip()

    for column in ("cluster", "namespace"):
        if not cell(column):
            raise UsageError(f"{source}, row {row}, column {column!r}: empty")
    if cell("namespace") == IDLE_NAMESPACE and cell("service"):
        raise UsageError(f"{source}, row {row}, column 'service': the idle capacity row ({IDLE_NAMESPACE}) belongs to "
                         f"no service, got {cell('service')!r}")
    amounts = {column: _measure(cell(column), source=source, row=row, column=column) for column in measures}
    if all(amount is None for amount in amounts.values()):
        raise UsageError(f"{source}, row {row}, column 'memory_byte_seconds': empty; give the namespace's usage")
    return row, NamespaceUsage(cluster=cell("cluster"), namespace=cell("namespace"), service=cell("service") or None,
                               memory_byte_seconds=amounts["memory_byte_seconds"],
                               cpu_core_seconds=amounts.get("cpu_core_seconds"),
                               gpu_device_seconds=amounts.get("gpu_device_seconds"))


def _measure(text: str, *, source: str, row: int, column: str) -> Decimal | None:
    """A usage figure; None for an empty cell (that resource was not measured)."""
    if not text:
        return None
    try:
        amount = parse_amount(text)
    except ValueError as e:
        raise UsageError(f"{source}, row {row}, column {column!r}: {e}") from e
    if amount < 0:
        raise UsageError(f"{source}, row {row}, column {column!r}: must be >= 0, got {amount}")
    return amount


def usage_digest(usage: list[NamespaceUsage]) -> str:
    """sha256 of the usage table in its canonical CSV form (sorted), so equal tables give equal digests."""
    return hashlib.sha256(format_usage(usage).encode()).hexdigest()


def format_usage(usage: list[NamespaceUsage]) -> str:
    """The table as CSV; the columns of CPU and GPU only where some row holds them, so a table of memory alone
    keeps its old form (and digest)."""
    measures = [column for column in MEASURE_COLUMNS
                if column == "memory_byte_seconds" or any(getattr(r, column) is not None for r in usage)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow((*USAGE_COLUMNS[:3], *measures))
    for record in sorted(usage, key=lambda r: (r.cluster, r.namespace, r.service or "")):
        writer.writerow([record.cluster, record.namespace, record.service or "",
                         *(_plain(getattr(record, column)) for column in measures)])
    return out.getvalue()


def _plain(number: Decimal | None) -> str:
    return "" if number is None else format(number, "f")
