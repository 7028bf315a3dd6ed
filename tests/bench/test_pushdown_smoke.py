"""A small run of the push-down benchmark: a real Trino sums a generated bill table to the generator's exact
totals, and the report gives the agent's time and peak memory beside Trino's."""

from __future__ import annotations

import pytest

from tests.bench import smoke_report

pytestmark = pytest.mark.bench


def test_pushdown_benchmark_smoke():
    report = smoke_report("pushdown.py", timeout=600)
    assert "| lines | files | Parquet MiB | generation s | groups returned | daily costs | agent wall s |" in report
    assert "| 20,000 | 4 | " in report
    assert "| Trino JVM | -Xmx1G " in report
    assert "the agent's peak went from" in report
