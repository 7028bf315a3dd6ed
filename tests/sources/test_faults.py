"""Faults of the usage sources against a running `cz-agent serve`: the real Prometheus stopped mid-run, slower
than the timeout or answering in part, and the real API server stopped or hung. Each fault fails the run with
one clear log line (or completes it with a stated coverage warning), keeps the last good run served, counts a
failure, and the next scheduled run recovers by itself once the fault is gone."""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from agent.errors import UsageQueryError
from agent.sources.prom import PrometheusTarget, query_usage
from tests.support.faultproxy import HttpFaultProxy, HttpFaults, TcpFaultProxy
from tests.support.fixtures_kube import KubeApiServer
from tests.support.fixtures_live import BILL, live_agent_settings
from tests.support.fixtures_prom import PrometheusServer, ensure_prometheus
from tests.support.http import http_get, sample
from tests.support.ports import free_port
from tests.support.processes import start_logged, stop_process
from tests.support.promhistory import MONTH_START
from tests.support.served import ServedAgent, drop_bill, served_agent
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

PERIOD = "2026-09"
GOOD_TOTAL = 1323.33
RESTATED_BILL = BILL + "2026-09,mobile,10.00,USD\n"
RESTATED_TOTAL = 1333.33
PROMETHEUS_TIMEOUT_SECONDS = 2
PROMETHEUS_RETRIES = 1
KUBE_TIMEOUT_SECONDS = 3
# Slack for a loaded 2-core machine on top of the bound the agent promises.
SLACK_SECONDS = 15


@dataclass
class Rig:
    """A running agent whose usage sources sit behind fault proxies, with its first good run served."""

    agent: ServedAgent
    inbox: Path
    prometheus: HttpFaultProxy
    apiserver: TcpFaultProxy
    served: str  # the good run's allocation CSV, as the API serves it

    def total(self) -> float | None:
        return sample(self.agent.metrics(), "cz_bill_total_cost", period=PERIOD, currency="USD")

    def allocations(self) -> str:
        return http_get(f"{self.agent.url}/api/v1/allocations?period={PERIOD}&format=csv")

    def stored_runs(self) -> list[dict]:
        return json.loads(http_get(f"{self.agent.url}/api/v1/runs"))["runs"]

    def log(self) -> list[dict]:
        return self.agent.log_entries()


@pytest.fixture
def prometheus_proxy(prometheus_server: PrometheusServer) -> Iterator[HttpFaultProxy]:
    with HttpFaultProxy(prometheus_server.url).running() as proxy:
        yield proxy


@pytest.fixture
def apiserver_proxy(kube_apiserver: KubeApiServer) -> Iterator[TcpFaultProxy]:
    parts = urlsplit(kube_apiserver.url)
    proxy = TcpFaultProxy((parts.hostname or "127.0.0.1", parts.port or 443))
    yield proxy
    proxy.stop()


@pytest.fixture
def rig(prometheus_proxy: HttpFaultProxy, apiserver_proxy: TcpFaultProxy, agent_kubeconfig: Path,
        tmp_path: Path) -> Iterator[Rig]:
    kubeconfig = proxied_kubeconfig(agent_kubeconfig, port=apiserver_proxy.port, path=tmp_path / "kubeconfig")
    settings = live_agent_settings(tmp_path, prometheus_url=prometheus_proxy.url, kubeconfig=kubeconfig,
                                   CZ_AGENT_KUBE_TIMEOUT_SECONDS=str(KUBE_TIMEOUT_SECONDS),
                                   CZ_AGENT_PROMETHEUS_RETRIES=str(PROMETHEUS_RETRIES),
                                   CZ_AGENT_PROMETHEUS_TIMEOUT_SECONDS=str(PROMETHEUS_TIMEOUT_SECONDS))
    with served_agent(settings, log_path=tmp_path / "agent.log") as agent:
        inbox = agent.inbox
        drop_bill(inbox, BILL)
        wait_for(lambda: sample(agent.metrics(), "cz_bill_total_cost", period=PERIOD, currency="USD") == GOOD_TOTAL,
                 what="the first good run", logs=agent.log_path)
        served = http_get(f"{agent.url}/api/v1/allocations?period={PERIOD}&format=csv")
        yield Rig(agent=agent, inbox=inbox, prometheus=prometheus_proxy, apiserver=apiserver_proxy, served=served)


def proxied_kubeconfig(kubeconfig: Path, *, port: int, path: Path) -> Path:
    """The agent's kubeconfig aimed at the proxy: same token and CA (the certificate names 127.0.0.1)."""
    document = yaml.safe_load(kubeconfig.read_text())
    for cluster in document["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(document))
    return path


@dataclass(frozen=True)
class Failure:
    """The failed run as the agent reported it: its log entry and the allocation job's duration."""

    entry: dict
    duration_seconds: float


def fail_then_recover(rig: Rig, *, inject: Callable[[], None], clear: Callable[[], None]) -> Failure:
    """Inject the fault and restate the bill: the failed run must change nothing served or stored. Then clear
    the fault and wait for the scheduled run to allocate the restated bill."""
    failures = rig.agent.runs("allocate", "failure")
    runs_before = rig.stored_runs()
    logged_before = len(rig.log())
    inject()
    try:
        drop_bill(rig.inbox, RESTATED_BILL)
        wait_for(lambda: rig.agent.runs("allocate", "failure") > failures, what="a failed allocation",
                 logs=rig.agent.log_path)
        # The failure counter and the duration are recorded together: this is a failed run's duration.
        duration = sample(rig.agent.metrics(), "cz_agent_run_duration_seconds", agent_job="allocate")
        assert rig.allocations() == rig.served
        assert rig.total() == GOOD_TOTAL
        assert rig.stored_runs() == runs_before
        entry = failure_entry(rig, since=logged_before)
    finally:
        clear()
    wait_for(lambda: rig.total() == RESTATED_TOTAL, what="recovery once the fault is gone",
             logs=rig.agent.log_path)
    assert len(rig.stored_runs()) == len(runs_before) + 1
    assert entry["level"] == "error" and "exception" not in entry and "\n" not in entry["message"]
    return Failure(entry=entry, duration_seconds=duration)


def failure_entry(rig: Rig, *, since: int) -> dict:
    for entry in rig.log()[since:]:
        if entry["message"].startswith(f"allocation of {PERIOD} failed: "):
            return entry
    pytest.fail(f"no 'allocation of {PERIOD} failed' line in the agent log:\n{rig.agent.log_path.read_text()[-4000:]}")


def test_prometheus_stopped_mid_run_then_restarted(rig: Rig, prometheus_server: PrometheusServer):
    let_through = 10

    def stop_after(count: int) -> None:
        if count == started_at + let_through + 1:
            prometheus_server.stop()

    def inject() -> None:
        rig.prometheus.set_faults(HttpFaults(before_forward=stop_after))

    def restart() -> None:
        rig.prometheus.set_faults(HttpFaults())
        if prometheus_server.process is None:
            prometheus_server.start()

    started_at = rig.prometheus.requests
    failure = fail_then_recover(rig, inject=inject, clear=restart)

    message = failure.entry["message"]
    assert f"Prometheus {rig.prometheus.url} failed query" in message
    # The query that stopped the server may time out first; its retry then finds the server gone.
    assert "Remote end closed connection without response (Max retries exceeded)" in message
    # It went away in the middle of the run: the first queries of the month had been answered.
    assert rig.prometheus.requests > started_at + let_through


@pytest.mark.parametrize("slowness", ["headers_late", "body_trickles"])
def test_prometheus_slower_than_the_timeout_fails_the_run_within_its_bound(rig: Rig, slowness: str):
    faults = (HttpFaults(delay_seconds=120) if slowness == "headers_late"
              else HttpFaults(trickle_seconds=PROMETHEUS_TIMEOUT_SECONDS / 4))
    failure = fail_then_recover(rig, inject=lambda: rig.prometheus.set_faults(faults),
                                clear=lambda: rig.prometheus.set_faults(HttpFaults()))

    assert f"the answer did not arrive within the {PROMETHEUS_TIMEOUT_SECONDS} s timeout" in failure.entry["message"]
    # The first stalled query fails the run: waiting for the headers is retried (each attempt waits out the
    # timeout; urllib3 does not back off before the first retry), a trickling body is not (its headers came).
    attempts = PROMETHEUS_RETRIES + 1 if slowness == "headers_late" else 1
    assert attempts * PROMETHEUS_TIMEOUT_SECONDS <= failure.duration_seconds
    assert failure.duration_seconds <= attempts * PROMETHEUS_TIMEOUT_SECONDS + SLACK_SECONDS


def drop_namespace(namespace: str) -> Callable[[str, bytes], bytes]:
    """Removes one namespace's series from every answer: the per-namespace sums lose it, the total keeps it."""
    def rewrite(_path: str, body: bytes) -> bytes:
        document = json.loads(body)
        result = document["data"]["result"]
        document["data"]["result"] = [s for s in result if s["metric"].get("namespace") != namespace]
        return json.dumps(document).encode()
    return rewrite


def add_warning(_path: str, body: bytes) -> bytes:
    document = json.loads(body)
    document["warnings"] = ["partial response: store 10.0.0.7:10901 is unavailable"]
    return json.dumps(document).encode()


def truncate(_path: str, body: bytes) -> bytes:
    return body[: len(body) // 2]


@pytest.mark.parametrize(("rewrite", "reason"), [
    (drop_namespace("mcmp"), "gave an incomplete answer for the day from 2026-09-01T00:00:00+00:00"),
    (add_warning, "the answer may be partial, Prometheus warns: partial response: store 10.0.0.7:10901"),
    (truncate, "the answer is not JSON"),
], ids=["namespace_series_dropped", "warnings", "truncated_body"])
def test_prometheus_answering_in_part_fails_the_run_clearly(rig: Rig, rewrite: Callable[[str, bytes], bytes],
                                                             reason: str):
    failure = fail_then_recover(rig, inject=lambda: rig.prometheus.set_faults(HttpFaults(rewrite=rewrite)),
                                clear=lambda: rig.prometheus.set_faults(HttpFaults()))

    assert f"Prometheus {rig.prometheus.url}" in failure.entry["message"] and reason in failure.entry["message"]


def empty_before(day: int) -> Callable[[str, bytes], bytes]:
    """Answers for windows ending before `day` of the month come back empty: a Prometheus that lost those days."""
    cutoff = MONTH_START.timestamp() + (day - 1) * 86_400

    def rewrite(path: str, body: bytes) -> bytes:
        if float(parse_qs(urlsplit(path).query)["time"][0]) >= cutoff:
            return body
        document = json.loads(body)
        document["data"]["result"] = []
        return json.dumps(document).encode()
    return rewrite


def test_prometheus_missing_days_completes_with_a_stated_coverage_warning(rig: Rig):
    logged_before = len(rig.log())
    rig.prometheus.set_faults(HttpFaults(rewrite=empty_before(day=11)))
    drop_bill(rig.inbox, RESTATED_BILL)
    wait_for(lambda: rig.total() == RESTATED_TOTAL, what="the run on partial data", logs=rig.agent.log_path)

    metrics = rig.agent.metrics()
    assert sample(metrics, "cz_usage_coverage_ratio", period=PERIOD, cluster="prod") == pytest.approx(20 / 30)
    latest = rig.stored_runs()[-1]
    manifest = json.loads(http_get(f"{rig.agent.url}/api/v1/runs/{latest['id']}"))["manifest"]
    assert manifest["usage"]["coverage"]["prod"] == pytest.approx(20 / 30)
    warnings = [e["message"] for e in rig.log()[logged_before:] if e["level"] == "warning"]
    assert "cluster prod: usage data covers 66.7% of the period (threshold 90%); its usage shares may be skewed" \
        in warnings


@pytest.mark.parametrize("outage", ["stopped", "hung"])
def test_apiserver_unavailable_fails_the_run_then_recovers(rig: Rig, outage: str):
    def inject() -> None:
        if outage == "stopped":
            rig.apiserver.stop()
        else:
            rig.apiserver.hung = True

    prometheus_requests = rig.prometheus.requests
    failure = fail_then_recover(rig, inject=inject, clear=rig.apiserver.resume)

    message = failure.entry["message"]
    assert f"Kubernetes API https://127.0.0.1:{rig.apiserver.port} is unreachable" in message
    assert ("Connection refused" if outage == "stopped" else "timed out") in message
    assert prometheus_requests < rig.prometheus.requests  # the recovery run queried usage again


# ---------------------------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    cert: Path
    key: Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA, a server certificate for 127.0.0.1 it signed, and an unrelated CA."""
    directory = tmp_path_factory.mktemp("pki")
    for name in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=cz-agent test {name}",
                "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.crt"))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(directory / "server.key"),
            "-out", str(directory / "server.csr"))
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(directory / "server.csr"), "-CA", str(directory / "ca.crt"), "-CAkey",
            str(directory / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(directory / "san.ext"),
            "-out", str(directory / "server.crt"))
    return Pki(ca=directory / "ca.crt", other_ca=directory / "other-ca.crt", cert=directory / "server.crt",
               key=directory / "server.key")


@pytest.fixture(scope="module")
def tls_prometheus(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus serving HTTPS only, with the test CA's certificate; yields its URL."""
    prometheus, _ = ensure_prometheus()
    directory = tmp_path_factory.mktemp("tls-prometheus")
    (directory / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
    (directory / "web.yml").write_text(yaml.safe_dump(
        {"tls_server_config": {"cert_file": str(pki.cert), "key_file": str(pki.key)}}))
    port = free_port()
    log_path = directory / "prometheus.log"
    process = start_logged([prometheus, f"--config.file={directory / 'prometheus.yml'}",
                            f"--web.config.file={directory / 'web.yml'}", f"--storage.tsdb.path={directory / 'data'}",
                            f"--web.listen-address=127.0.0.1:{port}"], log_path=log_path)
    url = f"https://127.0.0.1:{port}"
    try:
        wait_for(lambda: _https_ready(url, ca=pki.ca), what="the TLS Prometheus", process=process, logs=log_path)
        yield url
    finally:
        stop_process(process, timeout=30)


def _https_ready(url: str, *, ca: Path) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=5, context=ssl.create_default_context(cafile=str(ca))) as r:
        return r.status == 200


def hour_of_usage(url: str, *, ca_file: Path) -> object:
    target = PrometheusTarget(url=url, ca_file=ca_file, retries=0, timeout_seconds=10)
    return query_usage(cluster="prod", target=target, start=MONTH_START,
                       end=MONTH_START.replace(hour=1), now=MONTH_START.replace(month=10))


def test_prometheus_over_tls_with_the_right_ca_file(tls_prometheus: str, pki: Pki):
    measured = hour_of_usage(tls_prometheus, ca_file=pki.ca)

    assert measured.usage == [] and measured.coverage == 0.0


def test_prometheus_over_tls_with_a_wrong_ca_file_fails_clearly(tls_prometheus: str, pki: Pki):
    with pytest.raises(UsageQueryError) as raised:
        hour_of_usage(tls_prometheus, ca_file=pki.other_ca)

    message = str(raised.value)
    assert f"Prometheus {tls_prometheus} failed query" in message
    assert "certificate verify failed" in message and "\n" not in message
