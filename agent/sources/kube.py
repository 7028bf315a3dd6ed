"""The Kubernetes API: client configuration (in-cluster or kubeconfig), readable API errors, and the namespace map
(every namespace and the value of its billing label). The one module that loads Kubernetes credentials."""

from __future__ import annotations

import json
from pathlib import Path

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from agent.errors import KubernetesError

__all__ = ["DEFAULT_LABEL", "client_configuration", "describe_api_error", "namespace_services"]

DEFAULT_LABEL = "cz_container_bill"


def namespace_services(*, label: str = DEFAULT_LABEL, kubeconfig: Path | None = None, context: str | None = None,
                       timeout_seconds: float = 30, page_size: int = 500) -> dict[str, str | None]:
    """Every namespace name -> its `label` value, trimmed (None when absent or blank).

    Credentials come from the pod's service account when running in a cluster and no kubeconfig or
    context is given, else from `kubeconfig` (default: $KUBECONFIG, then ~/.kube/config).
    """
    configuration = client_configuration(kubeconfig=kubeconfig, context=context)
    with client.ApiClient(configuration) as api_client:
        namespaces = _list_namespaces(client.CoreV1Api(api_client), page_size=page_size,
                                      timeout_seconds=timeout_seconds, server=configuration.host)
    return {namespace.metadata.name: _label_value(namespace.metadata.labels, label) for namespace in namespaces}


def client_configuration(*, kubeconfig: Path | None, context: str | None) -> client.Configuration:
    """A Kubernetes client configuration: the pod's service account when running in a cluster and neither
    `kubeconfig` nor `context` is given, else `kubeconfig` (default: $KUBECONFIG, then ~/.kube/config) at
    `context` (default: its current one). KubernetesError when no credentials can be loaded.

    Requests are not retried by the client: the caller's timeout bounds each call, and callers retry."""
    configuration = client.Configuration()
    # One attempt per request: the caller's timeout then bounds the whole call, and the service loop retries.
    configuration.retries = 0
    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config(client_configuration=configuration)
            return configuration
        except ConfigException:
            pass  # Not in a pod: fall back to the kubeconfig.
    where = str(kubeconfig) if kubeconfig is not None else "the default kubeconfig"
    try:
        # persist_config=False: a token refresh must never rewrite the user's kubeconfig.
        config.load_kube_config(config_file=str(kubeconfig) if kubeconfig is not None else None,
                                context=context, client_configuration=configuration, persist_config=False)
    except (ConfigException, OSError, ValueError) as e:
        raise KubernetesError(f"cannot load Kubernetes credentials from {where}: {e}") from e
    return configuration


def _list_namespaces(core: client.CoreV1Api, *, page_size: int, timeout_seconds: float,
                     server: str) -> list[client.V1Namespace]:
    namespaces: list[client.V1Namespace] = []
    continue_token: str | None = None
    while True:
        try:
            page = core.list_namespace(limit=page_size, _continue=continue_token, _request_timeout=timeout_seconds)
        except ApiException as e:
            raise KubernetesError(f"Kubernetes API {server} cannot list namespaces: {describe_api_error(e)}") from e
        except urllib3.exceptions.HTTPError as e:
            raise KubernetesError(f"Kubernetes API {server} is unreachable: {_transport_reason(e)}") from e
        namespaces.extend(page.items)
        continue_token = page.metadata.var_continue if page.metadata else None
        if not continue_token:
            return namespaces


def describe_api_error(error: ApiException) -> str:
    """An API error for a message: 'HTTP 403 Forbidden: <the API's own message>'. Built from the response's
    status and message only, so no credential or request header leaks into logs."""
    status = f"HTTP {error.status} {error.reason}"
    try:
        message = json.loads(error.body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{status}: {message}" if message else status


def _transport_reason(error: urllib3.exceptions.HTTPError) -> str:
    reason = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) else error
    return str(reason or error)


def _label_value(labels: dict[str, str] | None, label: str) -> str | None:
    value = (labels or {}).get(label, "").strip()
    return value or None
