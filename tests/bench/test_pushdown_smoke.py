"""A small run of the push-down benchmark: a real Trino sums a generated bill table to the generator's exact
totals, and the report gives the agent's time and peak memory beside Trino's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "pushdown.py"


def test_pushdown_benchmark_smoke():
    result = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = Path(result.stdout.strip().splitlines()[-1]).read_text()
    assert "| lines | files | Parquet MiB | generation s | groups returned | agent wall s |" in report
    assert "| 20,000 | 4 | " in report
    assert "| Trino JVM | -Xmx1G " in report
    assert "the agent's peak went from" in report
