"""Shared fixtures: the real Prometheus, Kubernetes API server and PostgreSQL the integration tests start."""

pytest_plugins = ["tests.integration.fixtures_prom", "tests.integration.fixtures_kube",
                  "tests.integration.fixtures_live", "tests.integration.fixtures_pg"]
