"""Shared fixtures: the real Prometheus, Kubernetes API server and PostgreSQL the integration tests start."""

pytest_plugins = ["tests.support.fixtures_prom", "tests.support.fixtures_kube",
                  "tests.support.fixtures_live", "tests.support.fixtures_pg"]
