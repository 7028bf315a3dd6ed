"""The month-end forecast: worked examples by hand, then properties over random months and runs."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core import forecast
from agent.core.allocation import allocate_lines
from agent.core.forecast import Projection, forecast_rows, project_tags
from agent.core.manifest import ReportDigest, RowCounts, RunManifest
from agent.core.model import CHARGE_KINDS, NO_COMPANY, DailyCost, RunSummary, StoredRun, TagLine
from agent.core.money import minor_unit, round_amount
from agent.core.rules import parse_rules

PERIOD = "2026-10"
DAYS = 31
RULES = parse_rules("""
companies: {alpha: 50, beta: 30, gamma: 20}
services:
  mobile: {alpha: 70, beta: 30}
  mcmp: {gamma: 100}
common_groups: {subcom: [mobile, mcmp]}
""")


def day(number: int) -> date:
    return date(2026, 10, number)


def usage(tag: str, amounts: dict[int, str | Decimal], *, currency: str = "USD") -> list[DailyCost]:
    return [DailyCost(currency=currency, tag=tag, day=day(number), kind="usage", amount=Decimal(amount),
                      line_count=1) for number, amount in amounts.items()]


def fee(tag: str, number: int | None, amount: str) -> DailyCost:
    return DailyCost(currency="USD", tag=tag, day=None if number is None else day(number), kind="fixed",
                     amount=Decimal(amount), line_count=1)


def level_change_margin(level: Fraction, *, left: int) -> Fraction:
    """The range of a noiseless month: the level-change risk alone, as the method describes it."""
    return forecast.STEP_RISK * level * Fraction(left * left, DAYS)


def assert_close(got: Decimal | Fraction, want: Fraction) -> None:
    assert abs(Fraction(got) - want) < Fraction(1, 10**30)


# ------------------------------------------------------------------------------------------ worked examples


def test_a_flat_rate_continues_to_the_month_end_and_the_range_is_the_level_change_risk():
    flat = usage("mobile", {n: "10" for n in range(1, 16)})
    projection = project_tags(PERIOD, flat, as_of=day(15), history={})[("USD", "mobile")]
    assert projection.expected == 310
    margin = level_change_margin(Fraction(10), left=16)
    assert_close(projection.upper, 310 + margin)
    assert_close(projection.lower, 310 - margin)


def test_fewer_than_seven_days_still_give_a_forecast():
    first_days = usage("mobile", {1: "8", 2: "12", 3: "10", 4: "9", 5: "11"})
    projection = project_tags(PERIOD, first_days, as_of=day(5), history={})[("USD", "mobile")]
    assert projection.expected == 50 + 26 * 10
    assert projection.lower < projection.expected < projection.upper


def test_a_weekly_pattern_is_carried_to_the_remaining_days():
    def weekly(when: date) -> Decimal:
        return Decimal(5) if when.weekday() >= 5 else Decimal(12)

    two_weeks = usage("search", {n: weekly(day(n)) for n in range(1, 15)})
    projection = project_tags(PERIOD, two_weeks, as_of=day(14), history={})[("USD", "search")]
    assert projection.expected == sum(weekly(day(n)) for n in range(1, DAYS + 1))
    # The week's mean is 10: a repeating pattern is no noise, so only the level-change risk is left.
    margin = Fraction(projection.upper) - Fraction(projection.expected)
    assert_close(margin, level_change_margin(Fraction(10), left=DAYS - 14))


def test_fees_and_credits_are_counted_once_and_never_projected():
    lines = [*usage("mobile", {n: "10" for n in range(1, 16)}), fee("mobile", 3, "100"), fee("mobile", 9, "-20")]
    projection = project_tags(PERIOD, lines, as_of=day(15), history={})[("USD", "mobile")]
    assert projection.expected == 310 + 100 - 20
    # A credit among the lines: the lower bound may go below what is known, but still holds the expected value.
    assert projection.lower < projection.expected < projection.upper


def test_a_tag_only_in_history_is_projected_from_its_last_three_months():
    history = {("USD", "cz_common_data"): [Decimal(v) for v in ("90", "100", "110", "120")]}
    projection = project_tags(PERIOD, [], as_of=day(15), history=history)[("USD", "cz_common_data")]
    assert projection.expected == 110
    margin = 10 + forecast.STEP_RISK * 110  # the spread of 100, 110 and 120, and a level change
    assert_close(projection.lower, 110 - margin)
    assert_close(projection.upper, 110 + margin)


def test_an_undated_monthly_bill_is_projected_from_history_but_never_below_what_it_holds():
    history = {("USD", "native"): [Decimal(100)] * 3}
    small = project_tags(PERIOD, [fee("native", None, "40")], as_of=day(15), history=history)[("USD", "native")]
    assert small.expected == 100
    assert_close(small.lower, 100 - forecast.STEP_RISK * 100)
    large = project_tags(PERIOD, [fee("native", None, "130")], as_of=day(15), history=history)[("USD", "native")]
    assert (large.expected, large.lower) == (130, 130)


def test_a_tag_of_daily_credits_projects_a_negative_total_within_its_range():
    credits = usage("savings", {n: "-5" for n in range(1, 16)})
    projection = project_tags(PERIOD, credits, as_of=day(15), history={})[("USD", "savings")]
    assert projection.expected == -155
    margin = level_change_margin(Fraction(5), left=16)
    assert_close(projection.lower, -155 - margin)
    assert_close(projection.upper, -155 + margin)


def test_the_partial_day_after_as_of_counts_only_where_it_already_exceeds_the_projection():
    complete = usage("mobile", {n: "10" for n in range(1, 16)})
    below = project_tags(PERIOD, [*complete, *usage("mobile", {16: "4"})], as_of=day(15), history={})
    above = project_tags(PERIOD, [*complete, *usage("mobile", {16: "25"})], as_of=day(15), history={})
    assert below[("USD", "mobile")].expected == 310
    assert above[("USD", "mobile")].expected == 310 - 10 + 25
    assert above[("USD", "mobile")].lower >= 150 + 25


def test_a_level_change_in_the_last_week_moves_the_level():
    stepped = usage("mobile", {n: "10" if n < 15 else "13" for n in range(1, 21)})
    projection = project_tags(PERIOD, stepped, as_of=day(20), history={})[("USD", "mobile")]
    known = 14 * 10 + 6 * 13
    assert projection.expected == known + 11 * 13


def test_a_complete_month_is_what_it_holds():
    lines = [*usage("mobile", {n: "10" for n in range(1, DAYS + 1)}), fee("mobile", 2, "5")]
    projection = project_tags(PERIOD, lines, as_of=day(31), history={})[("USD", "mobile")]
    assert projection == Projection(expected=Decimal(315), lower=Decimal(315), upper=Decimal(315))


def test_once_the_month_is_complete_an_undated_or_stopped_tag_is_what_it_holds_not_its_history():
    history = {("USD", "native"): [Decimal(100)] * 3, ("USD", "stopped"): [Decimal(80)] * 3}
    projections = project_tags(PERIOD, [fee("native", None, "40")], as_of=day(31), history=history)
    assert projections[("USD", "native")] == Projection(expected=Decimal(40), lower=Decimal(40), upper=Decimal(40))
    assert projections[("USD", "stopped")] == Projection(expected=Decimal(0), lower=Decimal(0), upper=Decimal(0))


def test_lines_dated_in_another_month_are_known_but_not_projected():
    late = DailyCost(currency="USD", tag="mobile", day=date(2026, 9, 30), kind="usage", amount=Decimal(50),
                     line_count=1)
    lines = [*usage("mobile", {n: "10" for n in range(1, 16)}), late]
    assert project_tags(PERIOD, lines, as_of=day(15), history={})[("USD", "mobile")].expected == 310 + 50


def test_an_unknown_charge_kind_is_named():
    odd = DailyCost(currency="USD", tag="mobile", day=day(1), kind="tax", amount=Decimal(1), line_count=1)
    with pytest.raises(ValueError, match="USD tag 'mobile' on 2026-10-01: kind 'tax' is not one of usage, fixed"):
        project_tags(PERIOD, [odd], as_of=day(15), history={})


# ------------------------------------------------------------------------------------------ forecast rows


def stored(tag_lines: list[TagLine], *, period: str = PERIOD) -> StoredRun:
    allocation = allocate_lines(tag_lines, rules=RULES, period=period)
    manifest = RunManifest(period=period, tool_version="test", rules_digest="", usage=None, bills=(),
                           rows=RowCounts(), totals={}, namespace_map={}, namespace_shares={},
                           report=ReportDigest(format="csv", sha256="", rows=len(allocation.rows)))
    summary = RunSummary(id=1, period=period, created_at="", tool_version="test", report_sha256="", manifest=manifest)
    return StoredRun(summary=summary, rows=allocation.rows, contributions=allocation.contributions,
                     tag_lines=allocation.tag_lines, rejected=[], splits=[])


def tag_line(tag: str, amount: str, *, currency: str = "USD", rule: str = "") -> TagLine:
    return TagLine(currency=currency, tag=tag, amount=Decimal(amount), line_count=1, rows_by_source={}, rule=rule)


def exact(value: str) -> Projection:
    return Projection(expected=Decimal(value), lower=Decimal(value), upper=Decimal(value))


def by_row(rows) -> dict[tuple[str, str, str], tuple[str, str, str]]:
    return {(r.company, r.service, r.category): (str(r.expected), str(r.lower), str(r.upper)) for r in rows}


def test_each_tag_is_carried_to_its_rows_in_the_run_s_shares():
    run = stored([tag_line("mobile", "100"), tag_line("", "50")])
    projections = {("USD", "mobile"): Projection(expected=Decimal(200), lower=Decimal(180), upper=Decimal(230)),
                   ("USD", ""): exact("100")}
    assert by_row(forecast_rows(run, projections)) == {
        ("alpha", "mobile", "service_exclusive"): ("140.00", "126.00", "161.00"),
        ("beta", "mobile", "service_exclusive"): ("60.00", "54.00", "69.00"),
        ("alpha", "", "common"): ("50.00", "50.00", "50.00"),
        ("beta", "", "common"): ("30.00", "30.00", "30.00"),
        ("gamma", "", "common"): ("20.00", "20.00", "20.00"),
    }


def test_a_tag_without_month_to_date_cost_is_shared_as_in_the_previous_run_else_unallocated():
    run = stored([tag_line("mobile", "5"), tag_line("mobile", "-5", rule="refund")])
    previous = stored([tag_line("mobile", "80"), tag_line("cz_common_subcom", "10")], period="2026-09")
    projections = {("USD", "mobile"): exact("10"), ("USD", "cz_common_subcom"): exact("30"),
                   ("USD", "new-tag"): exact("7")}
    assert by_row(forecast_rows(run, projections, previous=previous)) == {
        ("alpha", "mobile", "service_exclusive"): ("7.00", "7.00", "7.00"),
        ("beta", "mobile", "service_exclusive"): ("3.00", "3.00", "3.00"),
        ("alpha", "mobile", "service_common"): ("10.50", "10.50", "10.50"),
        ("beta", "mobile", "service_common"): ("4.50", "4.50", "4.50"),
        ("gamma", "mcmp", "service_common"): ("15.00", "15.00", "15.00"),
        (NO_COMPANY, "", "unallocated"): ("7.00", "7.00", "7.00"),
    }


def test_rows_round_so_that_they_add_up_and_keep_their_value_inside_the_range():
    run = stored([tag_line("", "3")])  # the common pool: alpha 50 %, beta 30 %, gamma 20 %
    cents = Projection(expected=Decimal("100.01"), lower=Decimal("100.00"), upper=Decimal("100.02"))
    # 50.005, 30.003 and 20.002: the missing cent goes to the largest remainder; the bounds round on their own.
    assert by_row(forecast_rows(run, {("USD", ""): cents})) == {
        ("alpha", "", "common"): ("50.01", "50.00", "50.01"),
        ("beta", "", "common"): ("30.00", "30.00", "30.01"),
        ("gamma", "", "common"): ("20.00", "20.00", "20.00"),
    }
    # 0.025, 0.015 and 0.010: beta's bound rounds to 0.02 where its value took 0.01; the range widens to hold it.
    assert by_row(forecast_rows(run, {("USD", ""): exact("0.05")})) == {
        ("alpha", "", "common"): ("0.03", "0.03", "0.03"),
        ("beta", "", "common"): ("0.01", "0.01", "0.02"),
        ("gamma", "", "common"): ("0.01", "0.01", "0.01"),
    }


# ------------------------------------------------------------------------------------------ properties

TAGS = ["mobile", "mcmp", "cz_common_subcom", "", "new-tag"]
CURRENCIES = ["USD", "KRW", "KWD"]
amounts = st.decimals(min_value=Decimal("-50"), max_value=Decimal("5000"), places=3, allow_nan=False)
non_negative_amounts = st.decimals(min_value=Decimal(0), max_value=Decimal("5000"), places=3, allow_nan=False)
charge_days = st.one_of(st.none(), st.integers(min_value=-3, max_value=DAYS - 1).map(
    lambda offset: day(1) + timedelta(days=offset)))


@st.composite
def daily_costs(draw, *, non_negative: bool = False) -> list[DailyCost]:
    """Lines scattered over currencies, tags, days and kinds, and one tag's usage on every day of a stretch."""
    values = non_negative_amounts if non_negative else amounts
    scattered = draw(st.lists(st.builds(DailyCost, currency=st.sampled_from(CURRENCIES), tag=st.sampled_from(TAGS),
                                        day=charge_days, kind=st.sampled_from(CHARGE_KINDS), amount=values,
                                        line_count=st.just(1)), max_size=40))
    series = draw(st.lists(values, max_size=DAYS))
    return [*scattered, *usage("mobile", dict(enumerate(series, start=1)))]


histories = st.dictionaries(st.tuples(st.sampled_from(CURRENCIES), st.sampled_from(TAGS)),
                            st.lists(amounts, max_size=5), max_size=4)
as_of_days = st.integers(min_value=-2, max_value=DAYS + 1).map(lambda offset: day(1) + timedelta(days=offset))


@settings(max_examples=150, deadline=None)
@given(daily=daily_costs(), history=histories, as_of=as_of_days)
def test_the_expected_value_is_always_inside_the_range(daily, history, as_of):
    projections = project_tags(PERIOD, daily, as_of=as_of, history=history)
    assert set(projections) == {(c.currency, c.tag) for c in daily} | set(history)
    for projection in projections.values():
        assert projection.lower <= projection.expected <= projection.upper


@settings(max_examples=150, deadline=None)
@given(daily=daily_costs(non_negative=True), history=histories, as_of=as_of_days)
def test_with_non_negative_costs_the_lower_bound_holds_what_is_known(daily, history, as_of):
    known: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for cost in daily:
        known[(cost.currency, cost.tag)] += cost.amount
    for key, projection in project_tags(PERIOD, daily, as_of=as_of, history=history).items():
        assert projection.lower >= known[key]


@settings(max_examples=100, deadline=None)
@given(daily=daily_costs(), history=histories, as_of=as_of_days)
def test_doubling_every_amount_doubles_every_projection(daily, history, as_of):
    doubled_daily = [DailyCost(currency=c.currency, tag=c.tag, day=c.day, kind=c.kind, amount=2 * c.amount,
                               line_count=c.line_count) for c in daily]
    doubled_history = {key: [2 * total for total in totals] for key, totals in history.items()}
    once = project_tags(PERIOD, daily, as_of=as_of, history=history)
    twice = project_tags(PERIOD, doubled_daily, as_of=as_of, history=doubled_history)
    assert set(once) == set(twice)
    for key, projection in once.items():
        figures = [(Fraction(getattr(projection, name)), Fraction(getattr(twice[key], name)))
                   for name in ("expected", "lower", "upper")]
        # Equal but for the last significant digits the Decimals are written with, of the largest figure (a bound
        # is the expected value less a margin that may nearly cancel it).
        scale = max(abs(double) for _, double in figures)
        for single, double in figures:
            assert abs(double - 2 * single) <= scale / 10 ** (forecast.DIGITS - 3)


projections_of = st.dictionaries(
    st.tuples(st.sampled_from(CURRENCIES), st.sampled_from(TAGS)),
    st.tuples(amounts, st.decimals(min_value=0, max_value=500, places=5), st.decimals(min_value=0, max_value=500,
                                                                                      places=5)).map(
        lambda t: Projection(expected=t[0], lower=t[0] - t[1], upper=t[0] + t[2])),
    max_size=8)
run_lines = st.lists(st.builds(tag_line, tag=st.sampled_from(TAGS), amount=amounts.map(str),
                               currency=st.sampled_from(CURRENCIES), rule=st.sampled_from(["", "claimed"])),
                     max_size=10)


@settings(max_examples=200, deadline=None)
@given(lines=run_lines, previous_lines=run_lines, projections=projections_of)
def test_forecast_rows_add_up_to_the_projections_of_each_currency(lines, previous_lines, projections):
    rows = forecast_rows(stored(lines), projections, previous=stored(previous_lines, period="2026-09"))
    totals: dict[str, Fraction] = defaultdict(Fraction)
    for (currency, _), projection in projections.items():
        totals[currency] += Fraction(projection.expected)
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        assert row.lower <= row.expected <= row.upper
        sums[row.currency] += row.expected
    assert dict(sums) == {currency: round_amount(total, minor_unit(currency)) for currency, total in totals.items()}
    assert len({(r.company, r.service, r.category, r.currency) for r in rows}) == len(rows)
