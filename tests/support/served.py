"""A real `cz-agent serve` process: started with the test's settings on a free port, waited for until ready,
stopped with SIGTERM (then killed), and its log read. The one place the tests start a served agent."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from tests.support.http import http_get, sample
from tests.support.ports import free_port
from tests.support.processes import start_logged, stop_process
from tests.support.waiting import WAIT_SECONDS, wait_for

# SIGTERM lets the running job finish: room for one job on a loaded machine before the agent is killed.
STOP_SECONDS = 30


@dataclass
class ServedAgent:
    """A `cz-agent serve` process, reached on 127.0.0.1 unless told otherwise, and the settings it was started with
    (CZ_AGENT_* values)."""

    url: str
    settings: Mapping[str, str]
    log_path: Path
    process: subprocess.Popen

    @property
    def address(self) -> str:
        """host:port, as a scrape target or an http.client connection wants it."""
        return self.url.removeprefix("http://")

    @property
    def store(self) -> str:
        return self.settings["CZ_AGENT_STORE_URL"]

    @property
    def inbox(self) -> Path:
        return Path(self.settings["CZ_AGENT_INBOX_DIR"])

    def metrics(self) -> str:
        return http_get(f"{self.url}/metrics")

    def runs(self, job: str, outcome: str) -> float:
        """cz_agent_runs_total of the job and outcome (0 before the first)."""
        return sample(self.metrics(), "cz_agent_runs_total", agent_job=job, outcome=outcome) or 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_entries(self) -> list[dict]:
        """The JSON log's entries (CZ_AGENT_LOG_FORMAT=json), skipping any line that is not one."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def wait_until_ready(self, ready: str | Callable[[], object] = "/readyz", *, timeout: float = WAIT_SECONDS,
                         logs: Path | Iterable[Path] | None = None) -> None:
        """Until GET `ready` (a path) answers 200, or the callable returns something truthy; fails with the log's
        tail (or those of `logs`) when the process exits first or the time runs out."""
        if isinstance(ready, str):
            condition, what = (lambda: http_get(f"{self.url}{ready}")), f"{ready} of the agent at {self.url}"
        else:
            condition, what = ready, f"the agent at {self.url} to be ready"
        wait_for(condition, what=what, timeout=timeout, process=self.process,
                 logs=self.log_path if logs is None else logs)

    def stop(self, *, timeout: float = STOP_SECONDS) -> int:
        """SIGTERM, then kill after `timeout` seconds; the exit status (also once the test stopped it itself)."""
        return stop_process(self.process, timeout=timeout)


def start_agent(settings: Mapping[str, str], *, log_path: Path, host: str | None = "127.0.0.1") -> ServedAgent:
    """`python -m agent.cli serve` with the environment of the tests plus `settings`, listening on a free port of
    `host` (CZ_AGENT_HOST and CZ_AGENT_PORT, unless `settings` gives them; host None: the agent's default listen
    address, reached on 127.0.0.1); stdout and stderr to `log_path`.
    Does not wait: see ServedAgent.wait_until_ready, or served_agent."""
    listen = {} if host is None else {"CZ_AGENT_HOST": host}
    settings = {**listen, "CZ_AGENT_PORT": str(free_port()), **settings}
    process = start_logged([sys.executable, "-m", "agent.cli", "serve"], log_path=log_path,
                           env={**os.environ, **settings})
    url_host = settings.get("CZ_AGENT_HOST", "127.0.0.1")
    return ServedAgent(url=f"http://{url_host}:{settings['CZ_AGENT_PORT']}", settings=settings, log_path=log_path,
                       process=process)


@contextmanager
def served_agent(settings: Mapping[str, str], *, log_path: Path, ready: str | Callable[[], object] = "/readyz",
                 timeout: float = WAIT_SECONDS, host: str | None = "127.0.0.1") -> Iterator[ServedAgent]:
    """A started agent, once ready (see wait_until_ready); stopped afterwards."""
    agent = start_agent(settings, log_path=log_path, host=host)
    try:
        agent.wait_until_ready(ready, timeout=timeout)
        yield agent
    finally:
        agent.stop()


def drop_bill(inbox: Path, text: str, *, name: str = "bill-2026-09.csv") -> None:
    """Write beside, then rename: the agent never sees a half-written bill (hidden files are skipped)."""
    partial = inbox / f".{name}.part"
    partial.write_text(text)
    partial.rename(inbox / name)


def company_totals(report_csv: str) -> dict[str, Decimal]:
    """A report CSV's amounts summed by company."""
    totals: dict[str, Decimal] = {}
    for row in csv.DictReader(io.StringIO(report_csv)):
        totals[row["company"]] = totals.get(row["company"], Decimal(0)) + Decimal(row["amount"])
    return totals
