"""A small run of the Parquet reader benchmark: both readers give the same totals, and the report compares them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "parquet_reader.py"


def test_parquet_reader_benchmark_smoke(tmp_path):
    out = tmp_path / "RESULTS-parquet.md"
    result = subprocess.run([sys.executable, str(BENCH), "--lines", "20000", "--repeats", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = out.read_text()
    assert "| duckdb |" in report and "| pyarrow |" in report
    assert "Every run's totals, rejects and counts were equal between the readers." in report
    assert "DuckDB/pyarrow wall time" in report
