"""Smoke runs of the benchmarks in bench/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def smoke_report(script: str, *, timeout: float) -> str:
    """The report of `python bench/<script> --smoke`, which must succeed and print the report's path last."""
    result = subprocess.run([sys.executable, str(BENCH_DIR / script), "--smoke"], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return Path(result.stdout.strip().splitlines()[-1]).read_text()
