import re
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
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
    rounded = largest_remainder({"a": Fraction(10, 3), "b": Fraction(10, 3), "c": Fraction(10, 3)}, 2)
    assert rounded == {"a": Decimal("3.34"), "b": Decimal("3.33"), "c": Decimal("3.33")}
    with_credit = largest_remainder({"a": Decimal("-0.005"), "b": Decimal("1.006")}, 2)
    assert sum(with_credit.values()) == Decimal("1.00")
    assert with_credit == {"a": Decimal("-0.01"), "b": Decimal("1.01")}


@pytest.mark.parametrize("text", ["1e40", "1e-999999999", "0E-50", "1" * 25])
def test_amounts_out_of_range_are_refused(text):
    with pytest.raises(ValueError, match="out of range"):
        parse_amount(text)


def test_amounts_at_the_edge_of_the_range_are_exact():
    assert parse_amount("9" * 24) == Decimal("9" * 24)
    assert parse_amount("0." + "0" * 23 + "1") == Decimal("1E-24")


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
