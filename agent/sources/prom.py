"""Memory byte-seconds per namespace from Prometheus: the only module that talks to Prometheus.

The integral is computed by the server: the namespace's total memory is sampled at a fixed
resolution (`step_seconds`) by a subquery and summed, one instant query per day of the period so
that no query touches more than a day of samples. Step `s` holds the last sample in (s - step, s]
and counts for [s, s + step); the period's steps are the multiples of the step in [start, end).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from pydantic import SecretStr
from requests.auth import AuthBase, HTTPBasicAuth
from urllib3.util.retry import Retry

from agent.allocate import NamespaceUsage
from agent.errors import UsageQueryError

log = logging.getLogger(__name__)

USAGE_SELECTOR = 'container_memory_working_set_bytes{container!="",pod!=""%s}'
REQUEST_SELECTOR = 'kube_pod_container_resource_requests{resource="memory"%s}'
BASES = ("usage", "request", "max")
DAY_MS = 86_400_000
RETRY_ON_STATUS = (429, 500, 502, 503, 504)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    """One cluster's memory byte-seconds per namespace over the period, and how complete the data was."""

    cluster: str
    usage: list[NamespaceUsage]  # service=None: the namespace map comes from Kubernetes
    coverage: float  # fraction of the period's resolution steps with any data, 0..1


def query_usage(
    *,
    cluster: str,
    target: PrometheusTarget,
    start: datetime,
    end: datetime,
    basis: str = "usage",
    step_seconds: int = 60,
    now: datetime | None = None,
) -> ClusterUsage:
    """Memory byte-seconds per namespace of `cluster` over [start, min(end, now))."""
    if basis not in BASES:
        raise ValueError(f"unknown usage basis {basis!r}; expected one of {', '.join(BASES)}")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("the period's start and end must be timezone-aware (UTC) datetimes")
    start_ms = _milliseconds(start)
    end_ms = max(start_ms, _milliseconds(min(end, now or datetime.now(UTC))))
    namespace_memory = namespace_memory_promql(basis, selector=target.selector, step_seconds=step_seconds)
    with requests.Session() as session:
        server = _Server(client=_client(target, session), url=_safe_url(target.url))
        byte_steps, covered_steps = _sum_windows(server, namespace_memory, start_ms=start_ms, end_ms=end_ms,
                                                 step_seconds=step_seconds)
    # Multiplying by the step here, in Decimal, keeps the server's float sums far from 2**53.
    usage = [
        NamespaceUsage(cluster=cluster, namespace=namespace, memory_byte_seconds=total * step_seconds)
        for namespace, total in sorted(byte_steps.items())
    ]
    step_count = _steps_in(start_ms, end_ms, step_seconds * 1000)
    coverage = float(covered_steps / step_count) if step_count else 0.0
    return ClusterUsage(cluster=cluster, usage=usage, coverage=coverage)


def _sum_windows(
    server: _Server, namespace_memory: str, *, start_ms: int, end_ms: int, step_seconds: int
) -> tuple[dict[str, Decimal], Decimal]:
    """Per-namespace sums of memory over the period's steps (byte-steps), and how many steps had data."""
    byte_steps: dict[str, Decimal] = defaultdict(Decimal)
    covered_steps = Decimal(0)
    for window in day_windows(start_ms, end_ms):
        sums = server.window_values("sum_over_time", namespace_memory, window=window, step_seconds=step_seconds)
        for namespace, value in sums.items():
            byte_steps[namespace] += value
        counts = server.window_values("count_over_time", f"sum({namespace_memory})", window=window,
                                      step_seconds=step_seconds)
        covered_steps += sum(counts.values())
    return byte_steps, covered_steps


def namespace_memory_promql(basis: str, *, selector: str, step_seconds: int) -> str:
    """PromQL for each namespace's memory at one resolution step."""
    matchers = f",{selector}" if selector.strip() else ""
    # One millisecond short of a step makes the look-back (s - step, s] in both Prometheus 2 (closed
    # ranges) and 3 (left-open): a pod's last sample is not counted again one step after it vanished.
    lookback = f"[{step_seconds * 1000 - 1}ms]"
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
class _Server:
    client: PrometheusConnect
    url: str  # without credentials: it goes into error messages

    def window_values(self, function: str, expression: str, *, window: tuple[int, int],
                      step_seconds: int) -> dict[str, Decimal]:
        """`function` over the window's steps of `expression`, per namespace ("" when not by namespace)."""
        window_start, window_end = window
        query = window_query(function, expression, window_ms=window_end - window_start, step_seconds=step_seconds)
        return {
            sample["metric"].get("namespace", ""): self._value(sample, query)
            for sample in self.instant(query, at_ms=window_end - 1)
        }

    def instant(self, query: str, *, at_ms: int) -> list[dict]:
        at = f"{at_ms // 1000}.{at_ms % 1000:03d}"
        log.debug("Prometheus %s: %s at %s", self.url, query, at)
        try:
            return self.client.custom_query(query, params={"time": at})
        except (PrometheusApiClientException, requests.RequestException, KeyError, ValueError) as e:
            raise UsageQueryError(f"Prometheus {self.url} failed query {query!r} at {at}: {e}") from e

    def _value(self, sample: dict, query: str) -> Decimal:
        # From the string Prometheus sends, never through a Python float.
        value = Decimal(sample["value"][1])
        if not value.is_finite():
            raise UsageQueryError(f"Prometheus {self.url} query {query!r} returned {value} for {sample['metric']}")
        return value


def _client(target: PrometheusTarget, session: requests.Session) -> PrometheusConnect:
    """The client on a session carrying the target's TLS, auth, timeout and retry policy.

    prometheus_api_client (already a dependency) sends the query and raises on non-200 answers;
    it accepts a session, an auth object and a urllib3 Retry, which is all it takes to re-read a
    rotating bearer token at each request and to use the target's retry policy instead of its
    fixed one, so plain requests would gain nothing.
    """
    session.verify = str(target.ca_file) if target.ca_file else True
    return PrometheusConnect(
        url=target.url.rstrip("/"),
        session=session,
        auth=_auth(target),
        retry=_retry(target),
        timeout=target.timeout_seconds,
    )


def _retry(target: PrometheusTarget) -> Retry:
    # Connection failures, overload and server errors are worth retrying; a 4xx (bad query) is not.
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
            raise requests.RequestException(f"cannot read bearer token file {self.path}: {e}") from e
        request.headers["Authorization"] = f"Bearer {token}"
        return request


def _safe_url(url: str) -> str:
    """The URL without any user:password part, fit for error messages and logs."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def _milliseconds(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def _steps_in(start_ms: int, end_ms: int, step_ms: int) -> int:
    """How many multiples of the step lie in [start, end)."""
    return -(-end_ms // step_ms) - -(-start_ms // step_ms)
