"""kill -9 of `cz-agent allocate` while it writes a run, 20 times on SQLite and on PostgreSQL: the store stays
consistent, no partial run is visible through the CLI, the API or /metrics, and the next run completes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from agent.cli import main
from agent.store.runs import list_runs, load_run, open_store
from tests.support.fixtures_pg import PostgresServer
from tests.support.http import sample
from tests.support.store import api_client

pytestmark = pytest.mark.integration

KILLS = 20
PERIOD = "2026-10"
# Enough lines that the write lasts tens of milliseconds on SQLite (PostgreSQL's is slower: fewer suffice).
BILL_LINES = {"sqlite": 6000, "postgres": 2000}
RUN_TIMEOUT_SECONDS = 300
POLL_SECONDS = 0.002
CHILD_TABLES = ("allocation_rows", "contributions", "tag_lines", "rejected_rows", "bill_splits")
RULES = "companies: {alpha: 60, beta: 40}\nservices:\n  mobile: {alpha: 1}\n"


def write_bill(path: Path, *, lines: int, variant: int) -> None:
    """A bill whose run writes many rows (a tag and an API key per line); `variant` makes each run new."""
    rng = random.Random(variant)
    rows = ["billingCycle,cz_container_bill,apiKeyName,unblendedCost,currency"]
    rows += [f"{PERIOD},svc-{i},key-{i},{rng.randint(1, 99999) / 100:.2f},USD" for i in range(lines)]
    rows.append(f"{PERIOD},mobile,key-variant,{variant}.00,USD")
    path.write_text("\n".join(rows) + "\n")


def start_allocate(url: str, *, bill: Path, rules: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "allocate", "--bill", str(bill), "--rules", str(rules),
                             "--period", PERIOD, "--out", str(out)], env={**os.environ, "CZ_AGENT_STORE_URL": url},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def sqlite_write_started(database: Path) -> Callable[[], bool]:
    """The agent has begun writing once the write-ahead log holds new frames (read only: the poll never takes a
    lock; opening the store creates an empty log, which does not count)."""
    wal = database.with_name(database.name + "-wal")

    def signature() -> tuple[int, int] | None:
        try:
            status = wal.stat()
        except FileNotFoundError:
            return None
        return status.st_mtime_ns, status.st_size

    before = signature()
    return lambda: (now := signature()) is not None and now[1] > 0 and now != before


def postgres_write_started(server: PostgresServer, database: str) -> Callable[[], bool]:
    """The agent has begun writing once it holds the period's advisory lock (taken first in the transaction)."""
    def started() -> bool:
        with psycopg.connect(server.conninfo(database)) as connection:
            return bool(connection.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
                        .fetchone()[0])
    return started


def wait_for_write(process: subprocess.Popen, started: Callable[[], bool]) -> bool:
    """True once the write began; False if the process ended first."""
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if started():
            return True
        if process.poll() is not None:
            return False
        time.sleep(POLL_SECONDS)
    process.kill()
    pytest.fail(f"the agent neither wrote nor ended within {RUN_TIMEOUT_SECONDS}s")


def seconds_until_committed(url: str, *, runs_before: int) -> float:
    began = time.monotonic()
    engine = open_store(url)
    while len(list_runs(engine)) == runs_before:
        if time.monotonic() - began > RUN_TIMEOUT_SECONDS:
            pytest.fail(f"the calibration run was not committed within {RUN_TIMEOUT_SECONDS}s")
        time.sleep(POLL_SECONDS)
    engine.dispose()
    return time.monotonic() - began


def assert_consistent(url: str, *, backend: str, workdir: Path, capsys: pytest.CaptureFixture) -> list[int]:
    """Whole runs only, through the database, the CLI, the API and /metrics; returns the stored run ids."""
    engine = open_store(url)
    with engine.connect() as connection:
        if backend == "sqlite":
            assert connection.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
            assert connection.execute(text("PRAGMA foreign_key_check")).all() == []
        for table in CHILD_TABLES:
            orphans = connection.execute(text(f"SELECT count(*) FROM {table} WHERE run_id NOT IN "
                                              "(SELECT id FROM runs)")).scalar_one()
            assert orphans == 0, table
        row_counts = dict(connection.execute(text("SELECT run_id, count(*) FROM allocation_rows GROUP BY run_id")).all())
    runs = list_runs(engine)
    assert {run.id: run.manifest.report.rows for run in runs} == row_counts
    latest = runs[-1]
    stored = load_run(engine, latest.id)
    totals = latest.manifest.totals["USD"]
    assert sum(row.amount for row in stored.rows) == totals.bill_rounded
    assert totals.allocated + totals.unallocated == totals.bill_rounded
    assert len(stored.splits) == BILL_LINES[backend] + 1

    capsys.readouterr()
    assert main(["--store", url, "runs"]) == 0
    listed = [line.split("│")[1].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    assert listed == [str(run.id) for run in runs]
    exported = workdir / "exported.csv"
    assert main(["--store", url, "report", "--period", PERIOD, "--out", str(exported)]) == 0

    api = api_client(engine)
    assert [r["id"] for r in api.get("/api/v1/runs").json()["runs"]] == [run.id for run in runs]
    served = api.get("/api/v1/allocations", params={"period": PERIOD, "format": "csv"})
    assert served.status_code == 200 and served.text == exported.read_text()
    bill_total = sample(api.get("/metrics").text, "cz_bill_total_cost", period=PERIOD, currency="USD")
    assert bill_total == pytest.approx(float(latest.manifest.totals["USD"].bill))
    engine.dispose()
    return [run.id for run in runs]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_9_during_the_write_never_leaves_a_partial_run(backend: str, postgres_server: PostgresServer,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture):
    rules, bill, out = tmp_path / "rules.yaml", tmp_path / "bill.csv", tmp_path / "report.csv"
    rules.write_text(RULES)
    if backend == "sqlite":
        database = tmp_path / "runs.db"
        url = f"sqlite:///{database}"
        write_started = lambda: sqlite_write_started(database)  # noqa: E731 - a fresh baseline per run
    else:
        url = postgres_server.create_database()
        pg_started = postgres_write_started(postgres_server, url.rsplit("/", 1)[1])
        write_started = lambda: pg_started  # noqa: E731

    # A first whole run: the good run that must stay served, and the write's duration to aim the kills.
    open_store(url).dispose()
    write_bill(bill, lines=BILL_LINES[backend], variant=0)
    calibration = start_allocate(url, bill=bill, rules=rules, out=out)
    assert wait_for_write(calibration, write_started())
    write_seconds = seconds_until_committed(url, runs_before=0)
    assert calibration.wait(timeout=RUN_TIMEOUT_SECONDS) == 0, calibration.stderr.read()
    stored = assert_consistent(url, backend=backend, workdir=tmp_path, capsys=capsys)

    outcomes: Counter[str] = Counter()
    for variant in range(1, KILLS + 1):
        write_bill(bill, lines=BILL_LINES[backend], variant=variant)
        agent = start_allocate(url, bill=bill, rules=rules, out=out)
        if wait_for_write(agent, write_started()):
            time.sleep(random.uniform(0, write_seconds / 2))
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=RUN_TIMEOUT_SECONDS)
        after = assert_consistent(url, backend=backend, workdir=tmp_path, capsys=capsys)
        outcomes["inside the write" if after == stored else "after the commit"] += 1
        stored = after

    write_bill(bill, lines=BILL_LINES[backend], variant=KILLS + 1)
    final = start_allocate(url, bill=bill, rules=rules, out=out)
    assert final.wait(timeout=RUN_TIMEOUT_SECONDS) == 0, final.stderr.read()
    assert len(assert_consistent(url, backend=backend, workdir=tmp_path, capsys=capsys)) == len(stored) + 1
    print(f"{backend}: {KILLS} kills, {dict(outcomes)}, write ~{write_seconds:.2f}s")
    # Aimed inside a write that lasts a fraction of the run: most kills must land there, or this tests nothing.
    assert outcomes["inside the write"] >= KILLS // 2, outcomes
