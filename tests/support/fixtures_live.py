"""Fixtures of the live end-to-end tests: labelled namespaces matching the backfilled history, the agent's
least-privilege ServiceAccount, and a served agent in live mode on the backfilled Prometheus and the API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.support.fixtures_kube import KubeApiServer, namespace_reader_kubeconfig
from tests.support.fixtures_prom import PrometheusServer
from tests.support.served import ServedAgent, served_agent

# The namespaces of the backfilled history (tests/support/promhistory.py) and their services.
LABELLED = {"mobile-api": "mobile", "mcmp": "mcmp", "legacy": "legacy-crm", "batch": "reports"}
BILL = """billingCycle,cz_container_bill,unblendedCost,currency
2026-09,cz_cluster_prod,1000.00,USD
2026-09,cz_cluster_stage,250.00,USD
2026-09,mobile,40.00,USD
2026-09,,33.33,USD
"""


def rules_text(prometheus_url: str) -> str:
    return f"""
companies: {{alpha: 60, beta: 40}}
services:
  mobile: {{alpha: 1}}
  mcmp: {{beta: 1}}
  legacy-crm: {{alpha: 1, beta: 1}}
  reports: {{beta: 1}}
clusters:
  prod: {{prometheus_url: "{prometheus_url}", selector: 'cluster="prod"'}}
  stage: {{prometheus_url: "{prometheus_url}", selector: 'cluster="stage"'}}
budgets:
  companies: {{alpha: {{amount: "1000", currency: USD}}}}
  services: {{mobile: {{amount: "500", currency: USD}}}}
"""


@pytest.fixture(scope="session")
def admin(kube_apiserver: KubeApiServer) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(config_file=str(kube_apiserver.kubeconfig)) as api_client:
        yield api_client


@pytest.fixture(scope="session")
def labelled_namespaces(admin: client.ApiClient) -> Iterator[None]:
    core = client.CoreV1Api(admin)
    for name, service in LABELLED.items():
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
            name=name, labels={"cz_container_bill": service})))
    yield
    for name in LABELLED:
        delete_namespace(core, name)


def delete_namespace(core: client.CoreV1Api, name: str) -> None:
    """Delete for good: a bare API server has no namespace controller to finish what `delete` starts."""
    try:
        core.delete_namespace(name)
        namespace = core.read_namespace(name)
    except client.exceptions.ApiException as e:
        if e.status == 404:
            return
        raise
    namespace.spec.finalizers = []
    core.replace_namespace_finalize(name, namespace)


@pytest.fixture(scope="session")
def agent_kubeconfig(kube_apiserver: KubeApiServer, admin: client.ApiClient, labelled_namespaces: None,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A ServiceAccount that may only read namespaces: what the agent runs with."""
    core = client.CoreV1Api(admin)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="cz-agent-e2e")))
    path = tmp_path_factory.mktemp("agent") / "agent.kubeconfig"
    with namespace_reader_kubeconfig(kube_apiserver, admin, namespace="cz-agent-e2e", role="cz-agent-e2e-reader",
                                     path=path) as kubeconfig:
        yield kubeconfig
    delete_namespace(core, "cz-agent-e2e")


def live_agent_settings(workdir: Path, *, prometheus_url: str, kubeconfig: Path, **overrides: str) -> dict[str, str]:
    """A served agent's settings in live mode: the rules of rules_text(prometheus_url), an inbox and a SQLite store
    under `workdir`, the inbox polled every second and the allocation every two, JSON logs; then `overrides`."""
    inbox = workdir / "inbox"
    inbox.mkdir()
    rules = workdir / "rules.yaml"
    rules.write_text(rules_text(prometheus_url))
    return {"CZ_AGENT_STORE_URL": f"sqlite:///{workdir / 'runs.db'}", "CZ_AGENT_RULES_FILE": str(rules),
            "CZ_AGENT_INBOX_DIR": str(inbox), "CZ_AGENT_INBOX_POLL_SECONDS": "1",
            "CZ_AGENT_ALLOCATION_INTERVAL_SECONDS": "2", "CZ_AGENT_KUBECONFIG": str(kubeconfig),
            "CZ_AGENT_LOG_FORMAT": "json", **overrides}


@pytest.fixture
def agent(prometheus_server: PrometheusServer, agent_kubeconfig: Path, tmp_path: Path) -> Iterator[ServedAgent]:
    """A ready `cz-agent serve` in live mode, its inbox, store (runs.db) and log (agent.log) in tmp_path."""
    settings = live_agent_settings(tmp_path, prometheus_url=prometheus_server.url, kubeconfig=agent_kubeconfig,
                                   CZ_AGENT_PROMETHEUS_RETRIES="0", CZ_AGENT_PROMETHEUS_TIMEOUT_SECONDS="5")
    with served_agent(settings, log_path=tmp_path / "agent.log") as running:
        yield running
