"""Integration: the namespace map read from a real Kubernetes API server."""

from __future__ import annotations

import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from agent.errors import KubernetesError
from agent.sources.kube import namespace_services
from tests.support.fixtures_kube import KubeApiServer, namespace_reader_kubeconfig, write_kubeconfig
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

# A fresh prefix per run: a real cluster may keep namespaces of earlier runs (or never finish deleting
# them, as with the bare apiserver, which has no namespace controller).
PREFIX = f"cz-test-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def admin(kube_apiserver: KubeApiServer) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(kube_apiserver.kubeconfig))
    with api_client:
        yield api_client


@pytest.fixture
def create_namespace(admin: client.ApiClient) -> Iterator[Callable[..., str]]:
    """Creates namespaces (name, labels) and deletes them after the test."""
    core = client.CoreV1Api(admin)
    created: list[str] = []

    def create(name: str, labels: dict[str, str] | None = None) -> str:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
        created.append(name)
        return name

    yield create
    for name in created:
        core.delete_namespace(name)


@pytest.fixture
def reader_kubeconfig(kube_apiserver: KubeApiServer, admin: client.ApiClient, create_namespace: Callable[..., str],
                      tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig of a ServiceAccount bound to a ClusterRole that may only get/list/watch namespaces."""
    namespace = create_namespace(f"{PREFIX}-agent")
    with namespace_reader_kubeconfig(kube_apiserver, admin, namespace=namespace, role=f"{PREFIX}-namespace-reader",
                                     path=tmp_path / "reader.kubeconfig") as kubeconfig:
        yield kubeconfig


def test_maps_every_namespace_to_its_label_value(kube_apiserver: KubeApiServer,
                                                 create_namespace: Callable[..., str]) -> None:
    prefix = f"{PREFIX}-map"
    create_namespace(f"{prefix}-billed", {"cz_container_bill": "checkout"})
    # The API rejects whitespace in label values, so blank is the only "empty" value a cluster can hold.
    create_namespace(f"{prefix}-blank", {"cz_container_bill": ""})
    create_namespace(f"{prefix}-unlabelled")
    create_namespace(f"{prefix}-other-label", {"team": "payments"})

    services = namespace_services(kubeconfig=kube_apiserver.kubeconfig)

    assert _under(prefix, services) == {
        f"{prefix}-billed": "checkout",
        f"{prefix}-blank": None,
        f"{prefix}-unlabelled": None,
        f"{prefix}-other-label": None,
    }
    assert services["default"] is None


def test_reads_the_label_it_is_given(kube_apiserver: KubeApiServer, create_namespace: Callable[..., str]) -> None:
    prefix = f"{PREFIX}-team"
    create_namespace(f"{prefix}-payments", {"team": "payments", "cz_container_bill": "checkout"})

    services = namespace_services(label="team", kubeconfig=kube_apiserver.kubeconfig)

    assert _under(prefix, services) == {f"{prefix}-payments": "payments"}


def test_follows_pages_beyond_the_first(kube_apiserver: KubeApiServer, create_namespace: Callable[..., str]) -> None:
    prefix = f"{PREFIX}-page"
    expected = {create_namespace(f"{prefix}-{index:02}", {"cz_container_bill": f"svc-{index}"}): f"svc-{index}"
                for index in range(30)}

    paged = namespace_services(kubeconfig=kube_apiserver.kubeconfig, page_size=7)

    assert _under(prefix, paged) == expected


def test_wrong_token_is_unauthorized_and_not_echoed(kube_apiserver: KubeApiServer, tmp_path: Path) -> None:
    bogus_token = f"not-a-token-{secrets.token_hex(8)}"
    kubeconfig = write_kubeconfig(tmp_path / "bogus.kubeconfig", url=kube_apiserver.url, token=bogus_token,
                                  ca_file=kube_apiserver.ca_file)

    with pytest.raises(KubernetesError) as raised:
        namespace_services(kubeconfig=kubeconfig)

    message = str(raised.value)
    assert "HTTP 401 Unauthorized" in message
    assert kube_apiserver.url in message
    assert bogus_token not in message


def test_namespace_reader_service_account_suffices_and_cannot_read_secrets(
        reader_kubeconfig: Path, create_namespace: Callable[..., str]) -> None:
    namespace = create_namespace(f"{PREFIX}-reader-sees", {"cz_container_bill": "allocation-agent"})

    # RBAC reaches the authorizer's cache a moment after the binding is created.
    services = wait_for(lambda: namespace_services(kubeconfig=reader_kubeconfig), what="the reader's namespaces",
                        timeout=10, interval=0.2, ignoring=(KubernetesError,))

    assert services[namespace] == "allocation-agent"
    reader = config.new_client_from_config(config_file=str(reader_kubeconfig))
    with reader, pytest.raises(ApiException) as refused:
        client.CoreV1Api(reader).list_secret_for_all_namespaces()
    assert refused.value.status == 403


@pytest.mark.parametrize("server", ["closed port", "silent listener"])
def test_unreachable_server_fails_fast_naming_it(server: str, tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        if server == "silent listener":
            listener.listen()  # Accepts the TCP handshake, then never answers: only the timeout ends the call.
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        kubeconfig = write_kubeconfig(tmp_path / "unreachable.kubeconfig", url=url, token="irrelevant",
                                      ca_file=None)
        started = time.monotonic()

        with pytest.raises(KubernetesError, match="unreachable") as raised:
            namespace_services(kubeconfig=kubeconfig, timeout_seconds=1)

    assert time.monotonic() - started < 5
    assert url in str(raised.value)


def test_missing_kubeconfig_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.kubeconfig"

    with pytest.raises(KubernetesError, match=re.escape(str(missing))):
        namespace_services(kubeconfig=missing)


def _under(prefix: str, services: dict[str, str | None]) -> dict[str, str | None]:
    return {name: value for name, value in services.items() if name.startswith(f"{prefix}-")}
