"""A small run of the usage-fetch benchmark: it still runs for every basis, its two sides agree, and it reports the
ratios."""

from __future__ import annotations

import pytest

from tests.bench import smoke_report
from tests.support.fixtures_prom import ensure_prometheus

# The benchmark starts a real Prometheus.
pytestmark = [pytest.mark.bench, pytest.mark.integration]


def test_usage_fetch_benchmark_smoke():
    ensure_prometheus()
    report = smoke_report("usage_fetch.py", timeout=300)
    assert "5 namespaces" in report
    # One results table per basis, each with its floor query and its ratio.
    assert report.count("**ratio ours / floor**") == 3
    for basis in ("memory", "cpu", "gpu"):
        assert f"\n## {basis}\n" in report
        assert f"- {basis} floor, sent directly" in report
        assert f"{basis} **" in report.split("\n## Machine")[0]
