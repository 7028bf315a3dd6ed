"""The /metrics view of the stored runs: a prometheus_client Collector that reads the store at each scrape."""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from sqlalchemy import Engine

from agent.core.model import NO_COMPANY, RunSummary, StoredRun
from agent.core.namespaces import namespace_rows
from agent.core.periods import Period
from agent.core.rules import Budgets
from agent.errors import StoreError
from agent.outputs.forecast import PeriodForecast, period_forecast
from agent.store.runs import list_runs, load_run

log = logging.getLogger(__name__)

OUTCOMES = ("success", "failure")
OTHER = "other"
ROW_STATUSES = ("accepted", "rejected", "out_of_period")
# The categories of cluster cost, split by namespace.
NAMESPACE_CATEGORIES = ("cluster", "idle")
# The only contributions the run families read (cz_unallocated_cost, cz_allocation_namespace_cost): a run's
# others are not loaded. Idle capacity is in both: a namespace of its own, carried by no company under
# `idle: unallocated`.
RUN_CATEGORIES = ("unallocated", *NAMESPACE_CATEGORIES)
NAMESPACE_FAMILY = "cz_allocation_namespace_cost"

# label tuple -> exact value; converted to float only when the family is emitted.
Samples = dict[tuple[str, ...], Fraction]


# ---------------------------------------------------------------------------------------------- job stats


@dataclass
class _JobRecord:
    runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    last_success_timestamp: float | None = None
    last_duration_seconds: float | None = None


@dataclass(frozen=True)
class JobSnapshot:
    job: str
    runs: dict[str, int]
    last_success_timestamp: float | None
    last_duration_seconds: float | None


class JobStats:
    """Thread-safe record of the service's jobs: runs by outcome, last success, last duration."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _JobRecord] = {}

    def record(self, job: str, *, outcome: str, duration_seconds: float, finished_at: float) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"job outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        with self._lock:
            record = self._jobs.setdefault(job, _JobRecord())
            record.runs[outcome] += 1
            record.last_duration_seconds = duration_seconds
            if outcome == "success":
                record.last_success_timestamp = finished_at

    def snapshot(self) -> list[JobSnapshot]:
        with self._lock:
            return [JobSnapshot(job=job, runs=dict(r.runs), last_success_timestamp=r.last_success_timestamp,
                                last_duration_seconds=r.last_duration_seconds)
                    for job, r in sorted(self._jobs.items())]


def job_families(stats: JobStats) -> list[Metric]:
    runs = CounterMetricFamily("cz_agent_runs_total", "Runs of each agent job by outcome (success|failure).",
                               labels=["agent_job", "outcome"])
    last_success = GaugeMetricFamily("cz_agent_last_success_timestamp_seconds",
                                     "Unix time the job last finished successfully.", labels=["agent_job"])
    duration = GaugeMetricFamily("cz_agent_run_duration_seconds", "Duration of the job's last run, in seconds.",
                                 labels=["agent_job"])
    for job in stats.snapshot():
        for outcome in OUTCOMES:
            runs.add_metric([job.job, outcome], job.runs[outcome])
        if job.last_success_timestamp is not None:
            last_success.add_metric([job.job], job.last_success_timestamp)
        if job.last_duration_seconds is not None:
            duration.add_metric([job.job], job.last_duration_seconds)
    return [runs, last_success, duration]


def store_up_family(up: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily("cz_agent_store_up", "1 when the last scrape could read the run store, else 0.",
                             value=1 if up else 0)


def budget_family(budgets: Budgets) -> GaugeMetricFamily:
    """The monthly budgets of the rules the agent runs with, one series per company or service."""
    family = GaugeMetricFamily("cz_budget_amount", "Monthly budget of the rules: a company's (scope=\"company\", "
                               "service_code empty) or a service's (scope=\"service\", company empty).",
                               labels=["scope", "company", "service_code", "currency"])
    for company, budget in sorted(budgets.companies.items()):
        _add_sample(family, ("company", company, "", budget.currency), Fraction(budget.amount))
    for service, budget in sorted(budgets.services.items()):
        _add_sample(family, ("service", "", service, budget.currency), Fraction(budget.amount))
    return family


# ------------------------------------------------------------------------------------------ run families


@dataclass(frozen=True)
class FamilySpec:
    name: str
    help: str
    labels: tuple[str, ...]
    # High-cardinality labels set to `other` when the family is over its series budget.
    foldable: tuple[str, ...] = ()
    # Labels folded alone first; the whole of `foldable` only when that is still over the budget.
    fold_first: tuple[str, ...] = ()


# No label here or in job_families is one the scrape attaches to its target (job, namespace, service, pod,
# container, endpoint, instance): the Prometheus Operator would rename it `exported_<name>`, or, with honorLabels,
# drop the target's own. Hence agent_job, cluster_namespace and service_code.
SPECS = (
    FamilySpec("cz_allocation_cost", "Allocated cost of a report row of the period's latest run.",
               ("period", "company", "service_code", "category", "cluster", "currency"), ("company", "service_code")),
    FamilySpec(NAMESPACE_FAMILY, "Cluster cost (categories cluster and idle) of a report row of the period's "
               "latest run, by the namespace whose usage share brought it (__idle__ for idle capacity); rounded so "
               "that a row's namespaces add up to it.",
               ("period", "company", "service_code", "cluster", "cluster_namespace", "currency"),
               ("company", "service_code", "cluster_namespace"), fold_first=("cluster_namespace",)),
    FamilySpec("cz_bill_cost", "Report amounts of the period's latest run summed by category.",
               ("period", "category", "currency")),
    FamilySpec("cz_bill_total_cost", "The period's accepted bill, rounded (= allocated + unallocated).",
               ("period", "currency")),
    FamilySpec("cz_allocated_total_cost", "Cost of the period allocated to companies (all but what no company "
               "carries).", ("period", "currency")),
    FamilySpec("cz_unallocated_total_cost", "Cost of the period left unallocated.", ("period", "currency")),
    FamilySpec("cz_unallocated_cost", "Exact unallocated cost of the period by reason.",
               ("period", "reason", "currency"), ("reason",)),
    FamilySpec("cz_namespace_memory_share_ratio", "A namespace's share of its cluster's usage over the period "
               "(memory byte-seconds, or the cluster's usage_basis); service_code is empty when the namespace maps "
               "to none.",
               ("period", "cluster", "cluster_namespace", "service_code"), ("cluster_namespace", "service_code")),
    FamilySpec("cz_usage_coverage_ratio", "Fraction of the period the cluster's usage data covers (live runs).",
               ("period", "cluster")),
    FamilySpec("cz_bill_rows", "Bill rows of the period's latest run by status.", ("period", "status")),
    FamilySpec("cz_bill_stray_rows", "Lines of a period made only of a few stray rows of bills whose lines are in "
               "other periods (0 for a real bill).", ("period",)),
    FamilySpec("cz_run_info", "The run whose figures are exposed for the period (value always 1).",
               ("period", "run_id")),
    FamilySpec("cz_run_timestamp_seconds", "Unix time the period's exposed run was made.", ("period",)),
)


# The bill split by workspace and API key: bounded per period (top N plus `other`), not per family.
SPLIT_SPECS = (
    FamilySpec("cz_workspace_cost", "The period's accepted bill by workspace (\"(none)\" for lines without one).",
               ("period", "workspace", "currency"), ("workspace",)),
    FamilySpec("cz_api_key_cost", "The period's accepted bill by workspace and API key (\"(none)\" for lines "
               "without one).", ("period", "workspace", "api_key", "currency"), ("workspace", "api_key")),
)


# The month-end forecast of the open period (the month today is in, UTC), from its latest run: agent.core.forecast.
_FORECAST_LABELS = ("period", "company", "service_code", "category", "currency")
FORECAST_SPECS = (
    FamilySpec("cz_allocation_forecast_cost", "Expected month-end cost of the open period (the current UTC month) "
               "from its bill so far, by company, service and category.", _FORECAST_LABELS,
               ("company", "service_code")),
    FamilySpec("cz_allocation_forecast_lower_cost", "Lower bound of the open period's month-end cost (the range holds "
               "the remaining days' noise and one more level change).", _FORECAST_LABELS, ("company", "service_code")),
    FamilySpec("cz_allocation_forecast_upper_cost", "Upper bound of the open period's month-end cost (the range holds "
               "the remaining days' noise and one more level change).", _FORECAST_LABELS, ("company", "service_code")),
)


def forecast_samples(forecast: PeriodForecast) -> dict[str, Samples]:
    """The forecast families' samples: expected, lower and upper, by the FORECAST_SPECS labels."""
    bounds = {"cz_allocation_forecast_cost": "expected", "cz_allocation_forecast_lower_cost": "lower",
              "cz_allocation_forecast_upper_cost": "upper"}
    return {name: {_interned(r.period, r.company, r.service, r.category, r.currency): Fraction(getattr(r, bound))
                   for r in forecast.rows}
            for name, bound in bounds.items()}


def run_samples(stored: StoredRun) -> dict[str, Samples]:
    """Every run family's samples for one stored run (runs are immutable, so this is cached by run id)."""
    summary = stored.summary
    period = summary.period
    manifest = summary.manifest
    return {
        "cz_allocation_cost": {_interned(period, r.company, r.service, r.category, r.cluster, r.currency):
                               Fraction(r.amount) for r in stored.rows},
        NAMESPACE_FAMILY: _namespace_costs(stored),
        "cz_bill_cost": _summed(((period, r.category, r.currency), r.amount) for r in stored.rows),
        **_reconciliation(summary),
        "cz_unallocated_cost": _summed(((period, c.reason, c.currency), c.amount)
                                       for c in stored.contributions if c.company == NO_COMPANY),
        "cz_namespace_memory_share_ratio": _namespace_shares(summary),
        "cz_usage_coverage_ratio": {(period, cluster): Fraction(ratio) for cluster, ratio
                                    in sorted(((manifest.usage and manifest.usage.coverage) or {}).items())},
        "cz_bill_rows": {(period, status): Fraction(manifest.rows.count(status)) for status in ROW_STATUSES},
        "cz_bill_stray_rows": {(period,): Fraction(manifest.rows.accepted if manifest.stray_rows() else 0)},
        "cz_run_info": {(period, str(summary.id)): Fraction(1)},
        "cz_run_timestamp_seconds": {(period,): Fraction(_timestamp(summary.created_at))},
        "cz_workspace_cost": _summed(((period, t.workspace, t.currency), t.amount) for t in stored.splits),
        "cz_api_key_cost": _summed(((period, t.workspace, t.api_key, t.currency), t.amount) for t in stored.splits),
    }


def _interned(*labels: str) -> tuple[str, ...]:
    # Each row read from the store brings its own copy of every label: one string per name is kept instead.
    return tuple(map(sys.intern, labels))


def _summed(pairs: Iterable[tuple[tuple[str, ...], Decimal | Fraction]]) -> Samples:
    sums: Samples = defaultdict(Fraction)
    for labels, amount in pairs:
        sums[labels] += Fraction(amount)
    return dict(sums)


def _namespace_costs(stored: StoredRun) -> Samples:
    cluster_rows = [row for row in stored.rows if row.category in NAMESPACE_CATEGORIES]
    cluster_pieces = (c for c in stored.contributions if c.category in NAMESPACE_CATEGORIES)
    return {_interned(r.period, r.company, r.service, r.cluster, r.namespace, r.currency): Fraction(r.amount)
            for r in namespace_rows(cluster_rows, cluster_pieces)}


def _reconciliation(summary: RunSummary) -> dict[str, Samples]:
    parts = {"cz_bill_total_cost": "bill_rounded", "cz_allocated_total_cost": "allocated",
             "cz_unallocated_total_cost": "unallocated"}
    totals = summary.manifest.totals
    return {name: {(summary.period, currency): Fraction(getattr(amounts, key))
                   for currency, amounts in sorted(totals.items())}
            for name, key in parts.items()}


def _namespace_shares(summary: RunSummary) -> Samples:
    services = summary.manifest.namespace_map
    return {(summary.period, cluster, namespace, services.get(cluster, {}).get(namespace) or ""): share
            for cluster, shares in sorted(summary.manifest.namespace_shares.items())
            for namespace, share in sorted(shares.items())}


def _timestamp(created_at: str) -> float:
    moment = datetime.fromisoformat(created_at)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


# ---------------------------------------------------------------------------------------------- folding


def fold(samples: Samples, *, spec: FamilySpec, limit: int) -> Samples:
    """At most `limit` series (when the non-foldable labels allow it): the largest by absolute value are
    kept, the rest summed into series whose foldable labels are `other`, so the family's sum is unchanged. A
    spec's `fold_first` labels are folded alone when that is enough."""
    if len(samples) <= limit or not spec.foldable:
        return samples
    if spec.fold_first:
        folded = fold(samples, spec=replace(spec, foldable=spec.fold_first, fold_first=()), limit=limit)
        if len(folded) <= limit:
            return folded
    ranked = sorted(samples.items(), key=lambda item: (-abs(item[1]), item[0]))
    positions = [spec.labels.index(name) for name in spec.foldable]
    kept = limit - 1
    while True:
        groups = {_folded_key(key, positions) for key, _ in ranked[kept:]}
        if kept + len(groups) <= limit or kept == 0:
            break
        kept = max(0, limit - len(groups))
    result = dict(ranked[:kept])
    for key, value in ranked[kept:]:
        folded = _folded_key(key, positions)
        result[folded] = result.get(folded, Fraction(0)) + value
    return result


def _folded_key(key: tuple[str, ...], positions: list[int]) -> tuple[str, ...]:
    return tuple(OTHER if i in positions else value for i, value in enumerate(key))


def _gauge(spec: FamilySpec, samples: Samples, *, limit: int) -> RunFamily:
    help_text = spec.help
    if spec.fold_first:
        help_text += (f" At most {limit} series: the smallest by absolute value are summed into series whose "
                      f"{' and '.join(spec.fold_first)} labels are {OTHER!r}, or, when that is still too many, whose "
                      f"{', '.join(spec.foldable)} labels are.")
    elif spec.foldable:
        help_text += (f" At most {limit} series: the smallest by absolute value are summed into series whose "
                      f"{' and '.join(spec.foldable)} labels are {OTHER!r}.")
    family = RunFamily(spec.name, help_text, labels=list(spec.labels))
    for labels, value in fold(samples, spec=spec, limit=limit).items():
        _add_sample(family, labels, value)
    return family


def _add_sample(family: GaugeMetricFamily, labels: tuple[str, ...], value: Fraction) -> None:
    # The exposition format is float64: exact amounts become floats here, for display, and nowhere else.
    family.add_metric(list(labels), float(value))


# ------------------------------------------------------------------------------------------- exposition


class RunFamily(GaugeMetricFamily):
    """A family of the exposed runs. Runs are immutable, so it is built once per set of exposed runs and shared
    by the scrapes until that set changes: read it, never add to it."""

    @functools.cached_property
    def exposition(self) -> bytes:
        # Rendered at most once: formatting a sample costs far more than reading the store's runs list.
        return render_gauge(self)


def render_gauge(family: GaugeMetricFamily) -> bytes:
    """The family as generate_latest writes it (the tests compare them byte for byte), three times faster:
    our names are valid, so the per-sample checks and escaping of label names are left out."""
    help_text = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
    lines = [f"# HELP {family.name} {help_text}\n", f"# TYPE {family.name} gauge\n"]
    for sample in family.samples:
        labels = ",".join(f'{name}="{_label_value(value)}"' for name, value in sorted(sample.labels.items()))
        lines.append(f"{sample.name}{{{labels}}} {floatToGoString(sample.value)}\n" if labels
                     else f"{sample.name} {floatToGoString(sample.value)}\n")
    return "".join(lines).encode()


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass(frozen=True)
class _Families:
    """The smallest collector: what generate_latest needs to render families already built."""

    families: list[Metric]

    def collect(self) -> list[Metric]:
        return self.families


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in the text format, as generate_latest writes it, reusing the text of run families."""
    return b"".join(family.exposition if isinstance(family, RunFamily) else generate_latest(_Families([family]))
                    for family in registry.collect())


# -------------------------------------------------------------------------------------------- collector


class AllocationCollector:
    """Exposes the latest run of each of the last `periods` periods, read from the store at each scrape, and the
    budgets `budgets` gives at each scrape (those of the rules the agent last read)."""

    def __init__(self, *, engine: Engine, job_stats: JobStats, periods: int = 3,
                 max_series_per_family: int = 10000, max_namespace_series: int = 2000, split_top: int = 20,
                 exposes_runs: Callable[[], bool] = lambda: True, budgets: Callable[[], Budgets] = Budgets) -> None:
        if periods < 1 or max_series_per_family < 1 or max_namespace_series < 1:
            raise ValueError("periods, max_series_per_family and max_namespace_series must be at least 1")
        # With several replicas only the leader exposes the store's figures and the budgets: a dashboard or alert
        # that sums over pods then counts the bill once. Every replica exposes its own jobs.
        self._exposes_runs = exposes_runs
        self._budgets = budgets
        self._engine = engine
        self._job_stats = job_stats
        self._periods = periods
        self._limit = max_series_per_family
        self._limits = {NAMESPACE_FAMILY: max_namespace_series}
        self._split_top = split_top
        self._lock = threading.Lock()
        self._cache: dict[int, dict[str, Samples]] = {}
        # The ids of the exposed runs, the day, and their families: rebuilt when a new run is exposed or one goes,
        # and each day (the forecast).
        self._families: tuple[tuple[tuple[int, ...], date], list[RunFamily]] | None = None

    def describe(self) -> list[Metric]:
        """The families' names without touching the store, so registering stays cheap."""
        return [*job_families(JobStats()), budget_family(Budgets()), store_up_family(True),
                *(GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))
                  for spec in SPECS + SPLIT_SPECS + FORECAST_SPECS)]

    def collect(self) -> Iterator[Metric]:
        yield from job_families(self._job_stats)
        if not self._exposes_runs():
            return
        yield budget_family(self._budgets())
        try:
            families = self._run_families()
        except StoreError as e:
            log.error("metrics scrape: cannot read the run store: %s", e)
            yield store_up_family(False)
            return
        yield store_up_family(True)
        yield from families

    def _run_families(self) -> list[RunFamily]:
        found = list_runs(self._engine)
        latest = latest_runs(found, periods=self._periods)
        # The forecast moves with the day as well as with the runs.
        exposed = (tuple(run.id for run in latest), datetime.now(UTC).date())
        with self._lock:
            if self._families is None or self._families[0] != exposed:
                self._families = (exposed, self._build_families(self._exposed_samples(latest),
                                                                self._forecast(found, today=exposed[1])))
            return self._families[1]

    def _forecast(self, found: list[RunSummary], *, today: date) -> dict[str, Samples]:
        """The open period's forecast samples; none when the period has no run yet."""
        newest = newest_by_period(found)
        period = str(Period(today.year, today.month))
        if period not in newest:
            return {spec.name: {} for spec in FORECAST_SPECS}

        def latest(month: str) -> StoredRun | None:
            return load_run(self._engine, newest[month].id) if month in newest else None

        return forecast_samples(period_forecast(period, latest=latest, today=today))

    def _build_families(self, exposed: list[dict[str, Samples]], forecast: dict[str, Samples]) -> list[RunFamily]:
        families = [_gauge(spec, forecast[spec.name], limit=self._limit) for spec in FORECAST_SPECS]
        for spec in SPECS:
            merged = {key: value for per_run in exposed for key, value in per_run[spec.name].items()}
            families.append(_gauge(spec, merged, limit=self._limits.get(spec.name, self._limit)))
        for spec in SPLIT_SPECS:
            # Top N per period plus `other`: each run's series are folded on their own.
            family = RunFamily(spec.name, f"{spec.help} The largest {self._split_top} per period; the rest summed "
                               f"into {OTHER!r}.", labels=list(spec.labels))
            for per_run in exposed:
                for labels, value in fold(per_run[spec.name], spec=spec, limit=self._split_top + 1).items():
                    _add_sample(family, labels, value)
            families.append(family)
        return families

    def _exposed_samples(self, latest: list[RunSummary]) -> list[dict[str, Samples]]:
        # Runs are immutable: only runs not seen before are loaded; runs no longer exposed are dropped.
        cache = {run.id: self._cache.get(run.id)
                 or run_samples(load_run(self._engine, run.id, categories=RUN_CATEGORIES)) for run in latest}
        self._cache = cache
        return [cache[run.id] for run in latest]


def latest_runs(found: list[RunSummary], *, periods: int) -> list[RunSummary]:
    """The newest run of each of the last `periods` periods, newest period first."""
    by_period = newest_by_period(found)
    return [by_period[period] for period in sorted(by_period, reverse=True)[:periods]]


def newest_by_period(found: list[RunSummary]) -> dict[str, RunSummary]:
    """Each period's newest run (the highest id)."""
    by_period: dict[str, RunSummary] = {}
    for run in found:
        if run.period not in by_period or run.id > by_period[run.period].id:
            by_period[run.period] = run
    return by_period
