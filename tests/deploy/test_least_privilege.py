"""Least privilege of the chart, rendered and installed: RBAC grants only namespaces get/list/watch and the lease
verbs, every container is hardened, no token is mounted when nothing needs it; the chart's own ServiceAccount
holds the lease on a real API server and is refused everything else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from agent.errors import KubernetesError
from agent.service.leader import LeaderElector, LeaseLock, LeaseTiming
from agent.sources.kube import client_configuration
from tests.deploy.tools import ALL_ON_VALUES, CHART, ChartTools
from tests.support.fixtures_kube import KubeApiServer, write_kubeconfig
from tests.support.fixtures_live import delete_namespace

pytestmark = pytest.mark.deploy

TWO_REPLICAS_VALUES = CHART / "ci" / "two-replicas-values.yaml"
LEASE = "cz-agent-leader"
NAMESPACES_RULE = ("ClusterRole", "", "namespaces", ("get", "list", "watch"), ())
LEASE_RULES = {("Role", "coordination.k8s.io", "leases", ("get", "update"), (LEASE,)),
               ("Role", "coordination.k8s.io", "leases", ("create",), ())}
RENDERS = {
    "default": ([], {NAMESPACES_RULE}),
    "all-on": (["--values", str(ALL_ON_VALUES)], {NAMESPACES_RULE}),
    "two-replicas": (["--values", str(TWO_REPLICAS_VALUES)], {NAMESPACES_RULE} | LEASE_RULES),
    "two-replicas-no-namespaces": (["--values", str(TWO_REPLICAS_VALUES), "--set", "rbac.readNamespaces=false"],
                                   LEASE_RULES),
    "no-kubernetes-api": (["--set", "rbac.readNamespaces=false"], set()),
}


def granted(objects: list[dict]) -> set[tuple]:
    """Every RBAC rule as (kind, apiGroup, resource, verbs, resourceNames), one per group and resource."""
    rules = set()
    for role in (o for o in objects if o["kind"] in ("Role", "ClusterRole")):
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, role["metadata"]["name"]
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    rules.add((role["kind"], group, resource, tuple(rule["verbs"]),
                               tuple(rule.get("resourceNames", ()))))
    return rules


@pytest.mark.parametrize("render", RENDERS, ids=list(RENDERS))
def test_rbac_grants_nothing_beyond_reading_namespaces_and_the_lease(chart_tools: ChartTools, render: str):
    values, expected = RENDERS[render]
    objects = chart_tools.render(*values)
    rules = granted(objects)
    assert rules == expected
    assert not any("*" in str(rule) for rule in rules)
    bindings = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert {b["roleRef"]["kind"] for b in bindings} == {rule[0] for rule in expected}
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cz-cz-allocation-agent",
                                        "namespace": "finops"}]


@pytest.mark.parametrize("render", RENDERS, ids=list(RENDERS))
def test_every_container_is_hardened_and_the_token_is_mounted_only_when_needed(chart_tools: ChartTools, render: str):
    values, expected = RENDERS[render]
    objects = chart_tools.render(*values)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not {"hostNetwork", "hostPID", "hostIPC"} & pod.keys()
    assert all("hostPath" not in volume for volume in pod["volumes"])
    for container in pod["containers"] + pod["initContainers"]:
        context = container["securityContext"]
        assert context == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                           "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}, \
            container["name"]
    # The token is what the RBAC rules are granted to: mounted exactly when there is a rule to use.
    assert pod["automountServiceAccountToken"] is bool(expected)
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert account["automountServiceAccountToken"] is False


def test_two_replicas_elect_a_leader_and_keep_a_replica_through_drains(chart_tools: ChartTools):
    chart_tools.run_helm("lint", "--strict", str(CHART), "--values", str(TWO_REPLICAS_VALUES))
    objects = chart_tools.render("--values", str(TWO_REPLICAS_VALUES))
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CZ_AGENT_LEADER_ELECTION"]["value"] == "true"
    assert env["CZ_AGENT_LEADER_ELECTION_LEASE_NAME"]["value"] == LEASE
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["CZ_AGENT_STORE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "cz-agent-store"
    (budget,) = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert budget["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize(("setting", "complaint"), [
    (["--set", "replicaCount=2", "--set", "persistence.accessModes={ReadWriteMany}"], "needs a shared store"),
    (["--set", "replicaCount=2", "--set", "store.existingSecret=s"], "needs a shared bill inbox"),
    (["--set", "leaderElection.enabled=true", "--set", "leaderElection.retryPeriodSeconds=9"],
     "leaseDurationSeconds > renewDeadlineSeconds > 1.2 x retryPeriodSeconds"),
])
def test_replicas_without_a_shared_store_or_with_unsafe_timings_fail_clearly(chart_tools: ChartTools,
                                                                          setting: list[str], complaint: str):
    result = chart_tools.run_helm("template", "cz", str(CHART), *setting, check=False)
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert complaint in line


@pytest.fixture
def two_replica_release(chart_tools: ChartTools, kube_apiserver: KubeApiServer,
                        admin: client.ApiClient, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The two-replica chart installed; yields its namespace and a kubeconfig with its ServiceAccount's token."""
    name = "cz-replicas"
    kubeconfig = ["--kubeconfig", str(kube_apiserver.kubeconfig)]
    chart_tools.run_helm("install", name, str(CHART), "--namespace", name, "--create-namespace",
                         "--values", str(TWO_REPLICAS_VALUES), *kubeconfig)
    try:
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[],
                                                                                    expiration_seconds=600))
        token = client.CoreV1Api(admin).create_namespaced_service_account_token(
            f"{name}-cz-allocation-agent", name, request).status.token
        yield name, write_kubeconfig(tmp_path / "agent.kubeconfig", url=kube_apiserver.url, token=token,
                                     ca_file=kube_apiserver.ca_file)
    finally:
        chart_tools.run_helm("uninstall", name, "--namespace", name, *kubeconfig)
        delete_namespace(client.CoreV1Api(admin), name)


@pytest.mark.integration
def test_the_chart_s_service_account_holds_its_lease_and_nothing_else(two_replica_release: tuple[str, Path]):
    namespace, kubeconfig = two_replica_release
    api = client.CoordinationV1Api(client.ApiClient(client_configuration(kubeconfig=kubeconfig, context=None)))
    candidate = LeaderElector(LeaseLock(api, name=LEASE, namespace=namespace, timeout_seconds=10), identity="pod-0",
                              timing=LeaseTiming(lease_duration=15, renew_deadline=10, retry_period=2))
    assert candidate.try_acquire_or_renew() and candidate.try_acquire_or_renew() and candidate.is_leading()
    candidate.stop(release=True)
    assert api.read_namespaced_lease(LEASE, namespace).spec.holder_identity is None

    other = LeaseLock(api, name="kube-controller-manager", namespace="kube-system", timeout_seconds=10)
    with pytest.raises(KubernetesError, match="403"):
        other.get()
    with config.new_client_from_config(config_file=str(kubeconfig)) as as_agent:
        coordination, core = client.CoordinationV1Api(as_agent), client.CoreV1Api(as_agent)
        refusals = {
            "list leases": lambda: coordination.list_namespaced_lease(namespace),
            "delete the lease": lambda: coordination.delete_namespaced_lease(LEASE, namespace),
            "patch the lease": lambda: coordination.patch_namespaced_lease(LEASE, namespace,
                                                                           {"spec": {"holderIdentity": "x"}}),
            "read another lease": lambda: coordination.read_namespaced_lease("other", namespace),
            "create a lease elsewhere": lambda: coordination.create_namespaced_lease(
                "default", client.V1Lease(metadata=client.V1ObjectMeta(name=LEASE))),
            "read the store secret": lambda: core.read_namespaced_secret("cz-agent-store", namespace),
            "list pods": lambda: core.list_namespaced_pod(namespace),
        }
        for what, attempt in refusals.items():
            with pytest.raises(ApiException) as refused:
                attempt()
            assert refused.value.status == 403, what
        assert namespace in {n.metadata.name for n in core.list_namespace().items}
