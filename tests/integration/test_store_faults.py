"""Database faults under a running `cz-agent serve`: PostgreSQL stopped, SQLite write-locked by another process,
the disk full. Each fails the run with its reason in the log and a rising failure counter, the previous run
stays served where the store can still be read, and the agent recovers by itself once the fault is gone."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.fixtures_pg import PostgresServer, postgres_cluster
from tests.integration.fixtures_prom import _free_port
from tests.integration.test_serve import Agent, http_get, sample, wait_for

PERIOD = "2026-09"
RULES = "companies: {alpha: 60, beta: 40}\nservices:\n  mobile: {alpha: 1}\n  mcmp: {beta: 1}\n"
HEADER = "billingCycle,cz_container_bill,unblendedCost,currency\n"
FIRST_BILL = HEADER + f"{PERIOD},mobile,40.00,USD\n{PERIOD},mcmp,60.00,USD\n{PERIOD},,33.33,USD\n"
SECOND_BILL = FIRST_BILL + f"{PERIOD},mobile,10.00,USD\n"
TMPFS_BYTES = 4 * 1024 * 1024


@contextmanager
def serving_agent(store_url: str, workdir: Path) -> Iterator[Agent]:
    """`cz-agent serve` on a free port, polling the inbox every second and allocating every two."""
    inbox = workdir / "inbox"
    inbox.mkdir()
    rules = workdir / "rules.yaml"
    rules.write_text(RULES)
    port = _free_port()
    env = {**os.environ, "CZ_AGENT_STORE_URL": store_url, "CZ_AGENT_RULES_FILE": str(rules),
           "CZ_AGENT_INBOX_DIR": str(inbox), "CZ_AGENT_HOST": "127.0.0.1", "CZ_AGENT_PORT": str(port),
           "CZ_AGENT_INBOX_POLL_SECONDS": "1", "CZ_AGENT_ALLOCATION_INTERVAL_SECONDS": "2",
           "CZ_AGENT_LOG_FORMAT": "json"}
    log_path = workdir / "agent.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    agent = Agent(f"http://127.0.0.1:{port}", store_url, log_path, process)
    try:
        wait_for(lambda: http_get(f"{agent.url}/readyz"), what="/readyz", log_path=log_path)
        yield agent
    finally:
        process.kill()
        process.wait()


def drop_bill(agent: Agent, text: str) -> None:
    inbox = agent.log_path.parent / "inbox"
    partial = inbox / f".bill-{PERIOD}.csv.part"
    partial.write_text(text)
    partial.rename(inbox / f"bill-{PERIOD}.csv")


def bill_total(agent: Agent) -> float | None:
    return sample(agent.metrics(), "cz_bill_total_cost", period=PERIOD, currency="USD")


def failures(agent: Agent) -> float:
    return agent.runs("allocate", "failure") + agent.runs("import", "failure")


def served_report(agent: Agent) -> str:
    return http_get(f"{agent.url}/api/v1/allocations?period={PERIOD}&format=csv")


def first_good_run(agent: Agent) -> str:
    drop_bill(agent, FIRST_BILL)
    wait_for(lambda: bill_total(agent) == 133.33, what="the first run's metrics", log_path=agent.log_path)
    return served_report(agent)


def wait_for_failure(agent: Agent, *, before: float, reason: str) -> None:
    """The failure counter rises and the log names `reason` in an error entry."""
    wait_for(lambda: failures(agent) > before, what="a failed run", log_path=agent.log_path)
    wait_for(lambda: any(reason in json.dumps(entry) for entry in logged_errors(agent)),
             what=f"an error naming {reason!r} in the log", log_path=agent.log_path)


def logged_errors(agent: Agent) -> list[dict]:
    lines = agent.log_path.read_text(errors="replace").splitlines()
    return [entry for entry in (json.loads(line) for line in lines if line.startswith("{"))
            if entry["level"] == "error"]


def wait_for_recovery(agent: Agent) -> None:
    wait_for(lambda: bill_total(agent) == 143.33, what="the run after the fault was gone", log_path=agent.log_path)
    assert served_report(agent) != ""


def test_postgres_stopped_then_restarted(tmp_path: Path):
    with postgres_cluster() as server:
        with serving_agent(server.create_database(), tmp_path) as agent:
            served = first_good_run(agent)
            before = failures(agent)
            server.stop()
            try:
                drop_bill(agent, SECOND_BILL)
                wait_for_failure(agent, before=before, reason="Connection refused")
                # Nothing to read while the database is down: the store is reported down, the API says so.
                assert sample(agent.metrics(), "cz_agent_store_up") == 0
                assert failures(agent) > before
            finally:
                server.start()
            wait_for(lambda: served_report(agent), what="the API after the restart", log_path=agent.log_path)
            assert sample(agent.metrics(), "cz_agent_store_up") == 1
            wait_for_recovery(agent)
            assert served_report(agent) != served


@contextmanager
def write_locked(database: Path) -> Iterator[None]:
    """Another process holds SQLite's write lock (BEGIN EXCLUSIVE) until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\nsys.stdin.read()\n", str(database)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0


def test_sqlite_locked_by_another_process(tmp_path: Path):
    database = tmp_path / "runs.db"
    with serving_agent(f"sqlite:///{database}", tmp_path) as agent:
        served = first_good_run(agent)
        before = failures(agent)
        with write_locked(database):
            drop_bill(agent, SECOND_BILL)
            wait_for_failure(agent, before=before, reason="database is locked")
            assert served_report(agent) == served
            assert bill_total(agent) == 133.33
            assert sample(agent.metrics(), "cz_agent_store_up") == 1
        wait_for_recovery(agent)


@contextmanager
def small_tmpfs(mountpoint: Path) -> Iterator[Path]:
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the disk-full test (needs root): {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def fill(directory: Path) -> Path:
    """Write until the filesystem is full; returns the filler file."""
    filler = directory / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def test_disk_full_under_the_sqlite_store(tmp_path: Path):
    with small_tmpfs(tmp_path / "disk") as disk:
        database = disk / "runs.db"
        with serving_agent(f"sqlite:///{database}", tmp_path) as agent:
            served = first_good_run(agent)
            before = failures(agent)
            filler = fill(disk)
            try:
                drop_bill(agent, SECOND_BILL)
                wait_for_failure(agent, before=before, reason="database or disk is full")
                assert served_report(agent) == served
                assert bill_total(agent) == 133.33
            finally:
                filler.unlink()
            wait_for_recovery(agent)
        with sqlite3.connect(database) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert shutil.disk_usage(disk).total <= TMPFS_BYTES
