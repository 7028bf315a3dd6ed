"""Usage per namespace from Prometheus (memory byte-seconds, CPU core-seconds, GPU device-seconds, and the
cluster's idle capacity): the only module that talks to Prometheus.

The integrals are computed by the server, one instant query per day of the period so that no query touches
more than a day of samples. A gauge (memory, GPUs held, a node's allocatable capacity) is sampled at a fixed
resolution (`step_seconds`) by a subquery and summed: step `s` holds the last sample in (s - step, s] and counts
for [s, s + step); the period's steps are the multiples of the step in [start, end). CPU is a counter: its
increase over each day, which counts the seconds between scrapes too.

Each day's per-namespace answer is checked by a second query, and an answer carrying warnings (a partial
response) is refused: a usage source that answers only in part must fail the run, never shift cost between
namespaces unnoticed. For a gauge the check is the cluster total, computed without grouping by namespace. For a
counter a total would be a second full pass over the day's samples (its increase reads them all), so the check is
the namespaces still counting at the window's end (a few minutes of samples): each must be in the answer.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from pydantic import SecretStr
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase, HTTPBasicAuth
from urllib3.util.retry import Retry

from agent.core.model import IDLE_NAMESPACE, RESOURCE_UNITS, NamespaceUsage
from agent.errors import UsageQueryError

log = logging.getLogger(__name__)

USAGE_SELECTOR = 'container_memory_working_set_bytes{container!="",pod!=""%s}'
REQUEST_SELECTOR = 'kube_pod_container_resource_requests{resource="memory"%s}'
CPU_COUNTER = 'container_cpu_usage_seconds_total{container!="",pod!=""%s}'
# One series per GPU, carrying the pod that holds it (DCGM exporter with DCGM_EXPORTER_KUBERNETES=true).
GPU_METRIC = "DCGM_FI_DEV_GPU_UTIL"
CAPACITY_SELECTOR = 'kube_node_status_allocatable{resource="%s"%s}'
# kube-state-metrics' names of the resources a node offers.
CAPACITY_RESOURCES = {"memory": "memory", "cpu": "cpu", "gpu": "nvidia_com_gpu"}
BASES = ("usage", "request", "max")
DAY_MS = 86_400_000
RETRY_ON_STATUS = (429, 500, 502, 503, 504)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Relative gap allowed between the namespaces' sum and the cluster total: both are float sums on the
# server, exact below 2**53 bytes and only rounded beyond, so a missing namespace stands far above it.
TOTAL_TOLERANCE = Decimal("1e-9")
# An instant vector per namespace is a few hundred bytes; far more than this is not a usage answer.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024
# Days queried at once. Prometheus evaluates a query on one core and runs up to 20 at a time by default.
WINDOW_CONCURRENCY = 2
# How far back from a window's end a counter's series must have two samples to be sure of an increase in the answer.
ALIVE_LOOKBACK_MS = 5 * 60 * 1000
# How often a counter's coverage is sampled: whether the cluster had a sample within the step before each such
# moment. A counter loses nothing between its samples (its increase spans a gap), so its coverage only tells whether
# the cluster was scraped, and asking it at every step would cost twice the counter's own integral.
COUNTER_COVERAGE_SECONDS = 3600


@dataclass(frozen=True)
class PrometheusTarget:
    """Where one cluster's usage lives and how to reach it."""

    url: str
    selector: str = ""  # extra label matchers, e.g. 'cluster="prod"' on a Thanos/Mimir shared by clusters
    bearer_token_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    timeout_seconds: float = 60
    retries: int = 3
    backoff_seconds: float = 0.5  # first retry delay; doubles at each further retry


@dataclass(frozen=True)
class ClusterUsage:
    """One cluster's usage per namespace over the period, and how complete the data was."""

    cluster: str
    usage: list[NamespaceUsage]  # service=None: the namespace map comes from Kubernetes
    # Fraction of the period with any data, 0..1, counted at each resource's coverage resolution (a gauge's step, a
    # counter's COUNTER_COVERAGE_SECONDS); the least of the resources.
    coverage: float


@dataclass(frozen=True)
class Measure:
    """How one quantity's use over a window is asked of Prometheus: per namespace, and for the whole cluster (its
    steps with data, and its total or the namespaces alive at the end, as `cluster_aggregates` answers), in units of
    `scale` seconds; the steps with data are counted every `coverage_seconds`."""

    name: str
    per_namespace: Callable[[int], str]  # window length in ms -> PromQL
    aggregates: Callable[[int], str]
    scale: int
    coverage_seconds: int


@dataclass(frozen=True)
class _WindowAnswer:
    """One day's answers, checked: each namespace's unit-steps, the cluster's, and its steps with data."""

    namespaces: dict[str, Decimal]
    total: Decimal
    steps: Decimal


def query_usage(
    *,
    cluster: str,
    target: PrometheusTarget,
    start: datetime,
    end: datetime,
    basis: str = "usage",
    resources: tuple[str, ...] = ("memory",),
    idle: bool = False,
    step_seconds: int = 60,
    gpu_label_prefix: str = "exported_",
    now: datetime | None = None,
) -> ClusterUsage:
    """Each of `resources` per namespace of `cluster` over [start, min(end, now)) (memory as `basis` says), and with
    `idle` a row for the cluster's idle capacity: its allocatable capacity less the namespaces' usage, per day."""
    if basis not in BASES:
        raise ValueError(f"unknown usage basis {basis!r}; expected one of {', '.join(BASES)}")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("the period's start and end must be timezone-aware (UTC) datetimes")
    start_ms = _milliseconds(start)
    end_ms = max(start_ms, _milliseconds(min(end, now or datetime.now(UTC))))
    used: dict[str, dict[str, Decimal]] = {}
    coverages: list[float] = []
    period_seconds = Decimal(_steps_in(start_ms, end_ms, step_seconds * 1000) * step_seconds)
    with requests.Session() as session:
        server = _server(target, session)
        for resource in resources:
            measure = resource_measure(resource, basis=basis, selector=target.selector, step_seconds=step_seconds,
                                       gpu_label_prefix=gpu_label_prefix)
            capacity = capacity_measure(resource, selector=target.selector, step_seconds=step_seconds) if idle else None
            amounts, covered_seconds = _sum_windows(server, measure, capacity, start_ms=start_ms, end_ms=end_ms)
            used[resource] = amounts
            # A counter's coarser steps may reach past a period that ends between two of them.
            coverages.append(float(min(covered_seconds / period_seconds, Decimal(1))) if period_seconds else 0.0)
    namespaces = sorted({namespace for amounts in used.values() for namespace in amounts})
    unmeasured = dict.fromkeys(RESOURCE_UNITS.values())
    usage = [
        NamespaceUsage(cluster=cluster, namespace=namespace,
                       **{**unmeasured, **{RESOURCE_UNITS[r]: used[r].get(namespace, Decimal(0)) for r in resources}})
        for namespace in namespaces
    ]
    return ClusterUsage(cluster=cluster, usage=usage, coverage=min(coverages, default=0.0))


def resource_measure(resource: str, *, basis: str, selector: str, step_seconds: int,
                     gpu_label_prefix: str = "exported_") -> Measure:
    """Memory (byte-steps of `basis`), CPU (core-seconds used) or GPUs (device-steps held) per namespace."""
    if resource == "memory":
        return gauge_measure("memory", namespace_memory_promql(basis, selector=selector, step_seconds=step_seconds),
                             cluster_memory_promql(basis, selector=selector, step_seconds=step_seconds),
                             step_seconds=step_seconds)
    if resource == "gpu":
        held = gpus_held_promql(selector=selector, step_seconds=step_seconds, label_prefix=gpu_label_prefix)
        return gauge_measure("gpu", namespace_gpus_promql(held, label_prefix=gpu_label_prefix), f"count({held})",
                             step_seconds=step_seconds)
    counter = CPU_COUNTER % _matchers(selector)
    coverage_seconds = max(step_seconds, COUNTER_COVERAGE_SECONDS)
    return Measure(
        name="cpu",
        per_namespace=lambda window_ms: f"sum by (namespace) (increase({counter}[{window_ms}ms]))",
        # The coverage's moments with a sample, and the namespaces whose increase the answer must hold.
        aggregates=lambda window_ms: cluster_aggregates(
            steps=window_query("count_over_time", f"sum(last_over_time({counter}{_lookback(step_seconds)}))",
                               window_ms=window_ms, step_seconds=coverage_seconds),
            alive=f"group by (namespace) (count_over_time({counter}[{min(window_ms, ALIVE_LOOKBACK_MS)}ms]) > 1)"),
        scale=1,
        coverage_seconds=coverage_seconds,
    )


def capacity_measure(resource: str, *, selector: str, step_seconds: int) -> Measure:
    """The cluster's allocatable capacity of a resource, summed over its nodes (only its aggregates are asked)."""
    nodes = CAPACITY_SELECTOR % (CAPACITY_RESOURCES[resource], _matchers(selector))
    offered = f"sum(last_over_time({nodes}{_lookback(step_seconds)}))"
    return gauge_measure(f"allocatable {resource} ({nodes})", offered, offered, step_seconds=step_seconds)


def gauge_measure(name: str, per_namespace: str, cluster: str, *, step_seconds: int) -> Measure:
    """A gauge per namespace, held for a step: summed over the window's steps. `cluster` is the same gauge for the
    whole cluster, computed without grouping by namespace (which is most of a query's cost)."""
    return Measure(
        name=name,
        per_namespace=lambda window_ms: window_query("sum_over_time", per_namespace, window_ms=window_ms,
                                                     step_seconds=step_seconds),
        aggregates=lambda window_ms: cluster_aggregates_promql(cluster, window_ms=window_ms,
                                                               step_seconds=step_seconds),
        scale=step_seconds,
        coverage_seconds=step_seconds,
    )


def _sum_windows(server: _Server, measure: Measure, capacity: Measure | None, *, start_ms: int,
                 end_ms: int) -> tuple[dict[str, Decimal], Decimal]:
    """The measure's per-namespace totals over the period (in seconds), and how many seconds had data; with a
    capacity, the idle capacity too (namespace IDLE_NAMESPACE), counted day by day and never below zero. A few days
    are asked at once: each query is single-threaded on the server."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    covered_seconds = Decimal(0)
    capacity_steps = Decimal(0)
    windows = day_windows(start_ms, end_ms)

    def ask(window: tuple[int, int]) -> tuple[_WindowAnswer, dict[str, Decimal]]:
        answer = _window_answer(server, measure, window=window)
        offered = {} if capacity is None else server.window_values(capacity.aggregates(window[1] - window[0]),
                                                                   window=window, key="aggregate")
        return answer, offered

    with ThreadPoolExecutor(max_workers=min(WINDOW_CONCURRENCY, max(len(windows), 1))) as pool:
        # In window order whatever order they finish in: the sums are the same for every run.
        for answer, offered in pool.map(ask, windows):
            for namespace, value in answer.namespaces.items():
                totals[namespace] += value * measure.scale
            covered_seconds += answer.steps * measure.coverage_seconds
            if capacity is not None:
                capacity_steps += offered.get("steps", Decimal(0))
                idle = offered.get("total", Decimal(0)) * capacity.scale - answer.total * measure.scale
                totals[IDLE_NAMESPACE] += max(Decimal(0), idle)
    if capacity is not None and not capacity_steps:
        raise UsageQueryError(f"Prometheus {server.url} has no {capacity.name} for the period from "
                              f"{_iso(start_ms)}: idle capacity needs kube-state-metrics' node metrics")
    return totals, covered_seconds


def _window_answer(server: _Server, measure: Measure, *, window: tuple[int, int]) -> _WindowAnswer:
    """The window's two queries, checked against each other: the namespaces must add up to the cluster total, or
    hold every namespace alive at the window's end, else an answer lost a series on the way."""
    window_ms = window[1] - window[0]
    namespaces = server.window_values(measure.per_namespace(window_ms), window=window, key="namespace")
    aggregates: dict[str, Decimal] = {}
    alive: set[str] = set()
    for sample in server.window_samples(measure.aggregates(window_ms), window=window):
        if sample.labels.get("aggregate") == "alive":
            alive.add(sample.labels.get("namespace", ""))
        else:
            aggregates[sample.labels.get("aggregate", "")] = sample.value
    summed = sum(namespaces.values(), Decimal(0))
    total = aggregates.get("total", summed)
    incomplete = f"Prometheus {server.url} gave an incomplete answer for the day from {_iso(window[0])}"
    if abs(summed - total) > TOTAL_TOLERANCE * max(abs(total), Decimal(1)):
        raise UsageQueryError(f"{incomplete}: its namespaces add up to {summed} unit-steps of {measure.name} but the "
                              f"cluster total is {total}")
    if missing := sorted(alive - namespaces.keys()):
        raise UsageQueryError(f"{incomplete}: namespace(s) {', '.join(missing)} had {measure.name} samples at its end "
                              f"but no {measure.name} in the answer")
    return _WindowAnswer(namespaces=namespaces, total=total, steps=aggregates.get("steps", Decimal(0)))


def namespace_memory_promql(basis: str, *, selector: str, step_seconds: int) -> str:
    """PromQL for each namespace's memory at one resolution step."""
    matchers = _matchers(selector)
    lookback = _lookback(step_seconds)
    usage = f"last_over_time({USAGE_SELECTOR % matchers}{lookback})"
    request = f"last_over_time({REQUEST_SELECTOR % matchers}{lookback})"
    if basis == "usage":
        return f"sum by (namespace) ({usage})"
    if basis == "request":
        return f"sum by (namespace) ({request})"
    container_usage = f"sum by (namespace, pod, container) ({usage})"
    container_request = f"sum by (namespace, pod, container) ({request})"
    # Per container, as OpenCost does: usage where it is at least the request, else the request,
    # and whichever of the two exists when the container has only one.
    larger = f"({container_usage} >= {container_request}) or {container_request} or {container_usage}"
    return f"sum by (namespace) ({larger})"


def cluster_memory_promql(basis: str, *, selector: str, step_seconds: int) -> str:
    """PromQL for the cluster's memory at one resolution step, without grouping by namespace where the basis allows."""
    if basis == "max":
        return f"sum({namespace_memory_promql(basis, selector=selector, step_seconds=step_seconds)})"
    series = USAGE_SELECTOR if basis == "usage" else REQUEST_SELECTOR
    return f"sum(last_over_time({series % _matchers(selector)}{_lookback(step_seconds)}))"


def gpus_held_promql(*, selector: str, step_seconds: int, label_prefix: str) -> str:
    """PromQL for the GPUs pods hold at one resolution step, one series each. The DCGM exporter labels a GPU with its
    pod's `namespace` and `pod`; scraped without honor_labels, Prometheus renames them `exported_namespace` and
    `exported_pod` (`label_prefix`), and `namespace` is then the exporter's own."""
    return f"last_over_time({GPU_METRIC}{{{label_prefix}pod!=\"\"{_matchers(selector)}}}{_lookback(step_seconds)})"


def namespace_gpus_promql(held: str, *, label_prefix: str) -> str:
    """PromQL for the GPUs each namespace's pods hold, from `gpus_held_promql`: the pod's namespace label moved back
    to `namespace` where it arrives prefixed."""
    if label_prefix:
        held = f'label_replace({held}, "namespace", "$1", "{label_prefix}namespace", "(.*)")'
    return f"count by (namespace) ({held})"


def cluster_aggregates_promql(cluster_expression: str, *, window_ms: int, step_seconds: int) -> str:
    """The cluster's steps with data (`aggregate="steps"`) and its sum over the steps (`aggregate="total"`) of a
    gauge, in one query: the total is computed independently of the per-namespace answer it checks."""
    return cluster_aggregates(
        steps=window_query("count_over_time", cluster_expression, window_ms=window_ms, step_seconds=step_seconds),
        total=window_query("sum_over_time", cluster_expression, window_ms=window_ms, step_seconds=step_seconds))


def cluster_aggregates(*, steps: str, total: str | None = None, alive: str | None = None) -> str:
    """One query answering the steps with data (`aggregate="steps"`), and the cluster total (`aggregate="total"`) or
    the namespaces alive (`aggregate="alive"`, one series per namespace)."""
    parts = {"steps": steps, "total": total, "alive": alive}
    return " or ".join(f'label_replace({expression}, "aggregate", "{name}", "", "")'
                       for name, expression in parts.items() if expression is not None)


def _matchers(selector: str) -> str:
    return f",{selector}" if selector.strip() else ""


def _lookback(step_seconds: int) -> str:
    # One millisecond short of a step makes the look-back (s - step, s] in both Prometheus 2 (closed
    # ranges) and 3 (left-open): a pod's last sample is not counted again one step after it vanished.
    return f"[{step_seconds * 1000 - 1}ms]"


def day_windows(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """[start, end) cut into consecutive windows of one day, the last one shorter."""
    return [(edge, min(edge + DAY_MS, end_ms)) for edge in range(start_ms, end_ms, DAY_MS)]


def window_query(function: str, expression: str, *, window_ms: int, step_seconds: int) -> str:
    """`function` over the steps of a window, evaluated one millisecond before the window's end.

    The subquery's steps are the multiples of the step in [end - 1ms - range, end - 1ms]; with
    range = the window's length these are exactly the multiples in [start, end), whether the
    range's left edge is open or closed, so consecutive windows tile the period.
    """
    return f"{function}(({expression})[{window_ms}ms:{step_seconds}s])"


@dataclass(frozen=True)
class _Sample:
    labels: dict[str, str]
    value: Decimal


@dataclass(frozen=True)
class _Server:
    session: requests.Session
    query_url: str
    url: str  # without credentials: it goes into error messages
    timeout_seconds: float
    verify: str | bool  # the CA file, or True for the system's trust store

    def window_values(self, query: str, *, window: tuple[int, int], key: str) -> dict[str, Decimal]:
        """The query's value per `key` label ("" when a series lacks it), evaluated at the window's end."""
        return {sample.labels.get(key, ""): sample.value for sample in self.window_samples(query, window=window)}

    def window_samples(self, query: str, *, window: tuple[int, int]) -> list[_Sample]:
        """The query's series, evaluated at the window's end."""
        at = _prometheus_time(window[1] - 1)
        # The value first: it checks that the sample is well formed.
        return [_Sample(value=_sample_value(sample, where=self._where(query, at)), labels=sample["metric"])
                for sample in self.instant(query, at=at)]

    def instant(self, query: str, *, at: str) -> list[dict]:
        log.debug("Prometheus %s: %s at %s", self.url, query, at)
        where = self._where(query, at)
        try:
            status, body = self._get({"query": query, "time": at, "partial_response": "false"})
        except requests.RequestException as e:
            raise UsageQueryError(f"{where}: {_transport_reason(e, timeout_seconds=self.timeout_seconds)}") from e
        return _vector(status, body, where=where)

    def _get(self, params: dict[str, str]) -> tuple[int, bytes]:
        """Status and body. The read timeout only bounds each pause between bytes, so a body trickling in
        would hold the run for ever: past the timeout, a watchdog closes the connection under the read."""
        # `verify` per request: requests lets $REQUESTS_CA_BUNDLE override the session's own CA file.
        with self.session.get(self.query_url, params=params, timeout=self.timeout_seconds, verify=self.verify,
                              stream=True) as answer:
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                answer.raw.shutdown()  # wakes the blocked read, which closing would not

            watchdog = threading.Timer(self.timeout_seconds, expire)
            watchdog.start()
            try:
                body = _read_body(answer)
            except Exception as e:
                if expired.is_set():
                    raise requests.Timeout("the answer's body did not arrive in time") from e
                raise
            finally:
                watchdog.cancel()
            if expired.is_set():
                raise requests.Timeout("the answer's body did not arrive in time")
            return answer.status_code, body

    def _where(self, query: str, at: str) -> str:
        return f"Prometheus {self.url} failed query {query!r} at {at}"


def _read_body(answer: requests.Response) -> bytes:
    body = bytearray()
    for chunk in answer.iter_content(READ_CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise requests.RequestException(f"the answer exceeds {MAX_ANSWER_BYTES // 2**20} MiB")
    return bytes(body)


def _vector(status: int, body: bytes, *, where: str) -> list[dict]:
    """The samples of an instant-vector answer; anything else is a UsageQueryError naming the query."""
    try:
        document = json.loads(body)
    except ValueError as e:
        raise UsageQueryError(f"{where}: the answer is not JSON ({len(body)} bytes, {e})") from e
    if not isinstance(document, dict):
        raise UsageQueryError(f"{where}: the answer is not a Prometheus API document")
    if status != 200 or document.get("status") != "success":
        raise UsageQueryError(f"{where}: HTTP Status Code {status} ({_api_error(document)})")
    if document.get("warnings"):
        raise UsageQueryError(f"{where}: the answer may be partial, Prometheus warns: "
                              + "; ".join(str(w) for w in document["warnings"]))
    data = document.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        raise UsageQueryError(f"{where}: the answer holds no instant vector")
    return data["result"]


def _api_error(document: dict) -> str:
    error = str(document.get("error") or "no error message")[:500]
    return f"{document['errorType']}: {error}" if document.get("errorType") else error


def _sample_value(sample: object, *, where: str) -> Decimal:
    # From the string Prometheus sends, never through a Python float.
    try:
        metric, value = sample["metric"], Decimal(sample["value"][1])  # type: ignore[index]
    except (TypeError, KeyError, IndexError, InvalidOperation) as e:
        raise UsageQueryError(f"{where}: malformed sample {str(sample)[:200]}") from e
    if not isinstance(metric, dict) or not value.is_finite():
        raise UsageQueryError(f"{where}: returned {value} for {metric}")
    return value


def _transport_reason(error: requests.RequestException, *, timeout_seconds: float) -> str:
    """What went wrong on the wire in a few words ('Connection refused'), without the pool and object
    reprs urllib3 wraps around it, and whether the retries were spent."""
    chain = _exception_chain(error)
    # urllib3 files a refused connection under its timeouts: the socket's own error is checked first.
    reason = next((_os_reason(e) for e in reversed(chain) if _os_reason(e)), None)
    if reason is None and any(isinstance(e, (requests.Timeout, urllib3.exceptions.TimeoutError)) for e in chain):
        reason = f"the answer did not arrive within the {timeout_seconds:g} s timeout"
    reason = reason or _first_line(chain[-1])
    if any(isinstance(e, urllib3.exceptions.MaxRetryError) for e in chain):
        return f"{reason} (Max retries exceeded)"
    return reason


def _exception_chain(error: BaseException) -> list[BaseException]:
    """The error and what it wraps, outermost first: requests -> urllib3 -> the socket's OSError."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        wrapped = [arg for arg in current.args if isinstance(arg, BaseException)]
        current = current.__cause__ or getattr(current, "reason", None) or next(iter(wrapped), None)
        current = current if isinstance(current, BaseException) else None
    return chain


def _os_reason(error: BaseException) -> str | None:
    """The socket's own words. A socket timeout says only 'timed out' (the caller names the timeout instead),
    and requests' errors subclass OSError without being the socket's."""
    if not isinstance(error, OSError) or isinstance(error, (TimeoutError, requests.RequestException)):
        return None
    if error.strerror:
        return error.strerror
    return error.args[0] if error.args and isinstance(error.args[0], str) else None


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def _server(target: PrometheusTarget, session: requests.Session) -> _Server:
    """A session carrying the target's auth and retry policy."""
    session.auth = _auth(target)
    base_url = target.url.rstrip("/")
    session.mount(base_url, HTTPAdapter(max_retries=_retry(target)))
    return _Server(session=session, query_url=f"{base_url}/api/v1/query", url=_safe_url(target.url),
                   timeout_seconds=target.timeout_seconds, verify=str(target.ca_file) if target.ca_file else True)


def _retry(target: PrometheusTarget) -> Retry:
    # Connection failures, timeouts, overload and server errors are worth retrying; a 4xx (bad query) is not.
    return Retry(
        total=target.retries,
        backoff_factor=target.backoff_seconds,
        status_forcelist=RETRY_ON_STATUS,
    )


def _auth(target: PrometheusTarget) -> AuthBase | None:
    if target.bearer_token_file is not None:
        return BearerTokenFile(target.bearer_token_file)
    if target.username is not None:
        password = target.password.get_secret_value() if target.password else ""
        return HTTPBasicAuth(target.username, password)
    return None


class BearerTokenFile(AuthBase):
    """Bearer auth whose token is read from its file at each request, since tokens rotate."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        try:
            token = self.path.read_text().strip()
        except OSError as e:
            raise UsageQueryError(f"cannot read the Prometheus bearer token file {self.path}: {e.strerror or e}") from e
        request.headers["Authorization"] = f"Bearer {token}"
        return request


def _safe_url(url: str) -> str:
    """The URL without any user:password part, fit for error messages and logs."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def _prometheus_time(at_ms: int) -> str:
    return f"{at_ms // 1000}.{at_ms % 1000:03d}"


def _iso(at_ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=at_ms)).isoformat()


def _milliseconds(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def _steps_in(start_ms: int, end_ms: int, step_ms: int) -> int:
    """How many multiples of the step lie in [start, end)."""
    return -(-end_ms // step_ms) - -(-start_ms // step_ms)
