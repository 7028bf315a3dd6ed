"""A small run of the bill benchmark: the three tools agree with the generator's exact totals, and the
report gives the ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bill_import.py"


def test_bill_import_benchmark_smoke():
    result = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = Path(result.stdout.strip().splitlines()[-1]).read_text()
    for shape in ("native", "focus", "cur"):
        for tool in ("ours", "duckdb", "pandas"):
            assert f"| {shape} | 20,000 | {tool} |" in report
    assert "wall ours/tool" in report
    for shape in ("native", "focus", "cur"):
        assert f"| wall time within 1.5x of DuckDB | {shape} 20,000 | ours/DuckDB " in report
        assert f"| peak under 1 GiB and flat from 1 M lines (within 10%) | {shape} 20,000 | ours " in report
