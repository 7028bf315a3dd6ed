"""A small run of the usage-fetch benchmark: it still runs for every basis, its two sides agree, and it reports the
ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fixtures_prom import ensure_prometheus

# The benchmark starts a real Prometheus.
pytestmark = [pytest.mark.bench, pytest.mark.integration]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "usage_fetch.py"


def test_usage_fetch_benchmark_smoke():
    ensure_prometheus()
    result = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = Path(result.stdout.strip().splitlines()[-1]).read_text()
    assert "5 namespaces" in report
    # One results table per basis, each with its floor query and its ratio.
    assert report.count("**ratio ours / floor**") == 3
    for basis in ("memory", "cpu", "gpu"):
        assert f"\n## {basis}\n" in report
        assert f"- {basis} floor, sent directly" in report
        assert f"{basis} **" in report.split("\n## Machine")[0]
