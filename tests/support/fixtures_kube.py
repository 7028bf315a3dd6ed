"""Session fixtures: a real Kubernetes API server (etcd + kube-apiserver, started as envtest does, plus what a node
joining it needs: tests/support/fixtures_node.py)."""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from tests.support.ports import free_port
from tests.support.processes import setup_script_output, start_logged, stop_process
from tests.support.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTERNAL_KUBECONFIG_ENV = "CZ_AGENT_TEST_KUBECONFIG"
KUBE_BIN_ENV = "CZ_AGENT_KUBE_BIN"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
NODE_NAME = "cz-test-node"
# The identities of the node's components, each with its own token: the kubelet as a member of system:nodes (the
# Node authorizer limits it to its own node's objects), the controller-manager and the scheduler as the users their
# built-in ClusterRoles are bound to.
NODE_COMPONENT_USERS = {
    "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
    "kube-controller-manager": ("system:kube-controller-manager", ""),
    "kube-scheduler": ("system:kube-scheduler", ""),
}


@dataclass(frozen=True)
class NodeCredentials:
    """What the test node needs from the API server it joins: a token per component (NODE_COMPONENT_USERS), the CA
    the kubelet trusts for the API server's client certificate (logs, exec) and the ServiceAccount signing key."""

    node_name: str
    tokens: Mapping[str, str]
    kubelet_client_ca: Path
    service_account_key: Path


@dataclass(frozen=True)
class KubeApiServer:
    """How to reach the API server as cluster admin. `token`/`ca_file` are None when the kubeconfig has none."""

    kubeconfig: Path
    url: str
    token: str | None
    ca_file: Path | None
    # None for an external cluster: its nodes are its own.
    node_credentials: NodeCredentials | None = None


@pytest.fixture(scope="session")
def kube_apiserver() -> Iterator[KubeApiServer]:
    """$CZ_AGENT_TEST_KUBECONFIG's cluster if set (kind or any real one), else a fresh etcd + kube-apiserver."""
    external = os.environ.get(EXTERNAL_KUBECONFIG_ENV)
    if external:
        yield _external_cluster(Path(external))
        return
    with started_apiserver() as server:
        yield server


@contextmanager
def started_apiserver() -> Iterator[KubeApiServer]:
    """etcd and kube-apiserver in a temporary directory, stopped and removed afterwards."""
    bin_dir = _kube_bin_dir()
    with tempfile.TemporaryDirectory(prefix="cz-agent-kube-") as workdir, ExitStack() as processes:
        etcd_url = processes.enter_context(_etcd(bin_dir / "etcd", workdir=Path(workdir)))
        yield processes.enter_context(_apiserver(bin_dir / "kube-apiserver", etcd_url=etcd_url, workdir=Path(workdir)))


def write_kubeconfig(path: Path, *, url: str, token: str, ca_file: Path | None) -> Path:
    """A one-cluster, one-user kubeconfig authenticating with a bearer token."""
    cluster: dict[str, object] = {"server": url}
    if ca_file is None:
        cluster["insecure-skip-tls-verify"] = True
    else:
        cluster["certificate-authority"] = str(ca_file)
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "test", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@contextmanager
def namespace_reader_kubeconfig(server: KubeApiServer, admin: client.ApiClient, *, namespace: str, role: str,
                                path: Path) -> Iterator[Path]:
    """A kubeconfig for a new ServiceAccount `agent` in `namespace`, bound to a ClusterRole `role` that may only
    get/list/watch namespaces, with a token from the TokenRequest API; the role and binding go afterwards."""
    core = client.CoreV1Api(admin)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="agent")))
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_cluster_role(client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name=role),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["namespaces"], verbs=["get", "list", "watch"])]))
    rbac.create_cluster_role_binding(client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=role),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="agent", namespace=namespace)]))
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=86400))
    token = core.create_namespaced_service_account_token("agent", namespace, request).status.token
    try:
        yield write_kubeconfig(path, url=server.url, token=token, ca_file=server.ca_file)
    finally:
        rbac.delete_cluster_role_binding(role)
        rbac.delete_cluster_role(role)


def _external_cluster(kubeconfig: Path) -> KubeApiServer:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration, persist_config=False)
    bearer = configuration.api_key.get("BearerToken", "")
    return KubeApiServer(kubeconfig=kubeconfig, url=configuration.host,
                         token=bearer.removeprefix("Bearer ") or None,
                         ca_file=Path(configuration.ssl_ca_cert) if configuration.ssl_ca_cert else None)


def _kube_bin_dir() -> Path:
    if KUBE_BIN_ENV in os.environ:
        return Path(os.environ[KUBE_BIN_ENV])
    # A cold build takes many minutes; CI runs the script before pytest so this only finds the cache.
    return Path(setup_script_output(REPO_ROOT / "scripts" / "kube-binaries.sh").strip())


@contextmanager
def _etcd(binary: Path, *, workdir: Path) -> Iterator[str]:
    client_url = f"http://127.0.0.1:{free_port()}"
    peer_url = f"http://127.0.0.1:{free_port()}"
    command = [
        str(binary), "--name=test", f"--data-dir={workdir / 'etcd-data'}",
        f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=test={peer_url}",
        "--unsafe-no-fsync",  # Throwaway data: fsync only slows the tests down.
    ]
    log_path = workdir / "etcd.log"
    with _process(command, log_path=log_path) as process:
        wait_for(lambda: _http_ok(f"{client_url}/health"), what="etcd to be healthy", timeout=30, interval=0.25,
                 process=process, logs=log_path)
        yield client_url


@contextmanager
def _apiserver(binary: Path, *, etcd_url: str, workdir: Path) -> Iterator[KubeApiServer]:
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    token = secrets.token_hex(16)
    cert_dir = workdir / "apiserver-certs"
    service_account_key = _service_account_key(workdir)
    node = NodeCredentials(node_name=NODE_NAME, tokens={name: secrets.token_hex(16) for name in NODE_COMPONENT_USERS},
                           kubelet_client_ca=workdir / "kubelet-client-ca.crt", service_account_key=service_account_key)
    kubelet_client = _kubelet_client_certificate(workdir, ca=node.kubelet_client_ca)
    command = [
        str(binary), f"--etcd-servers={etcd_url}", f"--cert-dir={cert_dir}", f"--secure-port={port}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        # A loopback advertise address is only allowed without the `kubernetes` Service endpoint reconciler.
        "--endpoint-reconciler-type=none",
        "--authorization-mode=Node,RBAC", f"--token-auth-file={_token_file(workdir, token, node)}",
        f"--service-account-issuer={url}",
        f"--service-account-key-file={service_account_key}",
        f"--service-account-signing-key-file={service_account_key}",
        # logs and exec: the API server calls the kubelet at the address it reports, with this certificate.
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        f"--kubelet-client-certificate={kubelet_client}.crt", f"--kubelet-client-key={kubelet_client}.key",
    ]
    log_path = workdir / "kube-apiserver.log"
    # The apiserver writes a self-signed serving certificate (with its CA) here at start-up.
    ca_file = cert_dir / "apiserver.crt"
    with _process(command, log_path=log_path) as process:
        wait_for(lambda: _http_ok(f"{url}/readyz", token=token, ca_file=ca_file), what="kube-apiserver to be ready",
                 timeout=120, interval=0.25, process=process, logs=log_path)
        kubeconfig = write_kubeconfig(workdir / "admin.kubeconfig", url=url, token=token, ca_file=ca_file)
        yield KubeApiServer(kubeconfig=kubeconfig, url=url, token=token, ca_file=ca_file, node_credentials=node)


def _token_file(workdir: Path, token: str, node: NodeCredentials) -> Path:
    path = workdir / "tokens.csv"
    lines = [f'{token},admin,admin,"system:masters"']
    lines += [f'{node.tokens[name]},{user},{name},"{group}"' for name, (user, group) in NODE_COMPONENT_USERS.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _kubelet_client_certificate(workdir: Path, *, ca: Path) -> Path:
    """A CA (written to `ca`) and the client certificate it signs for the API server's calls to the kubelet, as
    system:masters; returns the certificate's path without its .crt/.key suffix."""
    stem = workdir / "apiserver-kubelet-client"
    ca_key = ca.with_suffix(".key")
    for command in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
             "-subj", "/CN=cz-test-kubelet-client-ca"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{stem}.key", "-out", f"{stem}.csr",
             "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client"],
            ["x509", "-req", "-in", f"{stem}.csr", "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
             "-out", f"{stem}.crt"]):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return stem


def _service_account_key(workdir: Path) -> Path:
    """An RSA key that both signs and verifies ServiceAccount tokens (a private key serves as both)."""
    path = workdir / "service-account.key"
    subprocess.run(["openssl", "genrsa", "-out", str(path), "2048"], check=True, capture_output=True)
    return path


@contextmanager
def _process(command: list[str], *, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = start_logged(command, log_path=log_path)
    try:
        yield process
    finally:
        stop_process(process)


def _http_ok(url: str, *, token: str | None = None, ca_file: Path | None = None) -> bool:
    if ca_file is not None and not ca_file.exists():
        return False
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
