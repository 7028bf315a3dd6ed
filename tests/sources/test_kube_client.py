"""The public face of agent.sources.kube, without a cluster: its names and its readable API errors."""

from __future__ import annotations

import inspect

from kubernetes.client.exceptions import ApiException

from agent.sources import kube


def test_all_lists_the_module_s_public_functions():
    functions = [name for name, value in vars(kube).items()
                 if inspect.isfunction(value) and value.__module__ == kube.__name__ and not name.startswith("_")]
    assert sorted(functions) == sorted(set(kube.__all__) - {"DEFAULT_LABEL"})


def test_an_api_error_reads_as_its_status_and_the_api_s_message_only():
    error = ApiException(status=403, reason="Forbidden")
    error.body = '{"kind": "Status", "message": "leases is forbidden"}'
    error.headers = {"Authorization": "Bearer secret-token"}
    assert kube.describe_api_error(error) == "HTTP 403 Forbidden: leases is forbidden"
    assert kube.describe_api_error(ApiException(status=500, reason="Internal Server Error")) == (
        "HTTP 500 Internal Server Error")
