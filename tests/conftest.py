"""Shared fixtures: the real Prometheus and Kubernetes API server the integration tests start."""

pytest_plugins = ["tests.integration.fixtures_prom", "tests.integration.fixtures_kube",
                  "tests.integration.fixtures_live"]
