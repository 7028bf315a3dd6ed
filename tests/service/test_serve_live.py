"""`cz-agent serve` against the real components: a bill dropped in the inbox reaches /metrics and the API,
a scraping Prometheus sees the report's totals, and a dead usage source fails a run without losing the
figures already served."""

from __future__ import annotations

import json
import signal
import urllib.parse
from decimal import Decimal
from pathlib import Path

import pytest

from agent.cli import main
from tests.support.fixtures_live import BILL
from tests.support.fixtures_prom import PrometheusServer, scraping_prometheus
from tests.support.http import http_get, sample
from tests.support.served import ServedAgent, company_totals, drop_bill
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def test_serve_allocates_dropped_bills_and_keeps_serving_through_a_source_failure(
        agent: ServedAgent, prometheus_server: PrometheusServer, tmp_path: Path, capsys: pytest.CaptureFixture):
    inbox = tmp_path / "inbox"
    assert sample(agent.metrics(), "cz_allocation_cost") is None
    drop_bill(inbox, BILL)
    wait_for(lambda: sample(agent.metrics(), "cz_bill_total_cost", period="2026-09", currency="USD"),
             what="the bill's metrics", logs=agent.log_path)
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
                          what="the scraped allocation", logs=agent.log_path)
        scraped = {r["metric"]["company"]: float(r["value"][1]) for r in result}
    assert scraped.keys() == totals.keys()
    for company, amount in totals.items():
        assert scraped[company] == pytest.approx(float(amount), abs=1e-6)

    failures = agent.runs("allocate", "failure")
    prometheus_server.stop()
    try:
        drop_bill(inbox, BILL + "2026-09,mobile,10.00,USD\n")
        wait_for(lambda: agent.runs("allocate", "failure") > failures, what="a failed allocation",
                 logs=agent.log_path)
        assert http_get(f"{agent.url}/api/v1/allocations?period=2026-09&format=csv") == served
        assert sample(agent.metrics(), "cz_bill_total_cost", period="2026-09", currency="USD") == 1323.33
    finally:
        prometheus_server.start()
    wait_for(lambda: sample(agent.metrics(), "cz_bill_total_cost", period="2026-09", currency="USD") == 1333.33,
             what="recovery after Prometheus came back", logs=agent.log_path)
    assert agent.runs("allocate", "success") >= 2

    agent.process.send_signal(signal.SIGTERM)
    assert agent.process.wait(timeout=30) == 0
    logged = [json.loads(line) for line in agent.log_path.read_text().splitlines() if line.startswith("{")]
    assert any(entry["message"].startswith("effective configuration") for entry in logged)
    assert any("failed" in entry["message"] and entry["level"] == "error" for entry in logged)
