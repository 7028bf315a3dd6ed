"""A small run of the forecast backtest: 6 generated months forecast at each checkpoint, their figures within the
issue's goals (every month within 5 % at day 15, the actual within the range at least 90 % of the time)."""

from __future__ import annotations

import re

import pytest

from tests.bench import smoke_report

pytestmark = [pytest.mark.bench]

CHECKPOINT_ROW = re.compile(r"^\| (\d+) \| (\d+) \| ([\d.]+)% \| ([\d.]+)% \| ([\d.]+)% \| ([\d.]+)% \|$", re.MULTILINE)


def test_forecast_backtest_smoke():
    report = smoke_report("forecast_backtest.py", timeout=120)
    rows = {int(found[0]): [float(figure) for figure in found[1:]] for found in CHECKPOINT_ROW.findall(report)}
    assert set(rows) == {5, 10, 15, 25}, report
    months, mean_error, max_error, coverage, width = zip(*(rows[day] for day in sorted(rows)))
    assert set(months) == {6}
    assert rows[15][2] <= 5.0
    # Each checkpoint forecasts the same 6 months, so the coverage over all of them is the checkpoints' mean.
    assert sum(coverage) / len(coverage) >= 90.0
    assert all(0 <= low <= high for low, high in zip(mean_error, max_error))
    # The range narrows as the month goes on, and the forecast's error shrinks with it.
    assert list(width) == sorted(width, reverse=True)
    assert mean_error[-1] < mean_error[0]
    assert "- day 15, every month within 5%: met (largest" in report
    assert re.search(r"- actual within the range over all checkpoints: [\d.]+%, goal at least 90%: met", report)
