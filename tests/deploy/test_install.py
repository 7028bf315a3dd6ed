"""`helm install` into a real kube-apiserver (the default values and every switch on), then the chart's own
ServiceAccount, with a token from the TokenRequest API: the agent lists namespaces with it, and Secrets stay closed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException

from agent.sources.kube import namespace_services
from tests.deploy.tools import ALL_ON_VALUES, CHART, ChartTools
from tests.support.fixtures_kube import KubeApiServer, write_kubeconfig
from tests.support.fixtures_live import delete_namespace
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.integration]

OPTIONAL_KINDS = {"ServiceMonitor", "PrometheusRule", "NetworkPolicy"}
CRD_ESTABLISHED_SECONDS = 30


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    objects: list[dict]

    def named(self, kind: str) -> dict:
        (found,) = [o for o in self.objects if o["kind"] == kind]
        return found


@pytest.fixture(scope="module")
def operator_crds(admin: client.ApiClient, chart_tools: ChartTools) -> None:
    """The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs (already there in a kube-prometheus-stack
    cluster), established before the chart's objects of those kinds are created."""
    extensions = client.ApiextensionsV1Api(admin)
    names = []
    for path in chart_tools.crds:
        crd = yaml.safe_load(path.read_text())
        names.append(crd["metadata"]["name"])
        try:
            extensions.create_custom_resource_definition(crd)
        except ApiException as e:
            if e.status != 409:
                raise
    wait_for(lambda: all(_established(extensions.read_custom_resource_definition(name)) for name in names),
             what=f"CRDs {names} to be established", timeout=CRD_ESTABLISHED_SECONDS, interval=0.2)


def _established(crd: client.V1CustomResourceDefinition) -> bool:
    return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))


@pytest.fixture(params=[("cz-default", []), ("cz-all-on", ["--values", str(ALL_ON_VALUES)])],
                ids=["default-values", "all-on-values"])
def release(request: pytest.FixtureRequest, chart_tools: ChartTools, kube_apiserver: KubeApiServer,
            admin: client.ApiClient, operator_crds: None) -> Iterator[Release]:
    """The chart installed into a new namespace of the same name as the release; uninstalled afterwards."""
    name, values = request.param
    kubeconfig = ["--kubeconfig", str(kube_apiserver.kubeconfig)]
    chart_tools.run_helm("install", name, str(CHART), "--namespace", name, "--create-namespace", *values, *kubeconfig)
    manifest = chart_tools.run_helm("get", "manifest", name, "--namespace", name, *kubeconfig).stdout
    try:
        yield Release(name, name, [o for o in yaml.safe_load_all(manifest) if o])
    finally:
        chart_tools.run_helm("uninstall", name, "--namespace", name, *kubeconfig)
        delete_namespace(client.CoreV1Api(admin), name)


def test_the_api_server_holds_every_object_of_the_release(release: Release, admin: client.ApiClient):
    api = dynamic.DynamicClient(admin)
    for rendered in release.objects:
        resource = api.resources.get(api_version=rendered["apiVersion"], kind=rendered["kind"])
        stored = resource.get(name=rendered["metadata"]["name"], namespace=rendered["metadata"].get("namespace"))
        assert stored.metadata.labels["app.kubernetes.io/instance"] == release.name, rendered["kind"]
    kinds = {o["kind"] for o in release.objects}
    assert kinds >= {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
                     "PersistentVolumeClaim", "Service"}
    all_on = release.name == "cz-all-on"
    assert (kinds & OPTIONAL_KINDS) == (OPTIONAL_KINDS if all_on else set())

    deployment = client.AppsV1Api(admin).read_namespaced_deployment(release.named("Deployment")["metadata"]["name"],
                                                                      release.namespace)
    assert deployment.spec.strategy.type == "Recreate"
    container = deployment.spec.template.spec.containers[0]
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.capabilities.drop == ["ALL"]
    assert deployment.spec.template.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert container.readiness_probe.http_get.path == "/readyz"
    assert ("CZ_AGENT_API_TOKEN_FILE" in {e.name for e in container.env}) == all_on
    pod = deployment.spec.template.spec
    assert pod.termination_grace_period_seconds == (900 if all_on else 600)
    assert container.startup_probe.http_get.path == "/healthz"
    assert [c.name for c in pod.containers] == (["agent", "cloud-sql-proxy"] if all_on else ["agent"])
    assert [c.name for c in pod.init_containers] == (["init-inbox", "wait-for-prometheus"] if all_on
                                                     else ["init-inbox"])
    assert (pod.topology_spread_constraints is not None) == all_on


def test_the_service_account_lists_namespaces_and_is_refused_secrets(
        release: Release, kube_apiserver: KubeApiServer, admin: client.ApiClient, tmp_path: Path):
    account = release.named("ServiceAccount")["metadata"]["name"]
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    token = client.CoreV1Api(admin).create_namespaced_service_account_token(account, release.namespace,
                                                                           request).status.token
    kubeconfig = write_kubeconfig(tmp_path / "agent.kubeconfig", url=kube_apiserver.url, token=token,
                                  ca_file=kube_apiserver.ca_file)

    services = namespace_services(kubeconfig=kubeconfig)
    assert release.namespace in services and "kube-system" in services

    helm_record = f"sh.helm.release.v1.{release.name}.v1"
    with config.new_client_from_config(config_file=str(kubeconfig)) as as_agent:
        core = client.CoreV1Api(as_agent)
        refusals = {
            "list secrets": lambda: core.list_namespaced_secret(release.namespace),
            "read a secret": lambda: core.read_namespaced_secret(helm_record, release.namespace),
            "list secrets everywhere": lambda: core.list_secret_for_all_namespaces(),
            "list config maps": lambda: core.list_namespaced_config_map(release.namespace),
            "delete a namespace": lambda: core.delete_namespace(release.namespace),
        }
        for what, attempt in refusals.items():
            with pytest.raises(ApiException) as refused:
                attempt()
            assert refused.value.status == 403, what
