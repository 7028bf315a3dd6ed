"""agent.sources.prom against a real Prometheus serving a backfilled month, and against a recording stub."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from pydantic import SecretStr

from agent.errors import UsageQueryError
from agent.sources.prom import ClusterUsage, PrometheusTarget, query_usage
from tests.support.fixtures_prom import PrometheusServer
from tests.support.promhistory import GIB, MIB, MONTH_END, MONTH_START

pytestmark = pytest.mark.integration

AFTER_MONTH = MONTH_END + timedelta(days=60)
EMPTY_VECTOR = {"status": "success", "data": {"resultType": "vector", "result": []}}


def by_namespace(result: ClusterUsage) -> dict[str, Decimal]:
    return {record.namespace: record.memory_byte_seconds for record in result.usage}


def month_usage(server: PrometheusServer, *, cluster: str, basis: str = "usage", selector: str | None = None,
                **period: datetime) -> ClusterUsage:
    target = PrometheusTarget(url=server.url, selector=f'cluster="{cluster}"' if selector is None else selector)
    return query_usage(cluster=cluster, target=target, basis=basis, start=period.get("start", MONTH_START),
                       end=period.get("end", MONTH_END), now=period.get("now", AFTER_MONTH))


@pytest.mark.parametrize("basis", ["usage", "request", "max"])
@pytest.mark.parametrize("cluster", ["prod", "stage"])
def test_byte_seconds_equal_the_exact_integral(prometheus_server: PrometheusServer, cluster: str, basis: str) -> None:
    result = month_usage(prometheus_server, cluster=cluster, basis=basis)

    assert result.cluster == cluster
    assert by_namespace(result) == prometheus_server.expected(cluster=cluster, basis=basis)
    assert all(record.service is None and record.cluster == cluster for record in result.usage)


def test_max_basis_takes_the_larger_of_usage_and_request_per_container_and_step(
    prometheus_server: PrometheusServer,
) -> None:
    results = {basis: by_namespace(month_usage(prometheus_server, cluster="prod", basis=basis))
               for basis in ("usage", "request", "max")}

    # In mobile-api the api container's usage crosses its request from step to step, the envoy
    # sidecar stays below its request and the 6-hour pod stays above: a per-step, per-container max
    # is larger than either whole-namespace total and smaller than their sum.
    usage, request, larger = (results[b]["mobile-api"] for b in ("usage", "request", "max"))
    assert max(usage, request) < larger < usage + request
    assert larger == prometheus_server.expected(cluster="prod", basis="max")["mobile-api"]
    # kube-system's coredns sets no request: max falls back to usage, request has no entry.
    assert results["max"]["kube-system"] == results["usage"]["kube-system"]
    assert "kube-system" not in results["request"]


def test_selector_separates_the_clusters(prometheus_server: PrometheusServer) -> None:
    prod = month_usage(prometheus_server, cluster="prod")
    stage = month_usage(prometheus_server, cluster="stage")
    both = month_usage(prometheus_server, cluster="all", selector="")

    assert set(by_namespace(stage)) == {"mcmp", "ml", "mobile-api"}
    assert set(by_namespace(prod)) == {"batch", "kube-system", "legacy", "mcmp", "ml", "mobile-api"}
    assert by_namespace(both)["mobile-api"] == by_namespace(prod)["mobile-api"] + by_namespace(stage)["mobile-api"]
    assert by_namespace(prod)["mobile-api"] != by_namespace(stage)["mobile-api"]


def test_deleted_namespace_and_short_lived_pods_are_charged_only_for_their_lifetime(
    prometheus_server: PrometheusServer,
) -> None:
    month = by_namespace(month_usage(prometheus_server, cluster="prod", basis="request"))
    day_3 = by_namespace(month_usage(prometheus_server, cluster="prod", basis="request",
                                     start=datetime(2026, 9, 3, tzinfo=UTC), end=datetime(2026, 9, 4, tzinfo=UTC)))
    after_deletion = by_namespace(month_usage(prometheus_server, cluster="prod",
                                              start=datetime(2026, 9, 16, tzinfo=UTC)))

    # Requests are constant, so byte-seconds = request x seconds alive.
    legacy_alive = datetime(2026, 9, 15, 13, 37, tzinfo=UTC) - MONTH_START
    assert month["legacy"] == 256 * MIB * int(legacy_alive.total_seconds())
    assert month["batch"] == GIB * 47 * 60
    # Day 3: api-7d9f-1 (api 768 MiB + envoy 128 MiB) all day, api-7d9f-2 (768 MiB) for exactly 6 hours.
    assert day_3["mobile-api"] == (768 + 128) * MIB * 86_400 + 768 * MIB * 6 * 3600
    assert "legacy" not in after_deletion and "mobile-api" in after_deletion


def test_coverage_counts_the_scrape_gap_of_one_cluster(prometheus_server: PrometheusServer) -> None:
    prod = month_usage(prometheus_server, cluster="prod")
    stage = month_usage(prometheus_server, cluster="stage")

    assert prod.coverage == 1.0
    assert stage.coverage == pytest.approx(1 - 3600 / (30 * 86_400), abs=1e-12)
    assert stage.coverage == pytest.approx(
        prometheus_server.history.expected_coverage(cluster="stage", basis="usage"), abs=1e-12)


def test_period_not_aligned_to_days_tiles_without_double_counting(prometheus_server: PrometheusServer) -> None:
    start = datetime(2026, 9, 3, 5, 17, 30, tzinfo=UTC)
    end = datetime(2026, 9, 7, 22, 43, 10, tzinfo=UTC)

    result = month_usage(prometheus_server, cluster="prod", basis="max", start=start, end=end)

    assert by_namespace(result) == prometheus_server.history.expected(cluster="prod", basis="max", start=start,
                                                                       end=end)
    assert result.coverage == 1.0


def test_end_beyond_now_is_capped_at_now(prometheus_server: PrometheusServer) -> None:
    now = datetime(2026, 9, 11, 7, 30, 30, tzinfo=UTC)

    result = month_usage(prometheus_server, cluster="stage", now=now)

    assert by_namespace(result) == prometheus_server.history.expected(cluster="stage", basis="usage",
                                                                       start=MONTH_START, end=now)
    assert by_namespace(result) != prometheus_server.expected(cluster="stage", basis="usage")
    # The steps after `now` are not in the period, so they do not lower the coverage.
    assert result.coverage == 1.0


def test_bad_selector_is_a_usage_query_error_from_prometheus(prometheus_server: PrometheusServer) -> None:
    target = PrometheusTarget(url=prometheus_server.url, selector='cluster=="prod"')

    with pytest.raises(UsageQueryError) as error:
        query_usage(cluster="prod", target=target, start=MONTH_START, end=MONTH_END, now=AFTER_MONTH)

    message = str(error.value)
    assert prometheus_server.url in message
    assert 'cluster=="prod"' in message and "sum_over_time" in message
    assert "400" in message and "bad_data" in message


@dataclass
class RecordingServer:
    """A local HTTP server that records each request's path and headers and answers with `status`."""

    url: str = ""
    status: int = 200
    body: dict = field(default_factory=lambda: EMPTY_VECTOR)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def recording_server() -> Iterator[RecordingServer]:
    recorder = RecordingServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            recorder.requests.append((self.path, dict(self.headers)))
            payload = json.dumps(recorder.body if recorder.status == 200 else {"status": "error"}).encode()
            self.send_response(recorder.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield recorder
    httpd.shutdown()
    httpd.server_close()


def hour_usage(target: PrometheusTarget) -> ClusterUsage:
    """One window, so exactly two queries: the integral and the coverage."""
    return query_usage(cluster="prod", target=target, start=MONTH_START, end=MONTH_START + timedelta(hours=1),
                       now=AFTER_MONTH)


def test_bearer_token_is_read_from_its_file_at_each_query(recording_server: RecordingServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    target = PrometheusTarget(url=recording_server.url, bearer_token_file=token_file)

    first = hour_usage(target)
    token_file.write_text("rotated-token\n")
    hour_usage(target)

    assert first.usage == [] and first.coverage == 0.0
    authorizations = [headers.get("Authorization") for _, headers in recording_server.requests]
    assert authorizations == ["Bearer first-token"] * 2 + ["Bearer rotated-token"] * 2
    assert all(path.startswith("/api/v1/query?") for path, _ in recording_server.requests)


def test_basic_auth_is_sent_and_the_password_never_shows_in_errors(recording_server: RecordingServer) -> None:
    target = PrometheusTarget(url=recording_server.url, username="agent", password=SecretStr("s3cret-pw"),
                              retries=0)

    hour_usage(target)
    recording_server.status = 403
    with pytest.raises(UsageQueryError) as error:
        hour_usage(target)

    expected = "Basic " + base64.b64encode(b"agent:s3cret-pw").decode()
    assert [headers.get("Authorization") for _, headers in recording_server.requests] == [expected] * 3
    assert "403" in str(error.value) and "s3cret-pw" not in str(error.value)


def test_server_errors_are_retried_then_reported(recording_server: RecordingServer) -> None:
    recording_server.status = 503
    target = PrometheusTarget(url=recording_server.url, retries=2, backoff_seconds=0.01)

    with pytest.raises(UsageQueryError) as error:
        hour_usage(target)

    assert len(recording_server.requests) == 3
    assert recording_server.url in str(error.value) and "sum_over_time" in str(error.value)


def test_client_errors_are_not_retried(recording_server: RecordingServer) -> None:
    recording_server.status = 400
    target = PrometheusTarget(url=recording_server.url, retries=3, backoff_seconds=0.01)

    with pytest.raises(UsageQueryError, match="HTTP Status Code 400"):
        hour_usage(target)

    assert len(recording_server.requests) == 1


def test_nothing_listening_is_a_usage_query_error_naming_url_and_query() -> None:
    with socket_without_listener() as url:
        target = PrometheusTarget(url=url, retries=2, backoff_seconds=0.01, timeout_seconds=2)
        with pytest.raises(UsageQueryError) as error:
            hour_usage(target)

    message = str(error.value)
    assert url in message and "sum_over_time" in message and "container_memory_working_set_bytes" in message
    assert "Max retries exceeded" in message
    assert isinstance(error.value.__cause__, requests.ConnectionError)


@contextmanager
def socket_without_listener() -> Iterator[str]:
    """A 127.0.0.1 URL whose port is bound but not listening, so connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
