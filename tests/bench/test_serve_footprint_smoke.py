"""A small run of the footprint benchmark: a real `cz-agent serve` on a store of 2 periods x 3 companies x 4
services, its idle memory and scrape latency reported, and every period, company and service exposed."""

from __future__ import annotations

import re

import pytest

from tests.bench import smoke_report

# The benchmark starts a real `cz-agent serve`.
pytestmark = [pytest.mark.bench, pytest.mark.integration]


def figure(report: str, label: str, goal: str) -> float:
    """The median of a figure of the report's table, checked to carry its spread, its goal and a verdict."""
    found = re.search(rf"\| {re.escape(label)} \| ([\d.]+) \(([\d.]+)-([\d.]+)\) \| < {goal} \| (yes|\*\*no\*\*) \|",
                      report)
    assert found is not None, f"{label} is missing:\n{report}"
    return float(found.group(1))


def test_serve_footprint_benchmark_smoke():
    report = smoke_report("serve_footprint.py", timeout=300)
    assert 20 < figure(report, "idle RSS, 1 s after the first answer, MiB", "150") < 2000
    assert 0 < figure(report, "/metrics p99 of 20 scrapes, ms", "100") < 10_000
    assert "2 periods (2025-11 to 2025-12), 3 companies, 4 services" in report
    # 2 periods x 3 companies x (4 services' exclusive cost + their cluster cost + the common pool), and each
    # period's unallocated row.
    assert "| `cz_allocation_cost` | 56 |" in report
    assert "| `cz_run_info` | 2 |" in report
