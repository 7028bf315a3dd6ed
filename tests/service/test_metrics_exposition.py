"""The /metrics text: the same bytes as generate_latest, run families rendered once per set of exposed runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

import agent.service.metrics
from agent.core.bill_limits import BillLimits
from agent.pipeline import RunRequest, import_options_for, run_allocation
from agent.service.api import create_app
from agent.service.metrics import AllocationCollector, JobStats, exposition, render_gauge
from agent.sources.rules_file import load_rules
from agent.sources.usage import read_usage
from agent.store.runs import open_store

WORKED = Path(__file__).resolve().parents[2] / "tests" / "data" / "worked"


def store_run(engine, *, bill: Path, period: str) -> int:
    rules = load_rules(WORKED / "rules.yaml")
    request = RunRequest(bills=[bill], period=period, rules=rules, usage=read_usage(WORKED / "usage.csv"),
                         import_options=import_options_for(rules, period=period, limits=BillLimits()))
    return run_allocation(request, engine=engine, created_at="2026-11-01T00:00:00+00:00").run_id


@pytest.fixture
def engine(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    store_run(engine, bill=WORKED / "bill.csv", period="2026-10")
    return engine


def registry_for(engine, stats: JobStats) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=engine, job_stats=stats))
    return registry


def test_exposition_is_generate_latest_byte_for_byte(engine):
    stats = JobStats()
    registry = registry_for(engine, stats)
    stats.record("allocate", outcome="success", duration_seconds=1.5, finished_at=1_700_000_000.0)
    first = exposition(registry)
    assert b'cz_allocation_cost{category="cluster"' in first
    assert first == generate_latest(registry)
    # Job figures are read at each scrape, while the run families are reused.
    stats.record("allocate", outcome="failure", duration_seconds=2.5, finished_at=1_700_000_100.0)
    second = exposition(registry)
    assert second != first
    assert b'cz_agent_runs_total{agent_job="allocate",outcome="failure"} 1.0' in second
    assert second == generate_latest(registry)


def test_run_families_are_built_and_rendered_once_until_a_new_run_is_exposed(engine, tmp_path, monkeypatch):
    registry = registry_for(engine, JobStats())
    rendered: list[str] = []
    real_render_gauge = agent.service.metrics.render_gauge

    def counting_render_gauge(family):
        rendered.append(family.name)
        return real_render_gauge(family)

    monkeypatch.setattr(agent.service.metrics, "render_gauge", counting_render_gauge)
    total = {"period": "2026-10", "currency": "USD"}
    before = exposition(registry)
    bill_total = registry.get_sample_value("cz_bill_total_cost", total)
    assert rendered.count("cz_allocation_cost") == 1
    assert exposition(registry) == before
    assert rendered.count("cz_allocation_cost") == 1
    bill = tmp_path / "bill.csv"
    bill.write_text((WORKED / "bill.csv").read_text().replace(",600,USD", ",650,USD"))
    run_id = store_run(engine, bill=bill, period="2026-10")
    after = exposition(registry)
    assert rendered.count("cz_allocation_cost") == 2
    assert f'cz_run_info{{period="2026-10",run_id="{run_id}"}} 1.0'.encode() in after
    assert registry.get_sample_value("cz_bill_total_cost", total) == bill_total + 50
    assert after == generate_latest(registry)


def test_metrics_endpoint_serves_the_exposition(engine):
    registry = registry_for(engine, JobStats())
    response = TestClient(create_app(engine=engine, registry=registry)).get("/metrics")
    assert response.status_code == 200
    assert response.content == generate_latest(registry)


def test_a_gauge_is_rendered_as_generate_latest_renders_it_whatever_its_text():
    family = GaugeMetricFamily("cz_unallocated_cost", 'Help with a \\ backslash,\na newline and "quotes".',
                               labels=["period", "reason", "currency"])
    values = [0.0, -0.0, 1.5, -2.25, 1e21, 1e-7, 123456789.123456, 2.0**53 + 1]
    reasons = ['unknown service "a\\b"', "two\nlines", "ünïcødé ✓", "", "trailing\\"]
    for value, reason in zip(values, reasons * 2):
        family.add_metric(["2026-10", reason, "USD"], value)
    assert render_gauge(family) == generate_latest(agent.service.metrics._Families([family]))
