"""cz_allocation_namespace_cost over real stored runs: each cluster row of the report by namespace, adding up to it,
and no more series than CZ_AGENT_MAX_NAMESPACE_SERIES, the smallest folded into `other`."""

from __future__ import annotations

import csv
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.service.metrics import AllocationCollector, JobStats
from agent.store.runs import open_store
from tests.service.test_metrics import promtool_check
from tests.support.store import allocate_run

ROOT = Path(__file__).resolve().parents[2]
WORKED = ROOT / "tests" / "data" / "worked"
DEMO = ROOT / "demo"
FAMILY = "cz_allocation_namespace_cost"
ROW_LABELS = ("period", "company", "service_code", "cluster", "currency")


def namespace_samples(url: str, **options: int) -> dict[tuple[tuple[str, str], ...], float]:
    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=open_store(url), job_stats=JobStats(), **options))
    return {tuple(sorted(s.labels.items())): s.value
            for family in registry.collect() for s in family.samples if s.name == FAMILY}


def cluster_rows(report: Path) -> dict[tuple[str, ...], Decimal]:
    with report.open(newline="") as handle:
        return {(r["period"], r["company"], r["service"], r["cluster"], r["currency"]): Decimal(r["amount"])
                for r in csv.DictReader(handle) if r["category"] == "cluster"}


def by_row(found: dict[tuple[tuple[str, str], ...], float]) -> dict[tuple[str, ...], Decimal]:
    sums: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    for key, value in found.items():
        labels = dict(key)
        # Each sample is a rounded amount of two decimals: its float's shortest text is that amount.
        sums[tuple(labels[name] for name in ROW_LABELS)] += Decimal(repr(value))
    return dict(sums)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    directory = tmp_path_factory.mktemp("namespace-metrics")
    url = f"sqlite:///{directory / 'demo.db'}"
    allocate_run(url, bill=DEMO / "bill-2026-10.csv", period="2026-10", out=directory / "demo.csv",
                 rules=DEMO / "rules.yaml", usage=DEMO / "usage-2026-10.csv")
    return url, directory / "demo.csv"


@pytest.fixture(scope="module")
def many_namespaces(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The worked example's bill, its prod cluster run by 30 namespaces of the service mobile (alpha 70%, beta 30%)."""
    directory = tmp_path_factory.mktemp("many-namespaces")
    usage = directory / "usage.csv"
    usage.write_text("cluster,namespace,service,memory_byte_seconds\n"
                     + "".join(f"prod,mobile-{n:02},mobile,{n}\n" for n in range(1, 31)))
    url = f"sqlite:///{directory / 'runs.db'}"
    allocate_run(url, bill=WORKED / "bill.csv", period="2026-10", out=directory / "report.csv", usage=usage)
    return url, directory / "report.csv"


def test_each_cluster_row_of_the_demo_is_the_sum_of_its_namespaces(demo):
    url, report = demo
    found = namespace_samples(url)
    assert by_row(found) == cluster_rows(report)
    labels = [dict(key) for key in found]
    payments = {series["cluster_namespace"] for series in labels
                if (series["company"], series["service_code"], series["cluster"]) == ("acme", "payments", "prod")}
    assert payments == {"payments-api", "payments-legacy"}


@pytest.mark.parametrize("limit", [10, 45])
def test_over_the_bound_the_smallest_namespaces_fold_into_other_of_their_row(many_namespaces, limit):
    url, report = many_namespaces
    full = namespace_samples(url)
    assert len(full) == 60
    folded = namespace_samples(url, max_namespace_series=limit)
    assert len(folded) == limit
    assert by_row(folded) == by_row(full) == cluster_rows(report)
    others = {dict(key)["company"] for key in folded if dict(key)["cluster_namespace"] == "other"}
    assert others == {"alpha", "beta"}
    # The largest namespaces keep their own series.
    assert (("cluster", "prod"), ("cluster_namespace", "mobile-30"), ("company", "alpha"), ("currency", "USD"),
            ("period", "2026-10"), ("service_code", "mobile")) in folded


def test_a_bound_below_the_rows_folds_company_and_service_too(demo):
    url, report = demo
    folded = namespace_samples(url, max_namespace_series=5)
    assert len(folded) <= 5
    assert {dict(key)["company"] for key in folded if dict(key)["cluster_namespace"] == "other"} == {"other"}
    total = sum(cluster_rows(report).values(), Decimal(0))
    assert sum(folded.values()) == pytest.approx(float(total))


# promtool comes with the Prometheus that make infra installs.
@pytest.mark.integration
@pytest.mark.parametrize("limit", [2000, 12])
def test_the_family_passes_promtool_check_metrics(demo, limit):
    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=open_store(demo[0]), job_stats=JobStats(),
                                          max_namespace_series=limit))
    exposition = generate_latest(registry)
    assert f"{FAMILY}{{".encode() in exposition
    checked = promtool_check(exposition)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.fixture(scope="module")
def idle_unallocated(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The demo with each cluster's idle capacity as a namespace carried by no company (`idle: unallocated`)."""
    directory = tmp_path_factory.mktemp("idle-metrics")
    rules, usage = directory / "rules.yaml", directory / "usage.csv"
    rules.write_text((DEMO / "rules.yaml").read_text().replace("\nidle: spread\n", "\nidle: unallocated\n"))
    usage.write_text((DEMO / "usage-2026-10.csv").read_text()
                     + "".join(f"{cluster},__idle__,,{10**17}\n" for cluster in ("prod", "stage", "data")))
    url = f"sqlite:///{directory / 'runs.db'}"
    allocate_run(url, bill=DEMO / "bill-2026-10.csv", period="2026-10", out=directory / "report.csv", rules=rules,
                 usage=usage)
    return url, directory / "report.csv"


def test_idle_capacity_is_a_namespace_of_the_family_and_an_unallocated_reason(idle_unallocated):
    url, report = idle_unallocated
    with report.open(newline="") as handle:
        idle_rows = {r["cluster"]: Decimal(r["amount"]) for r in csv.DictReader(handle) if r["category"] == "idle"}
    found = namespace_samples(url)
    idle = {dict(key)["cluster"]: Decimal(repr(value)) for key, value in found.items()
            if dict(key)["cluster_namespace"] == "__idle__"}
    assert idle == idle_rows and set(idle) == {"prod", "stage", "data"}
    assert all(dict(key)["company"] == "" for key in found if dict(key)["cluster_namespace"] == "__idle__")

    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=open_store(url), job_stats=JobStats()))
    samples = {s.name: s for family in registry.collect() for s in family.samples
               if s.labels.get("reason") == "idle capacity of cluster 'prod'"}
    assert samples["cz_unallocated_cost"].value == pytest.approx(float(idle_rows["prod"]), abs=0.005)
    unallocated_total = next(s.value for family in registry.collect() for s in family.samples
                             if s.name == "cz_unallocated_total_cost")
    assert Decimal(repr(unallocated_total)) >= sum(idle_rows.values())
