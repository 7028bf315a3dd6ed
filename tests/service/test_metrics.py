"""The metrics collector over real stored runs: values equal the reports, bounded periods and series, promtool-clean."""

from __future__ import annotations

import csv
import logging
import shutil
import subprocess
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import create_engine

import agent.service.metrics
from agent.bills import ImportOptions
from agent.core.periods import Period
from agent.core.rules import Budget, Budgets
from agent.pipeline import RunRequest, run_allocation
from agent.service.metrics import AllocationCollector, FamilySpec, JobStats, fold
from agent.sources.rules_file import load_rules
from agent.sources.usage import read_usage
from agent.store.runs import list_runs, load_run, open_store
from tests.support.store import allocate_run

ROOT = Path(__file__).resolve().parents[2]
WORKED = ROOT / "tests" / "data" / "worked"
DEMO = ROOT / "demo"
PROMTOOL = "promtool"


@dataclass(frozen=True)
class StoredReport:
    run_id: int
    period: str
    report: Path


def allocate(store: str, *, bill: Path, period: str, out: Path, rules: Path = WORKED / "rules.yaml",
             usage: Path = WORKED / "usage.csv") -> StoredReport:
    run_id = allocate_run(store, bill=bill, period=period, out=out, rules=rules, usage=usage)
    return StoredReport(run_id=run_id, period=period, report=out)


def small_bill(directory: Path, *, period: str, scale: int, name: str = "") -> Path:
    """A native bill with a cluster line, a service line, an unknown service and an untagged line."""
    path = directory / f"bill-{period}{name}.csv"
    path.write_text("billingCycle,cz_container_bill,unblendedCost,currency\n"
                    f"{period},cz_cluster_prod,{100 * scale},USD\n"
                    f"{period},mobile,{10 * scale}.25,USD\n"
                    f"{period},legacy-crm,7.5,USD\n"
                    f"{period},,3,USD\n")
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass(frozen=True)
class Store:
    url: str
    runs: dict[str, StoredReport]  # the latest run of each period
    superseded: StoredReport


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Four periods; 2026-09 is allocated twice with different bills, so its second run is the latest."""
    directory = tmp_path_factory.mktemp("metrics")
    url = f"sqlite:///{directory / 'runs.db'}"
    runs = {}
    for period, scale in (("2026-07", 1), ("2026-08", 2)):
        runs[period] = allocate(url, bill=small_bill(directory, period=period, scale=scale), period=period,
                                out=directory / f"{period}.csv")
    superseded = allocate(url, bill=small_bill(directory, period="2026-09", scale=3), period="2026-09",
                          out=directory / "2026-09-first.csv")
    runs["2026-10"] = allocate(url, bill=WORKED / "bill.csv", period="2026-10", out=directory / "2026-10.csv")
    runs["2026-09"] = allocate(url, bill=small_bill(directory, period="2026-09", scale=5, name="-second"),
                               period="2026-09", out=directory / "2026-09.csv")
    return Store(url=url, runs=runs, superseded=superseded)


def registry_for(url: str, *, job_stats: JobStats | None = None, **options: object) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=open_store(url), job_stats=job_stats or JobStats(), **options))
    return registry


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value
            for family in registry.collect() for s in family.samples if s.name == name}


EXPOSED = ("2026-10", "2026-09", "2026-08")


@pytest.mark.parametrize("period", EXPOSED)
def test_allocation_cost_is_each_report_row_of_the_latest_run(store, period):
    registry = registry_for(store.url)
    rows = read_rows(store.runs[period].report)
    for row in rows:
        labels = {k: row[k] for k in ("period", "company", "category", "cluster", "currency")}
        labels["service_code"] = row["service"]
        assert registry.get_sample_value("cz_allocation_cost", labels) == float(Decimal(row["amount"])), row
    assert len([k for k in samples(registry, "cz_allocation_cost") if ("period", period) in k]) == len(rows)


def test_worked_example_figures(store):
    registry = registry_for(store.url)
    period = {"period": "2026-10"}
    assert registry.get_sample_value("cz_allocation_cost", {
        **period, "company": "alpha", "service_code": "mobile", "category": "cluster", "cluster": "prod",
        "currency": "USD"}) == 420.0
    assert registry.get_sample_value("cz_bill_cost", {**period, "category": "cluster", "currency": "USD"}) == 900.0
    assert registry.get_sample_value("cz_bill_total_cost", {**period, "currency": "USD"}) == 1600.0
    assert registry.get_sample_value("cz_namespace_memory_share_ratio", {
        **period, "cluster": "prod", "cluster_namespace": "mobile-api", "service_code": "mobile"}) == pytest.approx(0.6)
    assert registry.get_sample_value("cz_namespace_memory_share_ratio", {
        **period, "cluster": "prod", "cluster_namespace": "kube-system", "service_code": ""}) == pytest.approx(0.1)


# The labels the Prometheus Operator attaches to every scraped target.
TARGET_LABELS = {"job", "namespace", "service", "pod", "container", "endpoint", "instance"}


def test_no_family_carries_a_label_the_scrape_gives_its_target(store):
    stats = JobStats()
    stats.record("allocate", outcome="success", duration_seconds=1.0, finished_at=100.0)
    registry = registry_for(store.url, job_stats=stats)
    labels = {name for family in registry.collect() for s in family.samples for name in s.labels}
    assert {"agent_job", "cluster_namespace", "service_code"} <= labels
    assert labels & TARGET_LABELS == set()


@pytest.mark.parametrize("period", EXPOSED)
def test_bill_cost_is_the_report_summed_by_category(store, period):
    registry = registry_for(store.url)
    by_category: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in read_rows(store.runs[period].report):
        by_category[(row["category"], row["currency"])] += Decimal(row["amount"])
    for (category, currency), amount in by_category.items():
        value = registry.get_sample_value("cz_bill_cost", {"period": period, "category": category,
                                                           "currency": currency})
        assert value == pytest.approx(float(amount))
    assert len([k for k in samples(registry, "cz_bill_cost") if ("period", period) in k]) == len(by_category)


@pytest.mark.parametrize("period", EXPOSED)
def test_reconciliation_bill_is_allocated_plus_unallocated(store, period):
    registry = registry_for(store.url)
    rows = read_rows(store.runs[period].report)
    labels = {"period": period, "currency": "USD"}
    unallocated = sum((Decimal(r["amount"]) for r in rows if r["category"] == "unallocated"), Decimal(0))
    allocated = sum((Decimal(r["amount"]) for r in rows if r["category"] != "unallocated"), Decimal(0))
    assert registry.get_sample_value("cz_unallocated_total_cost", labels) == float(unallocated)
    assert registry.get_sample_value("cz_allocated_total_cost", labels) == float(allocated)
    assert registry.get_sample_value("cz_bill_total_cost", labels) == pytest.approx(float(allocated + unallocated))


def test_unallocated_cost_by_reason(store):
    registry = registry_for(store.url)
    assert registry.get_sample_value("cz_unallocated_cost", {
        "period": "2026-09", "reason": "unknown service 'legacy-crm'", "currency": "USD"}) == 7.5
    assert not [k for k in samples(registry, "cz_unallocated_cost") if ("period", "2026-10") in k]


def test_a_run_loaded_with_some_categories_holds_only_their_contributions(store):
    engine = open_store(store.url)
    run_id = store.runs["2026-09"].run_id
    full = load_run(engine, run_id)
    light = load_run(engine, run_id, categories=("unallocated",))
    assert [c for c in full.contributions if c.category == "unallocated"] == light.contributions != []
    assert len(full.contributions) > len(light.contributions)
    assert (light.rows, light.splits, light.summary) == (full.rows, full.splits, full.summary)


def test_bill_rows_run_info_and_timestamp(store):
    registry = registry_for(store.url)
    latest = store.runs["2026-09"]
    assert registry.get_sample_value("cz_bill_rows", {"period": "2026-09", "status": "accepted"}) == 4
    assert registry.get_sample_value("cz_bill_rows", {"period": "2026-09", "status": "rejected"}) == 0
    assert registry.get_sample_value("cz_bill_rows", {"period": "2026-09", "status": "out_of_period"}) == 0
    assert registry.get_sample_value("cz_run_info", {"period": "2026-09", "run_id": str(latest.run_id)}) == 1
    created = next(r for r in list_runs(open_store(store.url)) if r.id == latest.run_id).created_at
    assert registry.get_sample_value("cz_run_timestamp_seconds", {"period": "2026-09"}) == \
        datetime.fromisoformat(created).timestamp()


def test_only_the_last_periods_are_exposed(store):
    registry = registry_for(store.url)
    assert samples(registry, "cz_run_info").keys() == {
        (("period", period), ("run_id", str(store.runs[period].run_id))) for period in EXPOSED}
    assert not [k for name in ("cz_allocation_cost", "cz_bill_cost", "cz_bill_rows", "cz_unallocated_cost")
                for k in samples(registry, name) if ("period", "2026-07") in k]
    wider = registry_for(store.url, periods=4)
    oldest = {"period": "2026-07", "run_id": str(store.runs["2026-07"].run_id)}
    assert wider.get_sample_value("cz_run_info", oldest) == 1


def test_the_latest_run_of_a_period_wins(store):
    registry = registry_for(store.url)
    old = store.superseded
    assert registry.get_sample_value("cz_run_info", {"period": "2026-09", "run_id": str(old.run_id)}) is None
    old_total = sum(Decimal(r["amount"]) for r in read_rows(old.report))
    new_total = sum(Decimal(r["amount"]) for r in read_rows(store.runs["2026-09"].report))
    assert old_total != new_total
    assert registry.get_sample_value("cz_bill_total_cost", {"period": "2026-09", "currency": "USD"}) == float(new_total)


def test_usage_coverage_of_a_live_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    request = RunRequest(bills=[WORKED / "bill.csv"], period="2026-10", rules=load_rules(WORKED / "rules.yaml"),
                         usage=read_usage(WORKED / "usage.csv"), import_options=ImportOptions(period="2026-10"),
                         coverage={"prod": 0.75})
    run_allocation(request, engine=open_store(url), created_at="2026-11-01T00:00:00+00:00")
    registry = registry_for(url)
    assert registry.get_sample_value("cz_usage_coverage_ratio", {"period": "2026-10", "cluster": "prod"}) == 0.75
    assert registry.get_sample_value("cz_run_timestamp_seconds", {"period": "2026-10"}) == \
        datetime.fromisoformat("2026-11-01T00:00:00+00:00").timestamp()


def test_file_usage_has_no_coverage_series(store):
    assert samples(registry_for(store.url), "cz_usage_coverage_ratio") == {}


def test_folding_to_other_bounds_the_series_and_keeps_the_sum(store):
    full = samples(registry_for(store.url), "cz_allocation_cost")
    # Folded series keep their period, category, cluster and currency: one `other` per combination at most.
    combinations = {tuple(p for p in key if p[0] not in ("company", "service_code")) for key in full}
    limit = len(combinations) + 2
    registry = registry_for(store.url, max_series_per_family=limit)
    folded = samples(registry, "cz_allocation_cost")
    assert len(full) > limit >= len(folded)
    assert sum(folded.values()) == pytest.approx(sum(full.values()))
    assert any(dict(k)["company"] == "other" and dict(k)["service_code"] == "other" for k in folded)
    for period in EXPOSED:
        assert sum(v for k, v in folded.items() if ("period", period) in k) == \
            pytest.approx(sum(v for k, v in full.items() if ("period", period) in k))
    families = {family.name: family for family in registry.collect()}
    assert "'other'" in families["cz_allocation_cost"].documentation
    # Families under the budget are untouched.
    assert samples(registry, "cz_bill_rows") == samples(registry_for(store.url), "cz_bill_rows")


def test_fold_keeps_the_largest_by_absolute_value():
    spec = FamilySpec("x", "x", ("period", "company"), ("company",))
    exposed = {("p", "a"): Fraction(10), ("p", "b"): Fraction(-8), ("p", "c"): Fraction(1), ("p", "d"): Fraction(2)}
    assert fold(exposed, spec=spec, limit=3) == {("p", "a"): 10, ("p", "b"): -8, ("p", "other"): 3}
    assert fold(exposed, spec=spec, limit=4) == exposed
    # One `other` series per combination of the labels that are not folded.
    two_periods = {**exposed, ("q", "a"): Fraction(5), ("q", "b"): Fraction(4)}
    folded = fold(two_periods, spec=spec, limit=4)
    assert folded == {("p", "a"): 10, ("p", "b"): -8, ("p", "other"): 3, ("q", "other"): 9}


def test_runs_are_loaded_once_then_cached(store, monkeypatch):
    loaded: list[int] = []
    real_load_run = agent.service.metrics.load_run

    def counting_load_run(engine, run_id, **options):
        loaded.append(run_id)
        return real_load_run(engine, run_id, **options)

    monkeypatch.setattr(agent.service.metrics, "load_run", counting_load_run)
    registry = registry_for(store.url)
    first = generate_latest(registry)
    assert generate_latest(registry) == first
    assert sorted(loaded) == sorted(store.runs[period].run_id for period in EXPOSED)


def test_registering_does_not_read_the_store(monkeypatch):
    def no_store(*_args, **_kwargs):
        raise AssertionError("the store was read at registration")

    monkeypatch.setattr(agent.service.metrics, "list_runs", no_store)
    monkeypatch.setattr(agent.service.metrics, "load_run", no_store)
    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=create_engine("sqlite://"), job_stats=JobStats()))


def test_a_store_error_keeps_the_job_metrics_and_reports_the_store_down(tmp_path, caplog):
    stats = JobStats()
    stats.record("allocate", outcome="failure", duration_seconds=2.5, finished_at=1_700_000_000.0)
    broken = create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'runs.db'}")
    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=broken, job_stats=stats))
    with caplog.at_level(logging.ERROR, logger="agent.service.metrics"):
        exposition = generate_latest(registry).decode()
    assert registry.get_sample_value("cz_agent_store_up") == 0
    assert registry.get_sample_value("cz_agent_runs_total", {"agent_job": "allocate", "outcome": "failure"}) == 1
    assert registry.get_sample_value("cz_agent_run_duration_seconds", {"agent_job": "allocate"}) == 2.5
    assert "cz_allocation_cost" not in exposition
    assert any("run store" in record.getMessage() for record in caplog.records)


def test_store_up_when_the_store_answers(store):
    assert registry_for(store.url).get_sample_value("cz_agent_store_up") == 1


def test_job_stats_families():
    stats = JobStats()
    stats.record("allocate", outcome="success", duration_seconds=1.0, finished_at=100.0)
    stats.record("allocate", outcome="failure", duration_seconds=3.0, finished_at=200.0)
    stats.record("allocate", outcome="success", duration_seconds=2.0, finished_at=300.0)
    stats.record("usage", outcome="failure", duration_seconds=0.5, finished_at=400.0)
    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=create_engine("sqlite://"), job_stats=stats))
    value = registry.get_sample_value
    assert value("cz_agent_runs_total", {"agent_job": "allocate", "outcome": "success"}) == 2
    assert value("cz_agent_runs_total", {"agent_job": "allocate", "outcome": "failure"}) == 1
    assert value("cz_agent_runs_total", {"agent_job": "usage", "outcome": "success"}) == 0
    assert value("cz_agent_last_success_timestamp_seconds", {"agent_job": "allocate"}) == 300.0
    assert value("cz_agent_last_success_timestamp_seconds", {"agent_job": "usage"}) is None
    assert value("cz_agent_run_duration_seconds", {"agent_job": "allocate"}) == 2.0
    assert value("cz_agent_run_duration_seconds", {"agent_job": "usage"}) == 0.5


def test_job_stats_is_thread_safe_and_checks_the_outcome():
    stats = JobStats()

    def record_many() -> None:
        for _ in range(1000):
            stats.record("allocate", outcome="success", duration_seconds=0.1, finished_at=1.0)

    threads = [threading.Thread(target=record_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats.snapshot()[0].runs == {"success": 8000, "failure": 0}
    with pytest.raises(ValueError, match="outcome"):
        stats.record("allocate", outcome="ok", duration_seconds=0.1, finished_at=1.0)


def promtool_check(exposition: bytes) -> subprocess.CompletedProcess[str]:
    if shutil.which(PROMTOOL) is None:
        pytest.fail("promtool is not on PATH: install Debian's `prometheus` package (it ships /usr/bin/promtool) "
                    "to lint the exposition with `promtool check metrics`")
    return subprocess.run([PROMTOOL, "check", "metrics"], input=exposition.decode(), capture_output=True, text=True,
                          check=False, timeout=60)


# promtool comes with the Prometheus that make infra installs.
@pytest.mark.integration
def test_exposition_passes_promtool_check_metrics(store, tmp_path):
    demo = f"sqlite:///{tmp_path / 'demo.db'}"
    allocate(demo, bill=DEMO / "bill-2026-10.csv", period="2026-10", out=tmp_path / "demo.csv",
             rules=DEMO / "rules.yaml", usage=DEMO / "usage-2026-10.csv")
    # A bill of the current month, whose month-end forecast is exposed too.
    month = str(Period.of(datetime.now(UTC)))
    current = tmp_path / f"bill-{month}.csv"
    current.write_text(f"billingCycle,cz_container_bill,unblendedCost,currency\n{month},search,12.50,USD\n")
    allocate(demo, bill=current, period=month, out=tmp_path / "current.csv", rules=DEMO / "rules.yaml",
             usage=DEMO / "usage-2026-10.csv")
    stats = JobStats()
    stats.record("allocate", outcome="success", duration_seconds=1.25, finished_at=1_700_000_000.0)
    demo_budgets = load_rules(DEMO / "rules.yaml").budgets
    assert demo_budgets.companies and demo_budgets.services
    for url, options in ((store.url, {}), (store.url, {"max_series_per_family": 16}),
                         (demo, {"budgets": lambda: demo_budgets})):
        exposition = generate_latest(registry_for(url, job_stats=stats, **options))
        assert b"cz_allocation_cost{" in exposition
        assert (b'cz_budget_amount{company="acme",currency="USD",scope="company",service_code=""}' in exposition) == (
            url == demo)
        assert (b'cz_allocation_forecast_upper_cost{' in exposition) == (url == demo)
        checked = promtool_check(exposition)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_follower_exposes_its_jobs_but_not_the_store_figures_so_replicas_count_the_bill_once(store):
    leading = [False]
    stats = JobStats()
    stats.record("import", outcome="success", duration_seconds=0.5, finished_at=1_790_000_000.0)
    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=open_store(store.url), job_stats=stats,
                                          exposes_runs=lambda: leading[0]))
    follower = {family.name for family in registry.collect()}
    assert follower == {"cz_agent_runs", "cz_agent_last_success_timestamp_seconds", "cz_agent_run_duration_seconds"}
    leading[0] = True
    leader = {family.name for family in registry.collect()}
    assert {"cz_allocation_cost", "cz_bill_total_cost", "cz_agent_store_up"} <= leader
    assert samples(registry, "cz_bill_total_cost") == samples(registry_for(store.url), "cz_bill_total_cost")


def test_budgets_are_exposed_per_company_and_per_service_as_the_rules_give_them_at_each_scrape(store):
    budgets = [Budgets(companies={"alpha": Budget(amount=Decimal("20000"), currency="USD")},
                       services={"mobile": Budget(amount=Decimal("5000.25"), currency="EUR")})]
    registry = registry_for(store.url, budgets=lambda: budgets[0])
    assert samples(registry, "cz_budget_amount") == {
        (("company", "alpha"), ("currency", "USD"), ("scope", "company"), ("service_code", "")): 20000.0,
        (("company", ""), ("currency", "EUR"), ("scope", "service"), ("service_code", "mobile")): 5000.25,
    }
    budgets[0] = Budgets(companies={"beta": Budget(amount=Decimal("7"), currency="USD")})
    assert samples(registry, "cz_budget_amount") == {
        (("company", "beta"), ("currency", "USD"), ("scope", "company"), ("service_code", "")): 7.0}


def test_budgets_are_exposed_by_the_leader_only_even_while_the_store_is_down(tmp_path):
    leading = [False]
    budgets = Budgets(companies={"alpha": Budget(amount=Decimal("100"), currency="USD")})
    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'runs.db'}"),
                                          job_stats=JobStats(), exposes_runs=lambda: leading[0],
                                          budgets=lambda: budgets))
    budget = {"scope": "company", "company": "alpha", "service_code": "", "currency": "USD"}
    assert registry.get_sample_value("cz_budget_amount", budget) is None
    leading[0] = True
    assert registry.get_sample_value("cz_budget_amount", budget) == 100
    assert registry.get_sample_value("cz_agent_store_up") == 0
