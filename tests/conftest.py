"""Shared fixtures: the real Prometheus, Kubernetes API server, PostgreSQL, object stores and Trino the integration
tests start, and a served agent on them (tests/support). A check that the markers `make test-fast` filters on are
where they belong."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.support.fixtures_prom", "tests.support.fixtures_kube",
                  "tests.support.fixtures_live", "tests.support.fixtures_pg", "tests.support.fixtures_objectstore",
                  "tests.support.fixtures_trino", "tests.support.fixtures_node"]

TESTS = Path(__file__).resolve().parent
# Fixtures that start a real server (or need one started): a test using any of them is an integration test.
SERVER_FIXTURES = {"prometheus_server", "kube_apiserver", "postgres_server", "postgres_url", "admin",
                   "labelled_namespaces", "agent_kubeconfig", "agent", "object_store_tools", "s3_server",
                   "azure_server", "gcs_server", "trino", "kube_node"}
# Every test under these directories carries the marker.
DIRECTORY_MARKERS = {"deploy": "deploy", "bench": "bench"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse to run a test whose markers would let `make test-fast` start a server or a deployment check:
    the markers are set in the test modules, this only checks them."""
    missing = []
    for item in items:
        wanted = set()
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            wanted.add("integration")
        directory = Path(item.path).relative_to(TESTS).parts[0]
        if directory in DIRECTORY_MARKERS:
            wanted.add(DIRECTORY_MARKERS[directory])
        missing += [f"{item.nodeid}: {marker}" for marker in sorted(wanted)
                    if item.get_closest_marker(marker) is None]
    if missing:
        raise pytest.UsageError("tests without the marker they need (see tests/conftest.py):\n  " + "\n  ".join(missing))
