"""Exact money: parsing amounts, ISO 4217 minor units, and largest-remainder rounding."""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from decimal import Decimal
from fractions import Fraction

# ISO 4217 currencies whose minor unit is not 2 (everything else has cents).
_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(
        ["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF",
         "XOF", "XPF"],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}
_CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")
AMOUNT_DIGITS = 24
_AMOUNT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_LAST_PLACE = Decimal(1).scaleb(-AMOUNT_DIGITS)
# Wide enough to hold any amount of 24 digits before the point and 24 after.
_WIDE = decimal.Context(prec=2 * AMOUNT_DIGITS + 2, traps=[decimal.InvalidOperation])
_SPECIAL_NUMBER = re.compile(r"[+-]?(?:inf|infinity|s?nan[0-9]*)", re.IGNORECASE)


def minor_unit(currency: str) -> int:
    """Decimals of the currency's minor unit (ISO 4217): KRW 0, USD 2, KWD 3."""
    return _MINOR_UNITS.get(currency, 2)


def is_currency_code(text: str) -> bool:
    return bool(_CURRENCY_CODE.match(text))


def parse_amount(text: str) -> Decimal:
    """An exact amount from its text (`12.5`, `-0.01`, `5.6E-05`); ValueError if it is not a finite number
    written as bills write numbers: ASCII digits, an optional point and exponent. Python's Decimal also reads
    digit-group underscores (`1_000`) and non-ASCII digits, which no bill writes and which would bill a typo."""
    written = text.strip()
    if not _AMOUNT_TEXT.fullmatch(written):
        if _SPECIAL_NUMBER.fullmatch(written):
            raise ValueError(f"not a finite number: {text!r}")
        raise ValueError(f"not a number: {text!r}")
    amount = Decimal(written)
    # Bounded so that sums and roundings stay exact and small: no bill line is near 10**24 or has 24 decimals.
    # Zeros past the 24th decimal (a Parquet decimal(38, 30) prints them) are dropped, exactly; a digit is refused.
    if (not amount or amount.adjusted() < AMOUNT_DIGITS) and amount.as_tuple().exponent < -AMOUNT_DIGITS:
        held = amount.quantize(_LAST_PLACE, context=_WIDE)
        amount = held if held == amount else amount
    if (amount and amount.adjusted() >= AMOUNT_DIGITS) or amount.as_tuple().exponent < -AMOUNT_DIGITS:
        raise ValueError(f"out of range (more than {AMOUNT_DIGITS} digits before or after the point): {text!r}")
    return amount


def round_amount(amount: Fraction | Decimal, precision: int) -> Decimal:
    """Round half away from zero to `precision` decimals, exactly however many digits the amount has."""
    with exact_arithmetic():
        return _amount(_round_half_up(_in_units([amount], precision)[0]), precision)


def largest_remainder(amounts: Sequence[Fraction | Decimal], precision: int, *,
                      total: Decimal | None = None) -> list[Decimal]:
    """Round each exact amount to `precision` decimals so that the results add up to the rounded total, or to
    `total` when given (the rounded row that the amounts are the parts of).

    Each amount is floored to the minor unit; the units still missing to reach the total go one each to the
    amounts with the largest remainders (ties: the earlier amount; callers sort them). A `total` that the floors
    cannot reach that way (more than one unit per amount away) is a ValueError, never a unit lost or invented.
    Decimals are worked on as Decimals, compared in C: half a million groups take two or three seconds, where
    Fractions took a minute.
    """
    with exact_arithmetic():
        scaled = _in_units(amounts, precision)
        floors = [math.floor(value) for value in scaled]
        target = _round_half_up(sum(scaled)) if total is None else _whole_units(total, precision)
        missing = target - sum(floors)
        if total is not None and not 0 <= missing <= len(floors):
            raise ValueError(f"{total} cannot be shared among {len(floors)} amounts summing to {sum(scaled)} "
                             f"units of {precision} decimals")
        by_remainder = sorted(range(len(scaled)), key=lambda i: (floors[i] - scaled[i], i))
        for position in by_remainder[:missing]:
            floors[position] += 1
        return [_amount(units, precision) for units in floors]


def _in_units(amounts: Sequence[Fraction | Decimal], precision: int) -> list[Decimal] | list[Fraction]:
    """The amounts counted in units of `precision` decimals, exactly: Decimals stay Decimals; among Fractions,
    everything is a Fraction (Decimals and Fractions do not mix in arithmetic). Call within exact_arithmetic."""
    if all(isinstance(amount, Decimal) for amount in amounts):
        return [amount.scaleb(precision) for amount in amounts]
    scale = 10**precision
    return [Fraction(amount) * scale for amount in amounts]


def _whole_units(amount: Decimal, precision: int) -> int:
    """The amount counted in units of `precision` decimals; ValueError if it has more decimals. Call within
    exact_arithmetic."""
    units = amount.scaleb(precision)
    if units != units.to_integral_value():
        raise ValueError(f"{amount} has more than {precision} decimals")
    return int(units)


def _round_half_up(value: Fraction | Decimal) -> int:
    """The nearest whole number, halves away from zero. Call within exact_arithmetic."""
    units = (math.floor(2 * abs(value)) + 1) // 2
    return units if value >= 0 else -units


def _amount(units: int, precision: int) -> Decimal:
    """`units` hundredths (for precision 2) as an amount with exactly `precision` decimals."""
    return Decimal(units).scaleb(-precision)


def exact_arithmetic() -> AbstractContextManager[decimal.Context]:
    # The default context keeps 28 significant digits: a month of costs with 11 decimals can need more.
    # With the largest precision and Inexact trapped, a sum is exact or fails loudly, never rounded.
    context = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                              traps=[decimal.Inexact, decimal.InvalidOperation])
    return decimal.localcontext(context)


def exact_sum(amounts: Iterable[Decimal]) -> Decimal:
    with exact_arithmetic():
        return sum(amounts, Decimal(0))
