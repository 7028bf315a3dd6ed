"""The stored split of a run exposed as metrics (top N per period plus other) and by the API."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from agent.core.bill_limits import BillLimits
from agent.pipeline import RunRequest, import_options_for, run_allocation
from agent.service.api import create_app
from agent.service.metrics import AllocationCollector, JobStats
from agent.sources.rules_file import load_rules
from agent.store.runs import open_store

DEMO = Path(__file__).resolve().parents[2] / "demo"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = open_store(f"sqlite:///{tmp_path_factory.mktemp('split') / 'runs.db'}")
    rules = load_rules(DEMO / "rules.yaml")
    request = RunRequest(bills=[DEMO / "bill-2026-10.csv"], period="2026-10", rules=rules, usage=None,
                         import_options=import_options_for(rules, period="2026-10", limits=BillLimits()))
    run_allocation(request, engine=engine, created_at="2026-11-01T00:00:00+00:00")
    return engine


def independent_split(*columns: str) -> dict[tuple[str, ...], Decimal]:
    sums: dict[tuple[str, ...], Decimal] = {}
    with (DEMO / "bill-2026-10.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                cost = Decimal(row["unblendedCost"])
            except ArithmeticError:
                continue
            if row["billingCycle"] != "2026-10" or not row["unblendedCost"]:
                continue
            key = tuple(row[c] or "(none)" for c in columns)
            sums[key] = sums.get(key, Decimal(0)) + cost
    return sums


def test_metrics_expose_the_largest_workspaces_and_keys_per_period_plus_other(engine):
    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=engine, job_stats=JobStats(), split_top=1))
    expected = independent_split("workspaceName")
    assert len(expected) > 2
    (largest,) = sorted(expected, key=lambda key: -abs(expected[key]))[:1]
    value = registry.get_sample_value("cz_workspace_cost", {"period": "2026-10", "workspace": largest[0],
                                                           "currency": "USD"})
    assert value == pytest.approx(float(expected[largest]))
    other = registry.get_sample_value("cz_workspace_cost", {"period": "2026-10", "workspace": "other",
                                                            "currency": "USD"})
    assert other == pytest.approx(float(sum(amount for key, amount in expected.items() if key != largest)))
    key_series = [s for family in registry.collect() if family.name == "cz_api_key_cost" for s in family.samples]
    assert len(key_series) == 2
    assert sum(s.value for s in key_series) == pytest.approx(float(sum(expected.values())))


def test_api_split_matches_an_independent_computation(engine):
    client = TestClient(create_app(engine=engine, registry=CollectorRegistry()))
    response = client.get("/api/v1/split", params={"period": "2026-10", "by": "apikey,subaccount", "format": "csv"})
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == ["period", "api_key", "sub_account", "amount", "currency"]
    expected = independent_split("apiKeyName", "loginName")
    assert {(r["api_key"], r["sub_account"]) for r in rows} == set(expected)
    for r in rows:
        assert abs(Decimal(r["amount"]) - expected[(r["api_key"], r["sub_account"])]) <= Decimal("0.01")
    assert sum(Decimal(r["amount"]) for r in rows) == sum(expected.values()).quantize(Decimal("0.01"))
    assert client.get("/api/v1/split", params={"period": "2026-10", "by": "team"}).status_code == 422
    assert client.get("/api/v1/split", params={"period": "2026-10"}).json()["columns"] == [
        "period", "workspace", "api_key", "amount", "currency"]
