"""The chart's pod really runs: `helm install` on a node (tests/support/fixtures_node.py, or the cluster of
$CZ_AGENT_TEST_KUBECONFIG, kind included) with the image built from the Dockerfile and a real volume. The agent
runs as the chart says, lists namespaces with its mounted token, allocates a bill from its inbox, and a Prometheus
finding it through the Service's endpoints scrapes the report's figures; a deleted pod's replacement serves the
same figures; two replicas on PostgreSQL expose one series per figure."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.deploy.tools import CHART, REPO, ChartTools
from tests.support.fixtures_live import BILL, LABELLED, delete_namespace, rules_text
from tests.support.fixtures_node import KubeNode
from tests.support.fixtures_pg import PostgresServer
from tests.support.fixtures_prom import PrometheusServer, running_prometheus
from tests.support.http import http_get, sample
from tests.support.processes import setup_script_output
from tests.support.served import company_totals
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.integration]

AGENT_UID = 10001
PERIOD = "2026-09"
BILL_TOTAL = Decimal("1323.33")
# Generous: a pod's start on a loaded 2-core machine includes importing pandas.
POD_READY_SECONDS = 300
# Run inside the agent's container: what its main process (pid 1) runs as, and what it may write.
SECURITY_PROBE = """
import json, os
status = dict(line.split(":", 1) for line in open("/proc/1/status").read().splitlines())
root = [line.split() for line in open("/proc/1/mounts") if line.split()[1] == "/"][-1]
def writable(path):
    try:
        with open(path, "w"):
            pass
    except OSError:
        return False
    os.remove(path)
    return True
print(json.dumps({key: status[key].split() for key in ("Uid", "Gid", "Groups", "CapEff", "CapBnd", "NoNewPrivs",
                                                      "Seccomp")}
                 | {"root_options": root[3].split(","), "root_writable": writable("/probe"),
                    "data_writable": writable("/data/probe"), "command": open("/proc/1/cmdline").read().split("\\0")}))
"""
LIST_NAMESPACES = """
import json
from kubernetes import client, config
config.load_incluster_config()
print(json.dumps([n.metadata.name for n in client.CoreV1Api().list_namespace().items]))
"""
# Reads a bill on stdin, writes it beside the inbox's files and renames it in: never seen half-written.
DROP_BILL = """
import os, sys
partial = "/data/inbox/.bill-2026-09.csv.part"
with open(partial, "wb") as out:
    out.write(sys.stdin.buffer.read())
os.rename(partial, "/data/inbox/bill-2026-09.csv")
"""


@dataclass(frozen=True)
class PodRelease:
    """The chart installed in its own namespace (the release's name) on a node."""

    name: str
    node: KubeNode
    admin: client.ApiClient

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.name}"

    def ready_pods(self) -> list[str]:
        pods = client.CoreV1Api(self.admin).list_namespaced_pod(self.name, label_selector=self.selector).items
        return sorted(p.metadata.name for p in pods if p.metadata.deletion_timestamp is None and any(
            c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])))

    def exec(self, pod: str, code: str, *, stdin: str | None = None) -> str:
        return self.node.kubectl_run("exec", "-n", self.name, *(["-i"] if stdin is not None else []), pod, "-c",
                                     "agent", "--", "python", "-c", code, input=stdin)

    def get(self, pod: str, path: str) -> str:
        """GET on the agent's port through the API server's pod proxy: the same from here as from any cluster."""
        return self.node.kubectl_run("get", "--raw", f"/api/v1/namespaces/{self.name}/pods/{pod}:8080/proxy{path}")

    def report_csv(self, pod: str) -> str:
        return self.get(pod, f"/api/v1/allocations?period={PERIOD}&format=csv")


@contextmanager
def installed(chart_tools: ChartTools, node: KubeNode, admin: client.ApiClient, *, name: str, values: dict,
              workdir: Path, access_mode: str = "ReadWriteOnce",
              secrets: dict[str, dict[str, str]] | None = None) -> Iterator[PodRelease]:
    """helm install --wait into namespace `name` holding `secrets`, with a real volume (_volume); everything deleted
    afterwards."""
    core = client.CoreV1Api(admin)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    kubeconfig = ["--kubeconfig", str(node.api.kubeconfig)]
    with ExitStack() as undo:
        undo.callback(delete_namespace, core, name)
        for secret, data in (secrets or {}).items():
            core.create_namespaced_secret(name, client.V1Secret(metadata=client.V1ObjectMeta(name=secret),
                                                                string_data=data))
        persistence = undo.enter_context(_volume(node, core, name=name, access_mode=access_mode))
        values_file = workdir / f"{name}-values.yaml"
        values_file.write_text(yaml.safe_dump(values | {"persistence": persistence}))
        undo.callback(chart_tools.run_helm, "uninstall", name, "--namespace", name, "--wait", *kubeconfig,
                      check=False)
        chart_tools.run_helm("install", name, str(CHART), "--namespace", name, "--values", str(values_file),
                             "--wait", "--timeout", f"{POD_READY_SECONDS}s", *kubeconfig)
        yield PodRelease(name=name, node=node, admin=admin)


@contextmanager
def _volume(node: KubeNode, core: client.CoreV1Api, *, name: str, access_mode: str) -> Iterator[dict]:
    """The chart's `persistence` values: its claim bound to a hostPath volume of the node started here, else the
    cluster's default storage class. That class may have no ReadWriteMany (kind's local-path has not): there the
    replicas share a ReadWriteOnce claim made here, which holds as long as they run on one node (kind's)."""
    if node.volumes is not None:
        with node.host_path_volume(name, storage_class=name, access_mode=access_mode):
            yield {"storageClassName": name, "accessModes": [access_mode]}
    elif access_mode == "ReadWriteOnce":
        yield {}
    else:
        core.create_namespaced_persistent_volume_claim(name, client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=f"{name}-shared"), spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}))))
        yield {"existingClaim": f"{name}-shared"}


def agent_values(node: KubeNode, *, prometheus: str) -> dict:
    """The chart's values for the test: the image built here, rules whose clusters read the tests' Prometheus,
    an inbox polled every second and an allocation every two."""
    return {"image": {"repository": node.image_repository, "tag": node.image_tag, "pullPolicy": "Never"},
            "rules": {"content": rules_text(f"http://{prometheus}")},
            "agent": {"inboxPollSeconds": 1, "allocationIntervalSeconds": 2, "logFormat": "json"},
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
            "terminationGracePeriodSeconds": 60}


@contextmanager
def endpoints_prometheus(release: PodRelease, *, workdir: Path) -> Iterator[str]:
    """A Prometheus that finds the agent as the chart's ServiceMonitor tells the Prometheus Operator to: the
    endpoints of the release's Service, port `http`, path /metrics; its URL. An external cluster's pod addresses
    are out of reach from here: there each target is scraped through the API server's pod proxy."""
    api = release.node.api
    token_file = workdir / "prometheus-token"
    token_file.write_text(api.token or "")
    as_admin = {"authorization": {"credentials_file": str(token_file)},
                "tls_config": {"ca_file": str(api.ca_file)} if api.ca_file else {"insecure_skip_verify": True}}
    discovery = {"role": "endpoints", "api_server": api.url, "namespaces": {"names": [release.name]}, **as_admin}
    relabel = [
        {"source_labels": ["__meta_kubernetes_service_label_app_kubernetes_io_instance"], "regex": release.name,
         "action": "keep"},
        {"source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": "http", "action": "keep"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}]
    scrape = {"job_name": release.name, "kubernetes_sd_configs": [discovery], "relabel_configs": relabel}
    if release.node.network is None:
        relabel += [{"target_label": "__address__", "replacement": urllib.parse.urlsplit(api.url).netloc},
                    {"source_labels": ["pod"], "target_label": "__metrics_path__",
                     "replacement": f"/api/v1/namespaces/{release.name}/pods/$1:8080/proxy/metrics"}]
        scrape |= {"scheme": "https", **as_admin}
    # Debian's Prometheus has no Kubernetes discovery: one built with it (scripts/prometheus-kubernetes.sh).
    binary = setup_script_output(REPO / "scripts" / "prometheus-kubernetes.sh").strip()
    with running_prometheus([scrape], workdir=workdir, name=f"prometheus-{release.name}", binary=binary) as url:
        yield url


def query(prometheus: str, promql: str) -> list[dict]:
    return json.loads(http_get(f"{prometheus}/api/v1/query?query={urllib.parse.quote(promql)}"))["data"]["result"]


@pytest.fixture
def usage_source(kube_node: KubeNode, prometheus_server: PrometheusServer, labelled_namespaces: None) -> Iterator[str]:
    """The backfilled Prometheus as the pods reach it, with the history's namespaces labelled in the cluster."""
    with kube_node.host_service(int(prometheus_server.url.rpartition(":")[2])) as address:
        yield address


def test_the_pod_runs_as_the_chart_says_and_serves_the_report_prometheus_scrapes(
        kube_node: KubeNode, chart_tools: ChartTools, admin: client.ApiClient, usage_source: str, tmp_path: Path):
    values = agent_values(kube_node, prometheus=usage_source)
    with installed(chart_tools, kube_node, admin, name="cz-pod", values=values, workdir=tmp_path) as release:
        (pod,) = release.ready_pods()
        security = json.loads(release.exec(pod, SECURITY_PROBE))
        assert security["Uid"] == [str(AGENT_UID)] * 4 and security["Gid"] == [str(AGENT_UID)] * 4
        assert str(AGENT_UID) in security["Groups"], "fsGroup is not among the process's groups"
        assert int(security["CapEff"][0], 16) == 0 and int(security["CapBnd"][0], 16) == 0
        assert security["NoNewPrivs"] == ["1"] and security["Seccomp"] == ["2"]
        assert "ro" in security["root_options"] and not security["root_writable"]
        assert security["data_writable"], "the volume is not writable with the chart's fsGroup"
        assert Path(security["command"][1]).name == "cz-agent" and security["command"][2] == "serve"

        namespaces = json.loads(release.exec(pod, LIST_NAMESPACES))
        assert {release.name, "kube-system", *LABELLED} <= set(namespaces)

        release.exec(pod, DROP_BILL, stdin=BILL)
        wait_for(lambda: sample(release.get(pod, "/metrics"), "cz_bill_total_cost", period=PERIOD, currency="USD"),
                 what="the bill's figures on /metrics", timeout=POD_READY_SECONDS)
        report = release.report_csv(pod)
        totals = company_totals(report)
        assert sum(totals.values()) == BILL_TOTAL

        with endpoints_prometheus(release, workdir=tmp_path) as prometheus:
            scraped = wait_for(lambda: {r["metric"]["company"]: Decimal(r["value"][1]) for r in query(
                prometheus, f'sum by (company) (cz_allocation_cost{{period="{PERIOD}"}})')},
                what="Prometheus to scrape the agent through the Service's endpoints")
            assert scraped.keys() == totals.keys()
            for company, amount in totals.items():
                assert scraped[company] == pytest.approx(amount, abs=Decimal("1e-6"))
            (target,) = query(prometheus, f'up{{job="{release.name}"}}')
            assert target["metric"]["pod"] == pod and target["value"][1] == "1"

        replacement = replace_pod(release, pod)
        assert release.report_csv(replacement) == report
        replaced = release.get(replacement, "/metrics")
        assert sample(replaced, "cz_bill_total_cost", period=PERIOD, currency="USD") == float(BILL_TOTAL)

        # A new bill, and the pod deleted while it is imported and allocated: whichever pod finishes the work, the
        # next one serves it.
        release.exec(replacement, DROP_BILL, stdin=BILL + f"{PERIOD},mobile,10.00,USD\n")
        last = replace_pod(release, replacement)
        wait_for(lambda: sample(release.get(last, "/metrics"), "cz_bill_total_cost", period=PERIOD,
                                currency="USD") == float(BILL_TOTAL + 10), what="the new bill's figures after the "
                 "pod was deleted during its run", timeout=POD_READY_SECONDS)


def replace_pod(release: PodRelease, pod: str) -> str:
    """`pod` deleted (SIGTERM, the chart's grace period); the name of its Ready replacement."""
    client.CoreV1Api(release.admin).delete_namespaced_pod(pod, release.name)
    (replacement,) = wait_for(lambda: [p for p in release.ready_pods() if p != pod],
                              what=f"{pod}'s replacement to be Ready", timeout=POD_READY_SECONDS)
    return replacement


def test_two_replicas_on_postgresql_elect_one_leader_and_expose_one_series_per_figure(
        kube_node: KubeNode, chart_tools: ChartTools, admin: client.ApiClient, usage_source: str,
        postgres_server: PostgresServer, tmp_path: Path):
    database = postgres_server.create_database().rpartition("/")[2]
    with kube_node.host_service(postgres_server.port) as store_address:
        store_url = f"postgresql+psycopg://cz@{store_address}/{database}"
        values = agent_values(kube_node, prometheus=usage_source) | {
            "replicaCount": 2, "store": {"existingSecret": "cz-agent-store"},
            "leaderElection": {"leaseName": "cz-agent-leader"}}
        with installed(chart_tools, kube_node, admin, name="cz-pair", values=values, workdir=tmp_path,
                       access_mode="ReadWriteMany", secrets={"cz-agent-store": {"url": store_url}}) as release:
            pods = wait_for(lambda: len(release.ready_pods()) == 2 and release.ready_pods(),
                            what="both replicas to be Ready", timeout=POD_READY_SECONDS)
            leader = wait_for(lambda: client.CoordinationV1Api(admin).read_namespaced_lease(
                "cz-agent-leader", release.name).spec.holder_identity, what="a replica to hold the lease",
                ignoring=(OSError, client.ApiException))
            assert leader in pods
            release.exec(pods[0], DROP_BILL, stdin=BILL)
            wait_for(lambda: sample(release.get(leader, "/metrics"), "cz_bill_total_cost", period=PERIOD,
                                    currency="USD"), what="the leader's figures", timeout=POD_READY_SECONDS)
            with endpoints_prometheus(release, workdir=tmp_path) as prometheus:
                wait_for(lambda: len(query(prometheus, f'up{{job="{release.name}"}} == 1')) == 2
                         and query(prometheus, "cz_allocation_cost"), what="both replicas scraped")
                series = query(prometheus, f'cz_allocation_cost{{period="{PERIOD}"}}')
                leaders = query(prometheus, "cz_agent_leader == 1")
            assert {s["metric"]["pod"] for s in series} == {leader}
            assert [s["metric"]["pod"] for s in leaders] == [leader]
            assert sum(Decimal(s["value"][1]) for s in series) == pytest.approx(BILL_TOTAL, abs=Decimal("1e-6"))
