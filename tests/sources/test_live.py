"""End to end in live mode: backfilled Prometheus + a real API server + a bill -> the report equals its
offline replay on the dumped usage table, and a namespace deleted mid-month keeps its service."""

from __future__ import annotations

import csv
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from kubernetes import client

from agent.cli import main
from tests.support.fixtures_kube import KubeApiServer
from tests.support.fixtures_live import BILL, LABELLED, delete_namespace, rules_text
from tests.support.fixtures_prom import PrometheusServer

pytestmark = pytest.mark.integration


@pytest.fixture
def agent_env(agent_kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The agent's environment: the namespace reader's kubeconfig and a fresh store."""
    monkeypatch.setenv("CZ_AGENT_KUBECONFIG", str(agent_kubeconfig))
    monkeypatch.setenv("CZ_AGENT_STORE_URL", f"sqlite:///{tmp_path / 'runs.db'}")
    return tmp_path


def write_inputs(directory: Path, prometheus: PrometheusServer) -> tuple[Path, Path]:
    bill, rules = directory / "bill.csv", directory / "rules.yaml"
    bill.write_text(BILL)
    rules.write_text(rules_text(prometheus.url))
    return bill, rules


def allocate(bill: Path, rules: Path, out: Path, *extra: str) -> int:
    return main(["allocate", "--bill", str(bill), "--rules", str(rules), "--period", "2026-09", "--out", str(out),
                 *extra])


def test_live_report_equals_the_offline_replay_of_the_dumped_usage(prometheus_server: PrometheusServer,
                                                                   agent_env: Path, capsys: pytest.CaptureFixture):
    bill, rules = write_inputs(agent_env, prometheus_server)
    usage = agent_env / "usage.csv"
    assert main(["usage", "--rules", str(rules), "--period", "2026-09", "--out", str(usage)]) == 0
    assert allocate(bill, rules, agent_env / "live.csv") == 0
    assert allocate(bill, rules, agent_env / "offline.csv", "--usage", str(usage)) == 0

    assert (agent_env / "live.csv").read_bytes() == (agent_env / "offline.csv").read_bytes()
    with usage.open(newline="") as handle:
        dumped = {(r["cluster"], r["namespace"]): (r["service"], Decimal(r["memory_byte_seconds"]))
                  for r in csv.DictReader(handle)}
    for cluster in ("prod", "stage"):
        for namespace, byte_seconds in prometheus_server.expected(cluster=cluster, basis="usage").items():
            assert dumped[(cluster, namespace)] == (LABELLED.get(namespace, ""), byte_seconds)
    printed = capsys.readouterr().out
    assert "cluster stage: usage data covers 99.9% of the period" in printed
    assert "cluster prod: usage data covers 100.0% of the period" in printed


def test_namespace_deleted_after_a_run_keeps_its_service(prometheus_server: PrometheusServer, agent_env: Path,
                                                         admin: client.ApiClient):
    bill, rules = write_inputs(agent_env, prometheus_server)
    assert allocate(bill, rules, agent_env / "before.csv") == 0
    delete_namespace(client.CoreV1Api(admin), "legacy")
    assert "legacy" not in {n.metadata.name for n in client.CoreV1Api(admin).list_namespace().items}

    assert allocate(bill, rules, agent_env / "after.csv") == 0

    assert (agent_env / "after.csv").read_bytes() == (agent_env / "before.csv").read_bytes()
    with (agent_env / "after.csv").open(newline="") as handle:
        legacy = [r for r in csv.DictReader(handle) if r["service"] == "legacy-crm"]
    assert {r["company"] for r in legacy} == {"alpha", "beta"}
    assert all(r["cluster"] == "prod" and r["category"] == "cluster" for r in legacy)


def test_a_token_without_namespace_access_is_a_clear_error(prometheus_server: PrometheusServer, agent_env: Path,
                                                           kube_apiserver: KubeApiServer, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture):
    from tests.support.fixtures_kube import write_kubeconfig

    kubeconfig = write_kubeconfig(tmp_path / "nobody.kubeconfig", url=kube_apiserver.url, token="not-a-real-token",
                                  ca_file=kube_apiserver.ca_file)
    monkeypatch.setenv("CZ_AGENT_KUBECONFIG", str(kubeconfig))
    bill, rules = write_inputs(agent_env, prometheus_server)
    assert allocate(bill, rules, agent_env / "r.csv") == 1
    error = capsys.readouterr().err
    assert "401" in error and kube_apiserver.url in error
    assert "not-a-real-token" not in error and "Traceback" not in error
    assert not (agent_env / "r.csv").exists()


def test_a_service_account_without_namespace_access_is_refused_clearly(
        prometheus_server: PrometheusServer, agent_env: Path, kube_apiserver: KubeApiServer, admin: client.ApiClient,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    from tests.support.fixtures_kube import write_kubeconfig

    core = client.CoreV1Api(admin)
    core.create_namespaced_service_account("cz-agent-e2e", client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="no-rbac")))
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    token = core.create_namespaced_service_account_token("no-rbac", "cz-agent-e2e", request).status.token
    kubeconfig = write_kubeconfig(tmp_path / "no-rbac.kubeconfig", url=kube_apiserver.url, token=token,
                                  ca_file=kube_apiserver.ca_file)
    monkeypatch.setenv("CZ_AGENT_KUBECONFIG", str(kubeconfig))
    bill, rules = write_inputs(agent_env, prometheus_server)
    assert allocate(bill, rules, agent_env / "r.csv") == 1
    error = capsys.readouterr().err
    assert "403" in error and "cannot list namespaces" in error
    assert token not in error and "Traceback" not in error


def blended_rules(prometheus_url: str, idle: str) -> str:
    return rules_text(prometheus_url).replace(
        """selector: 'cluster="prod"'}""", """selector: 'cluster="prod"', usage_basis: {memory: 5, cpu: 3, gpu: 2}}"""
    ).replace("""selector: 'cluster="stage"'}""", """selector: 'cluster="stage"', usage_basis: cpu}"""
              ) + f"idle: {idle}\n"


def idle_share(history, *, cluster: str, blend: dict[str, Fraction]) -> Fraction:
    """The idle capacity's share of the cluster's cost, from the history's true integrals alone."""
    share = Fraction(0)
    for resource, weight in blend.items():
        used = (history.expected(cluster=cluster, basis="usage") if resource == "memory" else
                history.expected_cpu(cluster=cluster) if resource == "cpu" else history.expected_gpu(cluster=cluster))
        idle = history.expected_idle(cluster=cluster, resource=resource)
        share += weight * Fraction(idle) / Fraction(idle + sum(used.values()))
    return share


@pytest.mark.parametrize("idle", ["common", "unallocated"])
def test_cpu_gpu_blend_and_idle_capacity_end_to_end(prometheus_server: PrometheusServer, agent_env: Path,
                                                    idle: str, capsys: pytest.CaptureFixture):
    bill, rules = write_inputs(agent_env, prometheus_server)
    rules.write_text(blended_rules(prometheus_server.url, idle))
    usage = agent_env / "usage.csv"
    assert main(["usage", "--rules", str(rules), "--period", "2026-09", "--out", str(usage)]) == 0
    assert allocate(bill, rules, agent_env / "live.csv") == 0
    assert allocate(bill, rules, agent_env / "offline.csv", "--usage", str(usage)) == 0

    assert (agent_env / "live.csv").read_bytes() == (agent_env / "offline.csv").read_bytes()
    with (agent_env / "live.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(Decimal(r["amount"]) for r in rows) == Decimal("1323.33")
    idle_rows = [r for r in rows if r["category"] == "idle"]
    assert {r["company"] for r in idle_rows} == ({"alpha", "beta"} if idle == "common" else {""})
    history = prometheus_server.history
    for cluster, cost, blend in (("prod", 1000, {"memory": Fraction(1, 2), "cpu": Fraction(3, 10),
                                                 "gpu": Fraction(1, 5)}),
                                 ("stage", 250, {"cpu": Fraction(1)})):
        reported = sum(Decimal(r["amount"]) for r in idle_rows if r["cluster"] == cluster)
        expected = cost * idle_share(history, cluster=cluster, blend=blend)
        assert abs(Fraction(reported) - expected) <= expected / 1000 + Fraction(1, 100), cluster
    with usage.open(newline="") as handle:
        dumped = {(r["cluster"], r["namespace"]): r for r in csv.DictReader(handle)}
    assert dumped[("prod", "ml")]["gpu_device_seconds"] == str(history.expected_gpu(cluster="prod")["ml"])
    assert dumped[("stage", "__idle__")]["gpu_device_seconds"] == ""
    printed = capsys.readouterr().out
    assert "usage of 9 namespaces in 2 cluster(s)" in printed and "reconciled" in printed
