"""CPU core-seconds, GPU device-seconds and idle capacity from a real Prometheus serving a backfilled month whose
true integrals are known (tests/support/promhistory.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from agent.core.model import IDLE_NAMESPACE, NamespaceUsage
from agent.errors import UsageQueryError
from agent.sources.prom import ClusterUsage, PrometheusTarget, query_usage
from tests.support.faultproxy import HttpFaultProxy, HttpFaults
from tests.support.fixtures_prom import PrometheusServer
from tests.support.promhistory import MONTH_END, MONTH_START

pytestmark = pytest.mark.integration

AFTER_MONTH = MONTH_END + timedelta(days=60)
# Namespaces whose containers live for days: a counter misses at most a scrape interval at each end of a life.
LONG_LIVED = ("kube-system", "mcmp", "ml", "mobile-api")


def measured(server: PrometheusServer, *, cluster: str, resources: tuple[str, ...], idle: bool = False,
             gpu_label_prefix: str = "exported_", start: datetime = MONTH_START,
             end: datetime = MONTH_END) -> ClusterUsage:
    return query_usage(cluster=cluster, target=PrometheusTarget(url=server.url, selector=f'cluster="{cluster}"'),
                       start=start, end=end, resources=resources, idle=idle, gpu_label_prefix=gpu_label_prefix,
                       now=AFTER_MONTH)


def by_namespace(result: ClusterUsage, resource: str) -> dict[str, Decimal]:
    return {record.namespace: record.used(resource) for record in result.usage}


def relative_error(measured_value: Decimal, true_value: Decimal) -> Decimal:
    return abs(measured_value - true_value) / true_value


@pytest.mark.parametrize("cluster", ["prod", "stage"])
def test_cpu_core_seconds_are_within_a_tenth_of_a_percent_of_the_true_integral(
    prometheus_server: PrometheusServer, cluster: str,
) -> None:
    result = measured(prometheus_server, cluster=cluster, resources=("cpu",))
    cpu = by_namespace(result, "cpu")
    true = prometheus_server.history.expected_cpu(cluster=cluster)

    assert set(cpu) == set(true)
    for namespace in set(true) & set(LONG_LIVED):
        assert relative_error(cpu[namespace], true[namespace]) < Decimal("0.001"), namespace
    # A pod of 47 minutes and a namespace deleted mid-month: the scrape interval after a container's last sample is
    # never seen, and Prometheus extrapolates half an interval for it (1/94 of the 47-minute pod's life).
    for namespace in set(true) - set(LONG_LIVED):
        assert relative_error(cpu[namespace], true[namespace]) < Decimal("0.02"), namespace
    assert relative_error(sum(cpu.values()), sum(true.values())) < Decimal("0.001")
    assert all(record.memory_byte_seconds is None and record.gpu_device_seconds is None for record in result.usage)


def test_cpu_counts_the_hour_prometheus_was_down_and_coverage_shows_it(prometheus_server: PrometheusServer) -> None:
    # The stage cluster was not scraped on the 20th from 10:00 to 11:00; its counters kept counting.
    day = (datetime(2026, 9, 20, tzinfo=UTC), datetime(2026, 9, 21, tzinfo=UTC))
    result = measured(prometheus_server, cluster="stage", resources=("cpu",), start=day[0], end=day[1])
    true = prometheus_server.history.expected_cpu(cluster="stage", start=day[0], end=day[1])

    assert relative_error(by_namespace(result, "cpu")["mobile-api"], true["mobile-api"]) < Decimal("0.001")
    assert result.coverage == pytest.approx(23 / 24, abs=1e-12)


def test_cpu_coverage_of_a_period_ending_between_two_of_its_samples_is_at_most_whole(
    prometheus_server: PrometheusServer,
) -> None:
    # The counter's coverage is sampled hourly: a period of 7 minutes holds one such moment, with data, and counts
    # for an hour.
    start = datetime(2026, 9, 12, tzinfo=UTC)
    result = measured(prometheus_server, cluster="prod", resources=("cpu",), start=start,
                      end=start + timedelta(minutes=7))

    assert result.coverage == 1.0
    assert by_namespace(result, "cpu")


@pytest.mark.parametrize(("cluster", "prefix"), [("prod", "exported_"), ("stage", "")])
def test_gpu_device_seconds_are_the_exact_steps_each_namespace_held_its_gpus(
    prometheus_server: PrometheusServer, cluster: str, prefix: str,
) -> None:
    # prod's exporter is scraped without honor_labels (exported_namespace, and a GPU no pod holds), stage's with.
    result = measured(prometheus_server, cluster=cluster, resources=("gpu",), gpu_label_prefix=prefix)

    assert by_namespace(result, "gpu") == prometheus_server.history.expected_gpu(cluster=cluster)


@pytest.mark.parametrize(("cluster", "resource"), [("prod", "memory"), ("stage", "memory"), ("prod", "gpu")])
def test_idle_capacity_is_the_allocatable_capacity_less_the_usage_day_by_day(
    prometheus_server: PrometheusServer, cluster: str, resource: str,
) -> None:
    # prod gains a node on the 10th; stage's allocatable memory drops below its usage for a day.
    result = measured(prometheus_server, cluster=cluster, resources=(resource,), idle=True)
    used = by_namespace(result, resource)

    assert used.pop(IDLE_NAMESPACE) == prometheus_server.history.expected_idle(cluster=cluster, resource=resource)
    assert used == (prometheus_server.expected(cluster=cluster, basis="usage") if resource == "memory" else
                    prometheus_server.history.expected_gpu(cluster=cluster))


def test_idle_cpu_is_within_a_tenth_of_a_percent_of_the_true_integral(prometheus_server: PrometheusServer) -> None:
    result = measured(prometheus_server, cluster="prod", resources=("memory", "cpu"), idle=True)
    idle = next(record for record in result.usage if record.namespace == IDLE_NAMESPACE)

    true = prometheus_server.history.expected_idle(cluster="prod", resource="cpu")
    assert relative_error(idle.cpu_core_seconds, true) < Decimal("0.001")
    assert idle.memory_byte_seconds == prometheus_server.history.expected_idle(cluster="prod", resource="memory")
    assert idle.gpu_device_seconds is None


def test_idle_capacity_without_kube_state_metrics_node_metrics_fails_naming_the_metric(
    prometheus_server: PrometheusServer,
) -> None:
    # stage's nodes offer no GPU: kube-state-metrics has no nvidia_com_gpu series for them.
    with pytest.raises(UsageQueryError) as error:
        measured(prometheus_server, cluster="stage", resources=("gpu",), idle=True, gpu_label_prefix="")

    assert 'kube_node_status_allocatable{resource="nvidia_com_gpu",cluster="stage"}' in str(error.value)
    assert "idle capacity needs kube-state-metrics' node metrics" in str(error.value)


def test_a_blend_measures_each_resource_of_every_namespace(prometheus_server: PrometheusServer) -> None:
    result = measured(prometheus_server, cluster="prod", resources=("memory", "cpu", "gpu"))
    records = {record.namespace: record for record in result.usage}

    assert records["ml"].gpu_device_seconds == prometheus_server.history.expected_gpu(cluster="prod")["ml"]
    # A namespace without GPUs has a zero, not a missing figure: it was measured and held none.
    assert records["mcmp"].gpu_device_seconds == 0
    assert records["mcmp"].memory_byte_seconds == prometheus_server.expected(cluster="prod", basis="usage")["mcmp"]
    assert isinstance(records["mcmp"], NamespaceUsage) and records["mcmp"].cpu_core_seconds > 0


def without_namespace_in_usage_answers(namespace: str) -> Callable[[str, bytes], bytes]:
    """Removes one namespace from the per-namespace usage answers only, as a proxy losing a series would; the
    check's own query (cluster total, or the namespaces alive) comes through whole."""
    def rewrite(path: str, body: bytes) -> bytes:
        if not parse_qs(urlsplit(path).query)["query"][0].startswith(("sum by (namespace)",
                                                                       "sum_over_time((sum by (namespace)")):
            return body
        document = json.loads(body)
        document["data"]["result"] = [s for s in document["data"]["result"] if s["metric"]["namespace"] != namespace]
        return json.dumps(document).encode()
    return rewrite


@pytest.mark.parametrize(("resource", "reason"), [
    ("cpu", "namespace(s) mcmp had cpu samples at its end but no cpu in the answer"),
    ("memory", "its namespaces add up to"),
])
def test_an_answer_that_lost_a_namespace_fails_for_counters_and_gauges(
    prometheus_server: PrometheusServer, resource: str, reason: str,
) -> None:
    day = datetime(2026, 9, 12, tzinfo=UTC)
    with HttpFaultProxy(prometheus_server.url).running() as proxy:
        proxy.set_faults(HttpFaults(rewrite=without_namespace_in_usage_answers("mcmp")))
        with pytest.raises(UsageQueryError) as error:
            query_usage(cluster="prod", target=PrometheusTarget(url=proxy.url, selector='cluster="prod"'),
                        start=day, end=day + timedelta(days=1), resources=(resource,), now=AFTER_MONTH)

    assert f"Prometheus {proxy.url} gave an incomplete answer for the day from 2026-09-12T00:00:00+00:00" \
        in str(error.value)
    assert reason in str(error.value)


def test_a_counter_with_one_sample_at_a_windows_end_is_not_taken_for_a_lost_namespace(
    prometheus_server: PrometheusServer,
) -> None:
    # The batch namespace's only pod starts at 02:00 on the 10th, scraped every minute: a window ending at 02:00:30
    # holds one of its samples, too few for an increase, and one ending at 02:01:30 holds two.
    born = datetime(2026, 9, 10, 2, tzinfo=UTC)
    first = measured(prometheus_server, cluster="prod", resources=("cpu",), start=born - timedelta(hours=1),
                     end=born + timedelta(seconds=30))
    second = measured(prometheus_server, cluster="prod", resources=("cpu",), start=born - timedelta(hours=1),
                      end=born + timedelta(seconds=90))

    assert "batch" not in by_namespace(first, "cpu") and "mcmp" in by_namespace(first, "cpu")
    assert by_namespace(second, "cpu")["batch"] > 0
