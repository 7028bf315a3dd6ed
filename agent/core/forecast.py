"""Month-end forecast of the open month: each (currency, tag)'s bill lines so far projected to the month's end with
a range, and those projections carried to companies, services and categories the way the run split the tag.

How a tag is projected (the README's "Forecast of the open month" says the same for users):
- `usage` lines accrue by day. The daily level is the mean of the last 7 complete days, which cancels a weekly
  pattern. A level change in the last two weeks is looked for in the week-over-week differences (each day less
  the same weekday a week before, which the weekly pattern does not touch); if one explains them well beyond
  noise, the days before it are moved to the new level. Each remaining day is that level plus its weekday's
  offset, measured on the month so far. With fewer than 7 complete days the level is their plain mean and no
  weekday is told apart.
- `fixed` lines (one-off and monthly fees, taxes, credits), undated lines of a tag that has dated ones, and lines
  dated outside the month are counted once, as they are, and never projected.
- A tag with no dated line, or with no complete day yet, is projected from its earlier months' totals; once every
  day of the month is complete, every tag is what the bill holds.
- The range adds the day-to-day noise of the remaining days and the error of the level (both measured on the
  month so far, at a 90% two-sided normal quantile) to the risk that the level changes again before the month
  ends: a change of STEP_RISK of the level, on a day of the month that may still be ahead (so this margin shrinks
  with the square of the days left). When every line of a tag is non-negative the lower bound is at least what
  the bill already holds.

Amounts are worked on as Fractions; a projection is converted to Decimal once, at DIGITS significant digits (a
square root and a mean of seven are not exact in decimals).
"""

from __future__ import annotations

import calendar
import decimal
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction

from agent.core.model import CATEGORIES, CHARGE_KINDS, NO_COMPANY, DailyCost, StoredRun
from agent.core.money import largest_remainder, minor_unit, round_amount
from agent.core.periods import Period

WEEK = 7
# The normal quantile of the range's noise part: 90% two-sided.
NOISE_QUANTILE = Fraction("1.645")
# The level change a month is assumed to bring, as a share of the daily level.
STEP_RISK = Fraction("0.06")
# How much more a level change within the last week must explain of the week-over-week differences than noise
# (an F statistic with one degree of freedom) before the level is moved to it.
CHANGE_THRESHOLD = Fraction(16)
# The first week-over-week differences needed before a level change is looked for.
CHANGE_MIN_DIFFERENCES = 5
# Week-over-week differences looked at: the last two weeks'.
CHANGE_WINDOW_DAYS = 2 * WEEK
# Earlier months averaged for a tag projected from its history.
HISTORY_MONTHS = 3
DIGITS = 40
_CONTEXT = decimal.Context(prec=DIGITS)


@dataclass(frozen=True)
class Projection:
    """One month-end total and its range, exact (not rounded to the currency)."""

    expected: Decimal
    lower: Decimal
    upper: Decimal


@dataclass(frozen=True)
class ForecastRow:
    """The month-end forecast of one report row (without the cluster), rounded to the currency's minor unit."""

    period: str
    company: str
    service: str
    category: str
    currency: str
    expected: Decimal
    lower: Decimal
    upper: Decimal


@dataclass(frozen=True)
class _Level:
    """The daily usage level of the month so far and how well it is known, all per day."""

    level: Fraction
    level_variance: Fraction
    noise_variance: Fraction
    weekday_offsets: tuple[Fraction, ...]  # Monday first; zeros where no weekday could be told apart


@dataclass(frozen=True)
class _TagMonth:
    """One tag's bill lines so far, gathered for the projection."""

    known: Fraction                      # every line, whatever its kind or day
    usage_by_day: dict[int, Fraction]    # usage lines dated within the month, by day of the month
    dated: bool                          # whether any line has a charge date
    non_negative: bool


def project_tags(period: str, daily: Sequence[DailyCost], *, as_of: date,
                 history: Mapping[tuple[str, str], Sequence[Decimal]]) -> dict[tuple[str, str], Projection]:
    """The month-end total of each (currency, tag) of the month's lines or of `history`, from the lines so far.

    `as_of` is the last complete day: lines of later days are known but their days are projected in full.
    `history` holds earlier closed months' totals per (currency, tag), oldest first.
    """
    month = Period.parse(period)
    tags = _tag_months(daily, month=month)
    keys = sorted(set(tags) | set(history))
    empty = _TagMonth(known=Fraction(0), usage_by_day={}, dated=False, non_negative=True)
    return {key: _project(tags.get(key, empty), month=month, as_of=as_of, history=history.get(key, ()))
            for key in keys}


def _tag_months(daily: Sequence[DailyCost], *, month: Period) -> dict[tuple[str, str], _TagMonth]:
    known: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
    usage: dict[tuple[str, str], dict[int, Fraction]] = defaultdict(lambda: defaultdict(Fraction))
    dated: set[tuple[str, str]] = set()
    negative: set[tuple[str, str]] = set()
    for cost in daily:
        if cost.kind not in CHARGE_KINDS:
            raise ValueError(f"daily cost of {cost.currency} tag {cost.tag!r} on {cost.day}: kind {cost.kind!r} is "
                             f"not one of {', '.join(CHARGE_KINDS)}")
        key = (cost.currency, cost.tag)
        known[key] += Fraction(cost.amount)
        if cost.amount < 0:
            negative.add(key)
        if cost.day is not None:
            dated.add(key)
            if cost.kind == "usage" and (cost.day.year, cost.day.month) == (month.year, month.month):
                usage[key][cost.day.day] += Fraction(cost.amount)
    return {key: _TagMonth(known=total, usage_by_day=dict(usage[key]), dated=key in dated,
                           non_negative=key not in negative)
            for key, total in known.items()}


def _project(tag: _TagMonth, *, month: Period, as_of: date, history: Sequence[Decimal]) -> Projection:
    days = calendar.monthrange(month.year, month.month)[1]
    complete = _complete_days(month, as_of=as_of, days=days)
    if complete == days:
        return _projection(tag.known, tag.known, tag.known)
    if not tag.dated or complete == 0:
        return _from_history(tag, history)
    return _from_days(tag, month=month, complete=complete, days=days)


def _complete_days(month: Period, *, as_of: date, days: int) -> int:
    """How many days of the month are complete by the end of `as_of`."""
    if (as_of.year, as_of.month) < (month.year, month.month):
        return 0
    if (as_of.year, as_of.month) > (month.year, month.month):
        return days
    return as_of.day


def _from_history(tag: _TagMonth, history: Sequence[Decimal]) -> Projection:
    """A whole month from the mean of the last HISTORY_MONTHS months, within their spread and a level change;
    never below what the month already holds when it is all non-negative."""
    recent = [Fraction(total) for total in history[-HISTORY_MONTHS:]]
    expected = sum(recent, Fraction(0)) / len(recent) if recent else tag.known
    spread = max((abs(total - expected) for total in recent), default=Fraction(0))
    if tag.non_negative:
        expected = max(expected, tag.known)
    margin = spread + STEP_RISK * abs(expected)
    return _bounded(tag, expected=expected, margin=margin)


def _from_days(tag: _TagMonth, *, month: Period, complete: int, days: int) -> Projection:
    """The complete days' usage continued to the month's end; a later day's lines so far count if they are more."""
    series = [tag.usage_by_day.get(day, Fraction(0)) for day in range(1, complete + 1)]
    level = _level(series, first_weekday=month.start.weekday())
    left = days - complete
    expected = tag.known
    for day in range(complete + 1, days + 1):
        arrived = tag.usage_by_day.get(day, Fraction(0))
        projected = level.level + level.weekday_offsets[date(month.year, month.month, day).weekday()]
        if tag.non_negative:
            projected = max(projected, Fraction(0))
        expected += (max(arrived, projected) if projected >= 0 else min(arrived, projected)) - arrived
    variance = left * level.noise_variance + left * left * level.level_variance
    margin = (NOISE_QUANTILE * _square_root(variance)
              + STEP_RISK * abs(level.level) * Fraction(left * left, days))
    return _bounded(tag, expected=expected, margin=margin)


def _bounded(tag: _TagMonth, *, expected: Fraction, margin: Fraction) -> Projection:
    lower = expected - margin
    if tag.non_negative:
        lower = max(lower, tag.known)
    return _projection(expected, lower, expected + margin)


def _level(series: list[Fraction], *, first_weekday: int) -> _Level:
    """The daily level of the last complete days, moved past a level change of the last two weeks if one shows."""
    if len(series) < WEEK:
        level = _mean(series)
        spread = _variance(series) if len(series) > 1 else level * level
        return _Level(level=level, level_variance=spread / len(series), noise_variance=spread,
                      weekday_offsets=(Fraction(0),) * WEEK)
    differences = {day: series[day] - series[day - WEEK]
                   for day in range(max(WEEK, len(series) - CHANGE_WINDOW_DAYS), len(series))}
    change = _level_change(differences)
    if change is not None:
        noise = change.residual / (2 * (len(differences) - 1))
    elif differences:
        noise = sum((d * d for d in differences.values()), Fraction(0)) / (2 * len(differences))
    else:
        noise = _variance(series)
    # A whole week, so that the weekly pattern cancels out; the latest, so that an older level change is past.
    if change is None:
        return _Level(level=_mean(series[-WEEK:]), level_variance=noise / WEEK, noise_variance=noise,
                      weekday_offsets=_weekday_offsets(series, first_weekday=first_weekday))
    # The days before the change are moved to the new level; their share of the week makes the estimate of the
    # change's size count.
    at_new_level = [value + change.size if day < change.first else value for day, value in enumerate(series)]
    before = Fraction(max(change.first - (len(series) - WEEK), 0), WEEK)
    return _Level(level=_mean(at_new_level[-WEEK:]),
                  level_variance=noise / WEEK + before * before * 2 * noise / change.days,
                  noise_variance=noise,
                  weekday_offsets=_weekday_offsets(at_new_level, first_weekday=first_weekday))


@dataclass(frozen=True)
class _Change:
    first: int           # index of the first day at the new level
    size: Fraction
    days: int            # the week-over-week differences that measured it
    residual: Fraction   # the differences' sum of squares left once the change is taken out


def _level_change(differences: dict[int, Fraction]) -> _Change | None:
    """The level change that best explains the week-over-week differences, if it explains enough more than noise
    would. A change at day t makes the differences of days t to t + 6 its size (a week later both days of a
    difference are at the new level) and leaves the others at zero."""
    if len(differences) < CHANGE_MIN_DIFFERENCES:
        return None
    none = sum((d * d for d in differences.values()), Fraction(0))
    candidates = []
    for first in range(min(differences) - WEEK + 1, max(differences) + 1):
        block = [d for day, d in differences.items() if first <= day < first + WEEK]
        size = _mean(block)
        candidates.append(_Change(first=first, size=size, days=len(block), residual=none - len(block) * size * size))
    best = min(candidates, key=lambda change: (change.residual, -change.first))
    explained = none - best.residual
    if explained == 0 or explained * (len(differences) - 1) <= CHANGE_THRESHOLD * best.residual:
        return None
    return best


def _weekday_offsets(series: list[Fraction], *, first_weekday: int) -> tuple[Fraction, ...]:
    """Each weekday's mean difference from the mean of a week around it, the seven adding up to zero."""
    by_weekday: dict[int, list[Fraction]] = defaultdict(list)
    for day, value in enumerate(series):
        start = min(max(day - WEEK // 2, 0), len(series) - WEEK)
        by_weekday[(first_weekday + day) % WEEK].append(value - _mean(series[start:start + WEEK]))
    offsets = [_mean(by_weekday[weekday]) for weekday in range(WEEK)]
    centre = _mean(offsets)
    return tuple(offset - centre for offset in offsets)


def _mean(values: Sequence[Fraction]) -> Fraction:
    return sum(values, Fraction(0)) / len(values)


def _variance(values: Sequence[Fraction]) -> Fraction:
    mean = _mean(values)
    return sum(((v - mean) ** 2 for v in values), Fraction(0)) / (len(values) - 1)


def _square_root(value: Fraction) -> Fraction:
    with decimal.localcontext(_CONTEXT):
        return Fraction((Decimal(value.numerator) / Decimal(value.denominator)).sqrt())


def _projection(expected: Fraction, lower: Fraction, upper: Fraction) -> Projection:
    return Projection(expected=_decimal(expected), lower=_decimal(lower), upper=_decimal(upper))


def _decimal(value: Fraction) -> Decimal:
    with decimal.localcontext(_CONTEXT):
        return Decimal(value.numerator) / Decimal(value.denominator)


# ------------------------------------------------------------------------------------------ per report row

_RowKey = tuple[str, str, str]  # company, service, category


def forecast_rows(run: StoredRun, projections: Mapping[tuple[str, str], Projection], *,
                  previous: StoredRun | None = None) -> list[ForecastRow]:
    """Each projected tag carried to the rows its month-to-date cost went to, in the same shares, summed per
    (company, service, category, currency) and rounded: the expected values with the largest-remainder method, so
    that a currency's rows add up to its rounded projections; the bounds each half away from zero, widened to the
    expected value where rounding would put it outside.

    A tag the run has no cost for yet (none billed, or its lines cancel out) is shared as in `previous`, the latest
    run of the period before; a tag neither run has cost for is unallocated.
    """
    shares = _tag_shares(run)
    earlier = _tag_shares(previous) if previous is not None else {}
    exact: dict[str, dict[_RowKey, list[Fraction]]] = defaultdict(lambda: defaultdict(lambda: [Fraction(0)] * 3))
    for key, projection in projections.items():
        parts = shares.get(key) or earlier.get(key) or {(NO_COMPANY, "", "unallocated"): Fraction(1)}
        bounds = [Fraction(projection.expected), Fraction(projection.lower), Fraction(projection.upper)]
        for row_key, share in parts.items():
            figures = exact[key[0]][row_key]
            for position, bound in enumerate(bounds):
                figures[position] += share * bound
    return [row for currency in sorted(exact)
            for row in _rounded_rows(run.summary.period, currency, exact[currency])]


def _tag_shares(run: StoredRun) -> dict[tuple[str, str], dict[_RowKey, Fraction]]:
    """Per (currency, tag) of the run with a non-zero month-to-date amount: each row's share of it."""
    month_to_date: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
    for line in run.tag_lines:
        month_to_date[(line.currency, line.tag)] += Fraction(line.amount)
    amounts: dict[tuple[str, str], dict[_RowKey, Fraction]] = defaultdict(lambda: defaultdict(Fraction))
    for c in run.contributions:
        amounts[(c.currency, c.tag)][(c.company, c.service, c.category)] += c.amount
    return {key: {row_key: amount / month_to_date[key] for row_key, amount in rows.items()}
            for key, rows in amounts.items() if month_to_date[key]}


def _rounded_rows(period: str, currency: str, exact: Mapping[_RowKey, list[Fraction]]) -> list[ForecastRow]:
    precision = minor_unit(currency)
    keys = sorted(exact, key=lambda k: (CATEGORIES.index(k[2]), k[0], k[1]))
    expected = largest_remainder([exact[k][0] for k in keys], precision)
    rows = []
    for key, value in zip(keys, expected):
        lower = min(round_amount(exact[key][1], precision), value)
        upper = max(round_amount(exact[key][2], precision), value)
        rows.append(ForecastRow(period=period, company=key[0], service=key[1], category=key[2], currency=currency,
                                expected=value, lower=lower, upper=upper))
    return rows
