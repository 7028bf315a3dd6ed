"""A small run of the bill benchmark: ours and the floor agree with the generator's exact totals and with each
other's split groups, and the report gives the ratios, the start-up time and the goals."""

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
    assert "| bill | lines | ours wall s | floor wall s | ours/floor |" in report
    for shape in ("native", "focus", "cur"):
        assert f"| {shape} | 20,000 | " in report
        assert f"| peak under 512 MiB and flat from 1 M lines (within 10%) | {shape} 20,000 | ours " in report
    assert "| `cz-agent --help` | " in report and "| `python -c pass` | " in report
    assert "| `cz-agent --help` under 0.1 s | | " in report
