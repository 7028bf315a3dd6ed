"""A small run of the bill benchmark: ours and the floor agree with the generator's exact totals and with each
other's split groups, and the report gives the ratios, the start-up time and the goals."""

from __future__ import annotations

import pytest

from tests.bench import smoke_report

pytestmark = pytest.mark.bench


def test_bill_import_benchmark_smoke():
    report = smoke_report("bill_import.py", timeout=600)
    assert "| bill | lines | ours wall s | floor wall s | ours/floor |" in report
    for shape in ("native", "focus", "cur"):
        assert f"| {shape} | 20,000 | " in report
        assert f"| peak under 512 MiB and flat from 1 M lines (within 10%) | {shape} 20,000 | ours " in report
    assert "| `cz-agent --help` | " in report and "| `python -c pass` | " in report
    assert "| `cz-agent --help` under 0.1 s | | " in report
