"""The month-end forecast of a period from its stored runs (agent.core.forecast): what `cz-agent forecast`, the API's
/forecast, the forecast metrics and the statement show.

The forecast starts from the period's latest run (its bill per charge day and kind), the totals of the months
before it (their latest runs' tag lines) and the run of the month before, which shares a tag this month has no cost
for yet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from agent.core.forecast import HISTORY_MONTHS, ForecastRow, forecast_rows, project_tags
from agent.core.model import DailyCost, StoredRun, totals_per_tag
from agent.core.periods import Period
from agent.errors import StoreError
from agent.outputs.formats import FORECAST_DIMENSIONS

CSV_COLUMNS = ("period", *FORECAST_DIMENSIONS, "currency", "expected", "lower", "upper")


@dataclass(frozen=True)
class PeriodForecast:
    """A period's month-end forecast: one row per (company, service, category, currency) of the run it starts from."""

    period: str
    run_id: int
    as_of: date  # the last complete day of the bill it starts from
    rows: list[ForecastRow]

    def aggregated(self, dimension: str | None) -> list[ForecastRow]:
        """The rows summed per (`dimension`, currency), the other dimensions left empty; all of them without one.
        A sum's bounds are the sums of its rows' bounds: at least as wide as the sum's own range."""
        if dimension is None:
            return self.rows
        if dimension not in FORECAST_DIMENSIONS:
            raise ValueError(f"unknown forecast dimension {dimension!r}; expected one of "
                             f"{', '.join(FORECAST_DIMENSIONS)}")
        sums: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 3)
        for row in self.rows:
            figures = sums[(getattr(row, dimension), row.currency)]
            for position, amount in enumerate((row.expected, row.lower, row.upper)):
                figures[position] += amount
        return [ForecastRow(period=self.period, **{name: value if name == dimension else ""
                                                   for name in FORECAST_DIMENSIONS},
                            currency=currency, expected=figures[0], lower=figures[1], upper=figures[2])
                for (value, currency), figures in sorted(sums.items())]


def period_forecast(period: str, *, latest: Callable[[str], StoredRun | None], today: date) -> PeriodForecast:
    """The forecast of `period` on `today` (UTC), from the runs `latest` gives (a period's latest run, None if none)."""
    run = latest(period)
    if run is None:
        raise StoreError(f"no stored run for period {period}: a forecast starts from the month's bill so far")
    month = Period.parse(period)
    before = [month.previous()]
    while len(before) < HISTORY_MONTHS:
        before.insert(0, before[0].previous())
    earlier = {str(p): latest(str(p)) for p in before}
    as_of = forecast_day(month, run.daily_costs, today=today)
    projections = project_tags(period, run.daily_costs, as_of=as_of, history=_history(earlier.values()))
    return PeriodForecast(period=period, run_id=run.summary.id, as_of=as_of,
                          rows=forecast_rows(run, projections, previous=earlier[str(before[-1])]))


def forecast_day(month: Period, daily: Sequence[DailyCost], *, today: date) -> date:
    """The last complete day of the month's bill: the day before its latest dated usage line (bills arrive late, and
    the latest day may be partial) and before today; the month's last day once the month is over; the day before
    the month when no line is dated (the forecast then comes from earlier months)."""
    first, last = month.start.date(), (month.end - timedelta(days=1)).date()
    if today > last:
        return last
    dated = [cost.day for cost in daily if cost.day is not None and cost.kind == "usage" and first <= cost.day <= last]
    if not dated:
        return first - timedelta(days=1)
    return min(max(dated), today) - timedelta(days=1)


def _history(runs: Sequence[StoredRun | None]) -> dict[tuple[str, str], list[Decimal]]:
    """Each (currency, tag)'s total in each earlier month that has a run, oldest first (0 where a month's run has
    none of it)."""
    totals = [totals_per_tag(run.tag_lines) for run in runs if run is not None]
    keys = {key for month in totals for key in month}
    return {key: [month.get(key, (Decimal(0), 0))[0] for month in totals] for key in sorted(keys)}


def forecast_records(rows: Sequence[ForecastRow]) -> list[tuple[str, ...]]:
    """The rows as CSV_COLUMNS texts, amounts as exact decimal text."""
    return [(row.period, row.company, row.service, row.category, row.currency, str(row.expected), str(row.lower),
             str(row.upper)) for row in rows]
