"""`cz-agent serve` against the real components: a bill dropped in the inbox reaches /metrics and the API,
a scraping Prometheus sees the report's totals, and a dead usage source fails a run without losing the
figures already served."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.cli import main
from tests.integration.fixtures_live import BILL, rules_text
from tests.integration.fixtures_prom import PrometheusServer, _free_port, scraping_prometheus

WAIT_SECONDS = 60


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def wait_for(condition: Callable[[], object], *, what: str, log_path: Path) -> object:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (urllib.error.URLError, OSError):
            result = None
        if result:
            return result
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}; agent log tail:\n{log_path.read_text()[-4000:]}")


def sample(metrics_text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


class Agent:
    def __init__(self, url: str, store: str, log_path: Path, process: subprocess.Popen) -> None:
        self.url, self.store, self.log_path, self.process = url, store, log_path, process

    def metrics(self) -> str:
        return http_get(f"{self.url}/metrics")

    def runs(self, job: str, outcome: str) -> float:
        return sample(self.metrics(), "cz_agent_runs_total", job=job, outcome=outcome) or 0.0


@pytest.fixture
def agent(prometheus_server: PrometheusServer, agent_kubeconfig: Path, tmp_path: Path) -> Iterator[Agent]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(prometheus_server.url))
    port = _free_port()
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    env = {**os.environ, "CZ_AGENT_STORE_URL": store, "CZ_AGENT_RULES_FILE": str(rules),
           "CZ_AGENT_INBOX_DIR": str(inbox), "CZ_AGENT_HOST": "127.0.0.1", "CZ_AGENT_PORT": str(port),
           "CZ_AGENT_INBOX_POLL_SECONDS": "1", "CZ_AGENT_ALLOCATION_INTERVAL_SECONDS": "2",
           "CZ_AGENT_KUBECONFIG": str(agent_kubeconfig), "CZ_AGENT_PROMETHEUS_RETRIES": "0",
           "CZ_AGENT_PROMETHEUS_TIMEOUT_SECONDS": "5", "CZ_AGENT_LOG_FORMAT": "json"}
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    running = Agent(f"http://127.0.0.1:{port}", store, log_path, process)
    try:
        wait_for(lambda: http_get(f"{running.url}/readyz"), what="/readyz", log_path=log_path)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def drop_bill(inbox: Path, text: str) -> None:
    """Write beside, then rename: the agent never sees a half-written bill (hidden files are skipped)."""
    partial = inbox / ".bill-2026-09.csv.part"
    partial.write_text(text)
    partial.rename(inbox / "bill-2026-09.csv")


def company_totals(report_csv: str) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for row in csv.DictReader(io.StringIO(report_csv)):
        totals[row["company"]] = totals.get(row["company"], Decimal(0)) + Decimal(row["amount"])
    return totals


def test_serve_allocates_dropped_bills_and_keeps_serving_through_a_source_failure(
        agent: Agent, prometheus_server: PrometheusServer, tmp_path: Path, capsys: pytest.CaptureFixture):
    inbox = tmp_path / "inbox"
    assert sample(agent.metrics(), "cz_allocation_cost") is None
    drop_bill(inbox, BILL)
    wait_for(lambda: sample(agent.metrics(), "cz_bill_total_cost", period="2026-09", currency="USD"),
             what="the bill's metrics", log_path=agent.log_path)
    served = http_get(f"{agent.url}/api/v1/allocations?period=2026-09&format=csv")

    exported = tmp_path / "report.csv"
    assert main(["--store", agent.store, "report", "--period", "2026-09", "--out", str(exported)]) == 0
    assert served == exported.read_text()
    totals = company_totals(served)
    assert sum(totals.values()) == Decimal("1323.33")
    assert sample(agent.metrics(), "cz_bill_total_cost", period="2026-09", currency="USD") == 1323.33

    with scraping_prometheus(agent.url.removeprefix("http://"), workdir=tmp_path) as scraper:
        query = urllib.parse.quote('sum by (company) (cz_allocation_cost{period="2026-09"})')
        result = wait_for(lambda: json.loads(http_get(f"{scraper}/api/v1/query?query={query}"))["data"]["result"],
                          what="the scraped allocation", log_path=agent.log_path)
        scraped = {r["metric"]["company"]: float(r["value"][1]) for r in result}
    assert scraped.keys() == totals.keys()
    for company, amount in totals.items():
        assert scraped[company] == pytest.approx(float(amount), abs=1e-6)

    failures = agent.runs("allocate", "failure")
    prometheus_server.stop()
    try:
        drop_bill(inbox, BILL + "2026-09,mobile,10.00,USD\n")
        wait_for(lambda: agent.runs("allocate", "failure") > failures, what="a failed allocation",
                 log_path=agent.log_path)
        assert http_get(f"{agent.url}/api/v1/allocations?period=2026-09&format=csv") == served
        assert sample(agent.metrics(), "cz_bill_total_cost", period="2026-09", currency="USD") == 1323.33
    finally:
        prometheus_server.start()
    wait_for(lambda: sample(agent.metrics(), "cz_bill_total_cost", period="2026-09", currency="USD") == 1333.33,
             what="recovery after Prometheus came back", log_path=agent.log_path)
    assert agent.runs("allocate", "success") >= 2

    agent.process.send_signal(signal.SIGTERM)
    assert agent.process.wait(timeout=30) == 0
    logged = [json.loads(line) for line in agent.log_path.read_text().splitlines() if line.startswith("{")]
    assert any(entry["message"].startswith("effective configuration") for entry in logged)
    assert any("failed" in entry["message"] and entry["level"] == "error" for entry in logged)
