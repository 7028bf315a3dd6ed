"""Session fixtures: a real Kubernetes API server (etcd + kube-apiserver, started as envtest does)."""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from tests.support.logs import last_lines
from tests.support.ports import free_port
from tests.support.processes import start_logged, stop_process
from tests.support.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTERNAL_KUBECONFIG_ENV = "CZ_AGENT_TEST_KUBECONFIG"
KUBE_BIN_ENV = "CZ_AGENT_KUBE_BIN"


@dataclass(frozen=True)
class KubeApiServer:
    """How to reach the API server as cluster admin. `token`/`ca_file` are None when the kubeconfig has none."""

    kubeconfig: Path
    url: str
    token: str | None
    ca_file: Path | None


@pytest.fixture(scope="session")
def kube_apiserver() -> Iterator[KubeApiServer]:
    """$CZ_AGENT_TEST_KUBECONFIG's cluster if set (kind or any real one), else a fresh etcd + kube-apiserver."""
    external = os.environ.get(EXTERNAL_KUBECONFIG_ENV)
    if external:
        yield _external_cluster(Path(external))
        return
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
    built = subprocess.run([str(REPO_ROOT / "scripts" / "kube-binaries.sh")], capture_output=True, text=True,
                           check=False)
    if built.returncode != 0:
        pytest.fail(f"scripts/kube-binaries.sh failed ({built.returncode}):\n{last_lines(built.stderr)}",
                    pytrace=False)
    return Path(built.stdout.strip())


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
    command = [
        str(binary), f"--etcd-servers={etcd_url}", f"--cert-dir={cert_dir}", f"--secure-port={port}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--service-cluster-ip-range=10.0.0.0/24",
        # A loopback advertise address is only allowed without the `kubernetes` Service endpoint reconciler.
        "--endpoint-reconciler-type=none",
        "--authorization-mode=RBAC", f"--token-auth-file={_token_file(workdir, token)}",
        f"--service-account-issuer={url}",
        f"--service-account-key-file={service_account_key}",
        f"--service-account-signing-key-file={service_account_key}",
    ]
    log_path = workdir / "kube-apiserver.log"
    # The apiserver writes a self-signed serving certificate (with its CA) here at start-up.
    ca_file = cert_dir / "apiserver.crt"
    with _process(command, log_path=log_path) as process:
        wait_for(lambda: _http_ok(f"{url}/readyz", token=token, ca_file=ca_file), what="kube-apiserver to be ready",
                 timeout=120, interval=0.25, process=process, logs=log_path)
        kubeconfig = write_kubeconfig(workdir / "admin.kubeconfig", url=url, token=token, ca_file=ca_file)
        yield KubeApiServer(kubeconfig=kubeconfig, url=url, token=token, ca_file=ca_file)


def _token_file(workdir: Path, token: str) -> Path:
    path = workdir / "tokens.csv"
    path.write_text(f'{token},admin,admin,"system:masters"\n', encoding="utf-8")
    return path


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
