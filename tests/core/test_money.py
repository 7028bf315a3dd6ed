import re
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.money import largest_remainder, minor_unit, parse_amount, round_amount


@pytest.mark.parametrize(("currency", "units"), [("USD", 2), ("KRW", 0), ("JPY", 0), ("KWD", 3), ("CLF", 4)])
def test_minor_units_follow_iso_4217(currency, units):
    assert minor_unit(currency) == units


@pytest.mark.parametrize(("text", "amount"), [("12.5", "12.5"), (" -0.01 ", "-0.01"), ("5.64902E-05", "0.0000564902"),
                                              ("0.00000080000", "8.0000E-7")])
def test_parse_amount_is_exact(text, amount):
    assert parse_amount(text) == Decimal(amount)


@pytest.mark.parametrize("text", ["", "n/a", "NaN", "Infinity", "1,5", "12.5 USD"])
def test_parse_amount_refuses_what_is_not_a_finite_number(text):
    with pytest.raises(ValueError):
        parse_amount(text)


def test_round_half_away_from_zero():
    assert round_amount(Decimal("2.345"), 2) == Decimal("2.35")
    assert round_amount(Decimal("-2.345"), 2) == Decimal("-2.35")
    assert round_amount(Fraction(1, 3), 0) == Decimal("0")


def test_largest_remainder_gives_missing_units_to_largest_fractions_then_order():
    rounded = largest_remainder([Fraction(10, 3), Fraction(10, 3), Fraction(10, 3)], 2)
    assert rounded == [Decimal("3.34"), Decimal("3.33"), Decimal("3.33")]
    with_credit = largest_remainder([Decimal("-0.005"), Decimal("1.006")], 2)
    assert sum(with_credit) == Decimal("1.00")
    assert with_credit == [Decimal("-0.01"), Decimal("1.01")]


@pytest.mark.parametrize("text", ["1e40", "1e-999999999", "1E-25", "1" * 25, "0." + "0" * 29 + "1"])
def test_amounts_out_of_range_are_refused(text):
    with pytest.raises(ValueError, match="out of range"):
        parse_amount(text)


def test_amounts_at_the_edge_of_the_range_are_exact():
    assert parse_amount("9" * 24) == Decimal("9" * 24)
    assert parse_amount("0." + "0" * 23 + "1") == Decimal("1E-24")


@pytest.mark.parametrize("text", ["1.25" + "0" * 28, "-0." + "0" * 23 + "1" + "0" * 6, "0E-50", "5." + "0" * 26 + "E-3",
                                  "9" * 23 + "." + "0" * 30])
def test_zeros_past_the_last_place_are_dropped_exactly(text):
    amount = parse_amount(text)
    assert amount == Decimal(text)
    assert amount.as_tuple().exponent >= -24


@pytest.mark.parametrize("text", ["1_000", "1_000.50", "١٢", "١٢.٥", "０", "12\u200b", "1 000", "1,5", "0x10", "1e",
                                  "--1", ".", "1.2.3"])
def test_costs_no_bill_writes_are_not_numbers(text):
    with pytest.raises(ValueError, match="not a number"):
        parse_amount(text)


@given(st.text(st.sampled_from(list("0123456789.eE+-_ \t\xa0١٢０")), max_size=12) | st.text(max_size=12))
def test_an_amount_is_read_only_from_ascii_digits_point_sign_and_exponent(text):
    written = re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text.strip(), re.ASCII)
    try:
        amount = parse_amount(text)
    except ValueError:
        return
    assert written is not None, f"{text!r} was read as {amount}"
    assert amount == Decimal(text.strip())


# ------------------------------------------------------------------------------- properties of the one rounding

exact_amounts = st.one_of(
    st.decimals(min_value=-10**6, max_value=10**9, places=7, allow_nan=False, allow_infinity=False),
    st.fractions(min_value=-10**6, max_value=10**9, max_denominator=10**6),
)


def reference_largest_remainder(amounts: list[Fraction], precision: int) -> list[Decimal]:
    """The method spelled out with Fractions and sorting by hand: floors, then the missing units to the largest
    remainders, the earlier amount first on a tie."""
    scale = 10**precision
    floors = [(a * scale).numerator // (a * scale).denominator for a in amounts]
    total = sum(amounts, Fraction(0)) * scale
    rounded_total = int(abs(total) + Fraction(1, 2)) * (1 if total >= 0 else -1)
    order = sorted(range(len(amounts)), key=lambda i: (-(amounts[i] * scale - floors[i]), i))
    for i in order[:rounded_total - sum(floors)]:
        floors[i] += 1
    return [Decimal(units).scaleb(-precision) for units in floors]


@settings(max_examples=300, deadline=None)
@given(values=st.lists(exact_amounts, max_size=40), precision=st.integers(min_value=0, max_value=6))
def test_largest_remainder_is_the_method_for_decimals_and_fractions_alike(values, precision):
    expected = reference_largest_remainder([Fraction(v) for v in values], precision)
    got = largest_remainder(values, precision)
    assert got == expected
    assert [r.as_tuple().exponent for r in got] == [-precision] * len(values)
    assert sum(got, Decimal(0)) == round_amount(sum((Fraction(v) for v in values), Fraction(0)), precision)


@settings(max_examples=300, deadline=None)
@given(value=exact_amounts, precision=st.integers(min_value=0, max_value=6))
def test_round_amount_is_half_away_from_zero_for_decimals_and_fractions(value, precision):
    # 200 digits of a Fraction are enough: one with no finite expansion is never within 10**-190 of a half.
    with localcontext(prec=200):
        exact = Decimal(value) if isinstance(value, Decimal) else Decimal(value.numerator) / Decimal(value.denominator)
        expected = exact.quantize(Decimal(1).scaleb(-precision), rounding=ROUND_HALF_UP)
    assert round_amount(value, precision) == expected
    assert round_amount(value, precision).as_tuple().exponent == -precision


def test_largest_remainder_reaches_a_given_total_or_refuses_it():
    thirds = [Fraction(10, 3)] * 3
    assert largest_remainder(thirds, 2, total=Decimal("10.01")) == [Decimal("3.34"), Decimal("3.34"), Decimal("3.33")]
    assert largest_remainder(thirds, 2, total=Decimal("9.99")) == [Decimal("3.33")] * 3
    for unreachable in (Decimal("9.98"), Decimal("10.03"), Decimal("10.005")):
        with pytest.raises(ValueError):
            largest_remainder(thirds, 2, total=unreachable)
