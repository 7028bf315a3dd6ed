"""The billing period: parsing `YYYY-MM`, its UTC bounds, its neighbours and its order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.periods import Period
from agent.errors import PeriodError

# Every period whose end is a datetime (9999-12 ends after the last one).
periods = st.builds(Period, year=st.integers(min_value=1, max_value=9998), month=st.integers(min_value=1, max_value=12))
instants = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 1),
                        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                                   timezone(timedelta(hours=-8))]))


@given(periods)
def test_the_text_parses_back_to_the_period(period):
    text = str(period)
    assert len(text) == 7 and text[4] == "-"
    assert Period.parse(text) == period


@given(periods)
def test_previous_and_next_are_inverse(period):
    assert period.next().previous() == period
    if period.year > 1 or period.month > 1:
        assert period.previous().next() == period


@given(periods)
def test_bounds_are_midnight_utc_and_contiguous(period):
    assert period.start < period.end
    assert period.start.tzinfo is UTC and (period.start.day, period.start.hour, period.start.minute) == (1, 0, 0)
    assert period.end == period.next().start
    assert 28 <= (period.end - period.start).days <= 31


@given(periods)
def test_a_period_holds_its_start_but_not_its_end(period):
    assert period.contains(period.start)
    assert period.contains(period.end - timedelta(microseconds=1))
    assert not period.contains(period.end)
    if period != Period(1, 1):
        assert not period.contains(period.start - timedelta(microseconds=1))


@given(instants)
def test_the_period_of_an_instant_contains_it(moment):
    period = Period.of(moment)
    assert period.contains(moment)
    assert not period.previous().contains(moment) and not period.next().contains(moment)


@given(periods, periods)
def test_order_is_time_order(a, b):
    assert (a < b) == (a.start < b.start)
    assert (a < b) == (str(a) < str(b))


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-1", "26-10", "2026/10", "2026-10-01", " 2026-10",
                                  "2026-10\n", "", "0000-01", "\u0662\u0660\u0662\u0666-10", "2026-1O"])
def test_anything_but_yyyy_mm_is_refused_with_one_message(text):
    with pytest.raises(PeriodError, match=r"^expected a month as YYYY-MM, got ") as caught:
        Period.parse(text)
    assert str(caught.value) == f"expected a month as YYYY-MM, got {text!r}"


def test_a_period_error_is_a_value_error_for_validators():
    assert issubclass(PeriodError, ValueError)


def test_the_year_wraps_at_december_and_january():
    assert Period.parse("2026-12").next() == Period.parse("2027-01")
    assert Period.parse("2027-01").previous() == Period.parse("2026-12")
    assert Period.parse("2026-12").end == datetime(2027, 1, 1, tzinfo=UTC)


def test_the_period_of_an_instant_is_read_in_utc():
    new_year_in_tokyo = datetime(2027, 1, 1, 8, tzinfo=timezone(timedelta(hours=9)))
    assert Period.of(new_year_in_tokyo) == Period(2026, 12)
    with pytest.raises(ValueError, match="no time zone"):
        Period.of(datetime(2026, 10, 1))


def test_the_last_period_in_a_path_counts_and_longer_numbers_do_not():
    assert Period.last_in("inbox/2026-09/bill-2026-10.csv") == Period(2026, 10)
    assert Period.last_in("inbox/12026-10/bill.csv") is None
    assert Period.last_in("inbox/2026-104.csv") is None
    assert Period.last_in("inbox/bill.csv") is None


def test_there_is_no_month_13_and_no_period_after_9999_12():
    with pytest.raises(PeriodError):
        Period(2026, 13)
    with pytest.raises(PeriodError):
        Period(9999, 12).next()
