"""A small run of the bill benchmark: the three tools agree with the generator's exact totals, and the
report gives the ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bill_import.py"


def test_bill_import_benchmark_smoke():
    result = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = Path(result.stdout.strip().splitlines()[-1]).read_text()
    for shape in ("native", "focus", "cur"):
        for tool in ("ours", "duckdb", "pandas"):
            assert f"| {shape} | 20,000 | {tool} |" in report
    assert "wall ours/tool" in report
