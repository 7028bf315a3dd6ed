"""Stored runs: every allocation with its manifest, in one transaction (SQLAlchemy Core: SQLite or PostgreSQL)."""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from sqlalchemy import (Column, Connection, Engine, ForeignKey, Index, Integer, MetaData, String, Table, Text,
                        create_engine, delete, event, func, insert, inspect, select, text, update)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from agent.core.manifest import RunManifest
from agent.core.model import (CHARGE_KINDS, Allocation, Contribution, DailyCost, RejectedRow, ReportRow, RunSummary,
                              SplitTotal, StoredRun, TagLine)
from agent.core.money import exact_sum
from agent.errors import StoreError

# Strings carry no length: PostgreSQL enforces VARCHAR lengths that SQLite ignores, and a run storable in one
# store must be storable in the other.
metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("period", String, nullable=False, index=True),
    Column("created_at", String, nullable=False),
    Column("tool_version", String, nullable=False),
    Column("report_sha256", String, nullable=False),
    Column("manifest", Text, nullable=False),
    # 1, 2, ... within the period (schema version 2): two writers can never both append the period's next run.
    Column("period_sequence", Integer, nullable=False, server_default=text("0")),
    Index("ux_runs_period_sequence", "period", "period_sequence", unique=True),
)
allocation_rows = Table(
    "allocation_rows", metadata,
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("company", String, nullable=False),
    Column("service", String, nullable=False),
    Column("category", String, nullable=False),
    Column("cluster", String, nullable=False),
    Column("amount", String, nullable=False),
    Column("currency", String, nullable=False),
)
contributions = Table(
    "contributions", metadata,
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("currency", String, nullable=False),
    Column("tag", String, nullable=False),
    Column("category", String, nullable=False),
    Column("company", String, nullable=False),
    Column("service", String, nullable=False),
    Column("cluster", String, nullable=False),
    Column("namespace", String, nullable=False),
    Column("reason", String, nullable=False),
    Column("target_share", String, nullable=False),
    Column("company_share", String, nullable=False),
    Column("amount", String, nullable=False),
    Column("rule", String, nullable=False),
)
tag_lines = Table(
    "tag_lines", metadata,
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("currency", String, nullable=False),
    Column("tag", String, nullable=False),
    Column("amount", String, nullable=False),
    Column("line_count", Integer, nullable=False),
    Column("rows_by_source", Text, nullable=False),
    Column("rule", String, nullable=False),
)
rejected_rows = Table(
    "rejected_rows", metadata,
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("source", String, nullable=False),
    Column("row", Integer, nullable=False),
    Column("column", String, nullable=False),
    Column("reason", String, nullable=False),
    Column("raw_cost", String, nullable=False),
)

# The accepted bill of the run summed per (sub-account, workspace, API key, currency), exact: the source of
# the split views (API, metrics) of a stored run.
bill_splits = Table(
    "bill_splits", metadata,
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("sub_account", String, nullable=False),
    Column("workspace", String, nullable=False),
    Column("api_key", String, nullable=False),
    Column("currency", String, nullable=False),
    Column("amount", String, nullable=False),
    Column("line_count", Integer, nullable=False),
)
# The accepted bill of the run summed per (currency, tag value, charge day, charge kind), exact: the forecast's
# input (agent.core.forecast). `day` is the ISO date, "" where the bill has no charge date. Schema version 5.
daily_costs = Table(
    "daily_costs", metadata,
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("currency", String, nullable=False),
    Column("tag", String, nullable=False),
    Column("day", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("amount", String, nullable=False),
    Column("line_count", Integer, nullable=False),
)
closed_periods = Table(
    "closed_periods", metadata,
    Column("period", String, primary_key=True),
    Column("closed_at", String, nullable=False),
    Column("run_id", ForeignKey("runs.id"), nullable=False),
)
# The billing periods found in each bill file the service has imported, by reading: the file's content, the
# period its path names and the import options (agent.service.inbox.reading_key); a restart does not parse an
# unchanged bill again. Schema version 4 replaced the table keyed by content alone.
bill_readings = Table(
    "bill_readings", metadata,
    Column("reading", String, primary_key=True),
    Column("periods", Text, nullable=False),
)
# One row: the version of the schema above (schema version 2 added it; a store without it is version 1).
schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, nullable=False),
)
SCHEMA_VERSION = 5
# A SQLite writer waits this long for another writer's lock before the write fails as "database is locked".
SQLITE_BUSY_TIMEOUT_SECONDS = 15
# A run's rows are sent this many at a time: its tens of thousands of daily costs never sit in memory three times.
INSERT_BATCH_ROWS = 10_000
# Marks a connection that is about to write: SQLite then takes the write lock at BEGIN (BEGIN IMMEDIATE), so
# what the transaction reads cannot go stale before it writes.
_WRITE_OPTION = "cz_agent_write"


def open_store(url: str) -> Engine:
    """An engine on the store, creating the schema (and a SQLite file's directory) or migrating it if needed."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite_engine(url, database=parsed.database)
        else:
            # pre_ping: after a database restart the pooled connections are dead; the next job must not fail on one.
            engine = create_engine(url, pool_pre_ping=True)
        _ensure_schema(engine)
    except (SQLAlchemyError, OSError, ValueError) as e:
        raise StoreError(f"cannot open the run store {_masked(url)}: {_reason(e)}") from e
    return engine


def _sqlite_engine(url: str, *, database: str | None) -> Engine:
    if database not in (None, "", ":memory:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(connection: Any, _record: Any) -> None:
    """Foreign keys on; WAL so that readers (the API, /metrics) keep serving while a writer holds the lock;
    transactions begun by _sqlite_begin rather than by the driver."""
    connection.isolation_level = None
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA journal_mode=WAL")


def _sqlite_begin(connection: Connection) -> None:
    mode = "IMMEDIATE" if connection.get_execution_options().get(_WRITE_OPTION) else "DEFERRED"
    connection.exec_driver_sql(f"BEGIN {mode}")


def _ensure_schema(engine: Engine) -> None:
    """Create or migrate the schema; only a store that needs it is locked for writing."""
    with engine.connect() as connection:
        if _schema_version(connection) == SCHEMA_VERSION:
            return
    with _writing(engine) as connection:
        _lock(connection, "schema")
        version = _schema_version(connection)
        if version > SCHEMA_VERSION:
            raise StoreError(f"the run store has schema version {version}, newer than this agent's "
                             f"{SCHEMA_VERSION}: upgrade the agent")
        if version > 0:
            for migrate in MIGRATIONS[version - 1:]:
                migrate(connection)
        metadata.create_all(connection)
        connection.execute(delete(schema_version))
        connection.execute(insert(schema_version).values(version=SCHEMA_VERSION))


def _schema_version(connection: Connection) -> int:
    """0 for an empty store, 1 for a store made before versions were recorded, else the recorded version."""
    tables = set(inspect(connection).get_table_names())
    if "runs" not in tables:
        return 0
    if "schema_version" not in tables:
        return 1
    return connection.execute(select(func.max(schema_version.c.version))).scalar_one() or 1


def _add_period_sequence(connection: Connection) -> None:
    """Version 1 -> 2: number each period's runs in id order and make (period, number) unique."""
    connection.execute(text("ALTER TABLE runs ADD COLUMN period_sequence INTEGER NOT NULL DEFAULT 0"))
    connection.execute(text("UPDATE runs SET period_sequence = (SELECT COUNT(*) FROM runs AS earlier "
                            "WHERE earlier.period = runs.period AND earlier.id <= runs.id)"))
    connection.execute(text("CREATE UNIQUE INDEX ux_runs_period_sequence ON runs (period, period_sequence)"))


def _version_manifests(connection: Connection) -> None:
    """Version 2 -> 3: every stored manifest rewritten in the current manifest version (RunManifest.from_json
    migrates it), so that stored manifests compare with new ones."""
    for run_id, manifest in connection.execute(select(runs.c.id, runs.c.manifest)).all():
        migrated = RunManifest.from_json(json.loads(manifest)).to_json()
        connection.execute(update(runs).where(runs.c.id == run_id)
                           .values(manifest=json.dumps(migrated, sort_keys=True)))


def _drop_periods_by_content(connection: Connection) -> None:
    """Version 3 -> 4: the periods remembered by content alone go (the same file in two month folders has two
    sets of periods); they are a cache, found again by reading the bills."""
    connection.execute(text("DROP TABLE IF EXISTS bill_periods"))


def _add_daily_costs(connection: Connection) -> None:
    """Version 4 -> 5: the daily costs of the runs stored before, from their tag lines: the bill's charge days and
    kinds were not kept, so each (currency, tag value) is usage of no day, as a bill without charge dates gives."""
    daily_costs.create(connection)
    lines: dict[tuple[int, str, str], list[Any]] = {}
    for line in connection.execute(select(tag_lines)):
        lines.setdefault((line.run_id, line.currency, line.tag), []).append(line)
    by_run: dict[int, list[DailyCost]] = {}
    for (run_id, currency, tag), group in sorted(lines.items()):
        amount = exact_sum(Decimal(line.amount) for line in group)
        lines_summed = sum(line.line_count for line in group)
        by_run.setdefault(run_id, []).append(DailyCost(currency=currency, tag=tag, day=None, kind=CHARGE_KINDS[0],
                                                       amount=amount, line_count=lines_summed))
    for run_id, costs in by_run.items():
        _insert(connection, daily_costs, run_id, (_daily_cost_record(cost) for cost in costs))


# MIGRATIONS[v - 1] takes a store from version v to v + 1.
MIGRATIONS: list[Callable[[Connection], None]] = [_add_period_sequence, _version_manifests, _drop_periods_by_content,
                                                  _add_daily_costs]


@contextmanager
def _writing(engine: Engine) -> Iterator[Connection]:
    """One write transaction (on SQLite, holding the write lock from its start)."""
    with engine.connect() as connection:
        connection.execution_options(**{_WRITE_OPTION: True})
        with connection.begin():
            yield connection


def _lock(connection: Connection, name: str) -> None:
    """Serialise writers of `name` across processes until the transaction ends: a PostgreSQL advisory lock
    (SQLite writers are already serialised by BEGIN IMMEDIATE)."""
    if connection.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"cz-agent:{name}".encode()).digest()[:8], "big", signed=True)
        connection.execute(select(func.pg_advisory_xact_lock(key)))


def _reason(error: Exception) -> str:
    """The driver's own message on one line, without SQLAlchemy's statement dump and links."""
    original = getattr(error, "orig", None) or error
    return " ".join(str(original).split()) or type(original).__name__


def _masked(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ValueError, SQLAlchemyError):
        return "<unparseable URL>"


def save_run(
    engine: Engine,
    *,
    allocation: Allocation,
    rejected: list[RejectedRow],
    splits: list[SplitTotal],
    daily: list[DailyCost],
    manifest: RunManifest,
    report_sha256: str,
    created_at: str,
    tool_version: str,
) -> int:
    """Store a run and everything behind it in one transaction; returns its id. A run identical to the
    period's latest (same manifest: same inputs and results) is not stored again: its id is returned, so
    two agents allocating the same period at once leave one run."""
    manifest_json = manifest.to_json()
    try:
        with _writing(engine) as connection:
            _lock(connection, f"period:{allocation.period}")
            latest = connection.execute(
                select(runs.c.id, runs.c.period_sequence, runs.c.manifest).where(runs.c.period == allocation.period)
                .order_by(runs.c.period_sequence.desc()).limit(1)
            ).first()
            if latest is not None and json.loads(latest.manifest) == manifest_json:
                return int(latest.id)
            run_id = connection.execute(
                insert(runs).values(period=allocation.period, created_at=created_at, tool_version=tool_version,
                                    report_sha256=report_sha256,
                                    manifest=json.dumps(manifest_json, sort_keys=True),
                                    period_sequence=1 if latest is None else latest.period_sequence + 1)
            ).inserted_primary_key[0]
            _insert(connection, allocation_rows, run_id, (_row_record(r) for r in allocation.rows))
            _insert(connection, contributions, run_id, (_contribution_record(c) for c in allocation.contributions))
            _insert(connection, tag_lines, run_id, (_tag_line_record(t) for t in allocation.tag_lines))
            _insert(connection, rejected_rows, run_id, (_reject_record(r) for r in rejected))
            _insert(connection, bill_splits, run_id, (_split_record(t) for t in splits))
            _insert(connection, daily_costs, run_id, (_daily_cost_record(d) for d in daily))
    except SQLAlchemyError as e:
        raise StoreError(f"cannot store the run of {allocation.period}: {_reason(e)}") from e
    return int(run_id)


def _insert(connection: Any, table: Table, run_id: int, records: Iterable[dict[str, Any]]) -> None:
    """The records as the run's rows, in order, through the driver's executemany, INSERT_BATCH_ROWS at a time: the
    columns are plain text and integers, and SQLAlchemy's per-row parameter handling would cost more than the
    database's own work for the tens of thousands of daily costs of a large bill."""
    statement = insert(table).compile(dialect=connection.dialect, column_keys=[column.name for column in table.columns])
    values = operator.itemgetter(*statement.positiontup) if statement.positional else None
    rows = ({"run_id": run_id, "position": i, **r} for i, r in enumerate(records))
    while batch := list(itertools.islice(rows, INSERT_BATCH_ROWS)):
        connection.exec_driver_sql(str(statement), batch if values is None else [values(row) for row in batch])


def _row_record(row: ReportRow) -> dict[str, Any]:
    return {"company": row.company, "service": row.service, "category": row.category, "cluster": row.cluster,
            "amount": format(row.amount, "f"), "currency": row.currency}


def _contribution_record(c: Contribution) -> dict[str, Any]:
    return {"currency": c.currency, "tag": c.tag, "category": c.category, "company": c.company,
            "service": c.service, "cluster": c.cluster, "namespace": c.namespace, "reason": c.reason,
            "target_share": str(c.target_share), "company_share": str(c.company_share), "amount": str(c.amount),
            "rule": c.rule}


def _tag_line_record(t: TagLine) -> dict[str, Any]:
    return {"currency": t.currency, "tag": t.tag, "amount": format(t.amount, "f"), "line_count": t.line_count,
            "rows_by_source": json.dumps(t.rows_by_source, sort_keys=True), "rule": t.rule}


def _reject_record(r: RejectedRow) -> dict[str, Any]:
    return {"source": r.source, "row": r.row, "column": r.column, "reason": r.reason, "raw_cost": r.raw_cost}


def store_answers(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(select(1))
    except SQLAlchemyError:
        return False
    return True


def _split_record(t: SplitTotal) -> dict[str, Any]:
    return {"sub_account": t.sub_account, "workspace": t.workspace, "api_key": t.api_key, "currency": t.currency,
            "amount": format(t.amount, "f"), "line_count": t.line_count}


def _daily_cost_record(d: DailyCost) -> dict[str, Any]:
    return {"currency": d.currency, "tag": d.tag, "day": "" if d.day is None else d.day.isoformat(), "kind": d.kind,
            "amount": format(d.amount, "f"), "line_count": d.line_count}


def list_runs(engine: Engine, *, period: str | None = None) -> list[RunSummary]:
    query = select(runs).order_by(runs.c.id)
    if period:
        query = query.where(runs.c.period == period)
    with _reading(engine) as connection:
        return [_summary(record) for record in connection.execute(query).mappings()]


def latest_run_id(engine: Engine, *, period: str) -> int:
    found = list_runs(engine, period=period)
    if not found:
        raise StoreError(f"no stored run for period {period}")
    return found[-1].id


def close_period(engine: Engine, *, period: str, closed_at: str) -> int:
    """Freeze the period at its latest run; returns that run's id. Closing twice is an error."""
    run_id = latest_run_id(engine, period=period)
    try:
        with _writing(engine) as connection:
            if connection.execute(select(closed_periods).where(closed_periods.c.period == period)).first():
                raise StoreError(f"period {period} is already closed")
            connection.execute(insert(closed_periods).values(period=period, closed_at=closed_at, run_id=run_id))
    except SQLAlchemyError as e:
        raise StoreError(f"cannot close period {period}: {_reason(e)}") from e
    return run_id


def closed(engine: Engine) -> dict[str, int]:
    """Closed period -> the run it was closed at."""
    with _reading(engine) as connection:
        return {row.period: row.run_id for row in connection.execute(select(closed_periods))}


def known_bill_periods(engine: Engine, reading: str) -> list[str] | None:
    with _reading(engine) as connection:
        found = connection.execute(select(bill_readings.c.periods).where(bill_readings.c.reading == reading)).first()
    return None if found is None else json.loads(found.periods)


def remember_bill_periods(engine: Engine, *, reading: str, periods: list[str]) -> None:
    try:
        with _writing(engine) as connection:
            if not connection.execute(select(bill_readings).where(bill_readings.c.reading == reading)).first():
                connection.execute(insert(bill_readings).values(reading=reading, periods=json.dumps(sorted(periods))))
    except SQLAlchemyError as e:
        raise StoreError(f"cannot record the periods of bill reading {reading[:12]}: {_reason(e)}") from e


def seen_namespace_maps(engine: Engine) -> dict[str, dict[str, str | None]]:
    """cluster -> namespace -> service as the stored runs saw them, the newest run winning: a namespace
    deleted mid-month keeps the service it had."""
    merged: dict[str, dict[str, str | None]] = {}
    for run in list_runs(engine):
        for cluster, namespaces in run.manifest.namespace_map.items():
            for namespace, service in namespaces.items():
                if service:
                    merged.setdefault(cluster, {})[namespace] = service
    return merged


def load_run(engine: Engine, run_id: int, *, categories: Collection[str] | None = None) -> StoredRun:
    """A stored run; with `categories`, only the contributions of those categories (the metrics need the
    unallocated ones only, and a run can hold hundreds of thousands of contributions)."""
    with _reading(engine) as connection:
        record = connection.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
        if record is None:
            raise StoreError(f"no stored run with id {run_id}")
        summary = _summary(record)
        wanted = () if categories is None else (contributions.c.category.in_(sorted(categories)),)

        def rows_of(table: Table, *conditions: Any) -> list[Any]:
            query = select(table).where(table.c.run_id == run_id, *conditions).order_by(table.c.position)
            return list(connection.execute(query).mappings())

        return StoredRun(
            summary=summary,
            rows=[_row(r, period=summary.period) for r in rows_of(allocation_rows)],
            contributions=[_contribution(r) for r in rows_of(contributions, *wanted)],
            tag_lines=[_tag_line(r) for r in rows_of(tag_lines)],
            rejected=[_reject(r) for r in rows_of(rejected_rows)],
            splits=[_split(r) for r in rows_of(bill_splits)],
            daily_costs=[_daily_cost(r) for r in rows_of(daily_costs)],
        )


def load_daily_costs(engine: Engine, run_id: int) -> list[DailyCost]:
    """The run's bill per (currency, tag value, charge day, charge kind), in the order stored; StoreError if there is
    no such run."""
    with _reading(engine) as connection:
        if connection.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
            raise StoreError(f"no stored run with id {run_id}")
        query = select(daily_costs).where(daily_costs.c.run_id == run_id).order_by(daily_costs.c.position)
        return [_daily_cost(r) for r in connection.execute(query).mappings()]


class LocalRuns:
    """The runs of a local store, read as agent.store.remote.RemoteRuns reads an agent's over its API."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def list_runs(self, *, period: str | None = None) -> list[RunSummary]:
        return list_runs(self._engine, period=period)

    def latest_run_id(self, *, period: str) -> int:
        return latest_run_id(self._engine, period=period)

    def latest_run(self, period: str) -> StoredRun | None:
        """The period's latest run, None when it has none."""
        found = list_runs(self._engine, period=period)
        return load_run(self._engine, found[-1].id) if found else None

    def load_run(self, run_id: int) -> StoredRun:
        return load_run(self._engine, run_id)


def run_document(stored: StoredRun) -> dict[str, Any]:
    """A stored run as JSON, exactly (amounts as decimal text, shares as fractions): what the API sends a
    `cz-agent --server` client, which reads it back with run_from_document."""
    summary = stored.summary
    return {
        "summary": {"id": summary.id, "period": summary.period, "created_at": summary.created_at,
                    "tool_version": summary.tool_version, "report_sha256": summary.report_sha256,
                    "manifest": summary.manifest.to_json()},
        "rows": [_row_record(row) for row in stored.rows],
        "contributions": [_contribution_record(c) for c in stored.contributions],
        "tag_lines": [_tag_line_record(t) for t in stored.tag_lines],
        "rejected": [_reject_record(r) for r in stored.rejected],
        "splits": [_split_record(t) for t in stored.splits],
        "daily_costs": [_daily_cost_record(d) for d in stored.daily_costs],
    }


def run_from_document(document: Mapping[str, Any]) -> StoredRun:
    run = summary_from_document(document["summary"])
    return StoredRun(summary=run, rows=[_row(r, period=run.period) for r in document["rows"]],
                     contributions=[_contribution(r) for r in document["contributions"]],
                     tag_lines=[_tag_line(r) for r in document["tag_lines"]],
                     rejected=[_reject(r) for r in document["rejected"]],
                     splits=[_split(r) for r in document["splits"]],
                     daily_costs=[_daily_cost(r) for r in document["daily_costs"]])


def summary_from_document(summary: Mapping[str, Any]) -> RunSummary:
    """A run's summary from its JSON form (the document's, or the API's run detail, which has the same fields)."""
    return RunSummary(id=summary["id"], period=summary["period"], created_at=summary["created_at"],
                      tool_version=summary["tool_version"], report_sha256=summary["report_sha256"],
                      manifest=RunManifest.from_json(summary["manifest"]))


def _row(r: Any, *, period: str) -> ReportRow:
    return ReportRow(period=period, company=r["company"], service=r["service"], category=r["category"],
                     cluster=r["cluster"], amount=Decimal(r["amount"]), currency=r["currency"])


def _tag_line(r: Any) -> TagLine:
    return TagLine(currency=r["currency"], tag=r["tag"], amount=Decimal(r["amount"]), line_count=r["line_count"],
                   rows_by_source=json.loads(r["rows_by_source"]), rule=r["rule"])


def _reject(r: Any) -> RejectedRow:
    return RejectedRow(source=r["source"], row=r["row"], column=r["column"], reason=r["reason"],
                       raw_cost=r["raw_cost"])


def _split(r: Any) -> SplitTotal:
    return SplitTotal(sub_account=r["sub_account"], workspace=r["workspace"], api_key=r["api_key"],
                      currency=r["currency"], amount=Decimal(r["amount"]), line_count=r["line_count"])


def _daily_cost(r: Any) -> DailyCost:
    return DailyCost(currency=r["currency"], tag=r["tag"], day=date.fromisoformat(r["day"]) if r["day"] else None,
                     kind=r["kind"], amount=Decimal(r["amount"]), line_count=r["line_count"])


def _contribution(r: Any) -> Contribution:
    return Contribution(currency=r["currency"], tag=r["tag"], category=r["category"], company=r["company"],
                        service=r["service"], cluster=r["cluster"], namespace=r["namespace"], reason=r["reason"],
                        target_share=Fraction(r["target_share"]), company_share=Fraction(r["company_share"]),
                        amount=Fraction(r["amount"]), rule=r["rule"])


def _summary(record: Any) -> RunSummary:
    return RunSummary(id=record["id"], period=record["period"], created_at=record["created_at"],
                      tool_version=record["tool_version"], report_sha256=record["report_sha256"],
                      manifest=RunManifest.from_json(json.loads(record["manifest"])))


@contextmanager
def _reading(engine: Engine) -> Iterator[Connection]:
    """A read connection whose database errors become StoreError."""
    try:
        with engine.connect() as connection:
            yield connection
    except SQLAlchemyError as e:
        raise StoreError(f"cannot read the run store: {_reason(e)}") from e
