"""Exact money: parsing amounts, ISO 4217 minor units, and largest-remainder rounding."""

from __future__ import annotations

import decimal
import re
from collections.abc import Hashable, Iterable, Mapping
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
    if (amount and amount.adjusted() >= AMOUNT_DIGITS) or amount.as_tuple().exponent < -AMOUNT_DIGITS:
        raise ValueError(f"out of range (more than {AMOUNT_DIGITS} digits before or after the point): {text!r}")
    return amount


def round_amount(amount: Fraction | Decimal, precision: int) -> Decimal:
    """Round half away from zero to `precision` decimals, exactly."""
    fraction = Fraction(amount)
    quantum = Decimal(1).scaleb(-precision)
    scaled = fraction * 10**precision
    units = _round_half_up(scaled)
    return (Decimal(units) * quantum).quantize(quantum)


def _round_half_up(value: Fraction) -> int:
    sign = -1 if value < 0 else 1
    magnitude = abs(value)
    whole, rest = divmod(magnitude.numerator, magnitude.denominator)
    if 2 * rest >= magnitude.denominator:
        whole += 1
    return sign * whole


def largest_remainder(amounts: Mapping[Hashable, Fraction], precision: int) -> dict[Hashable, Decimal]:
    """Round each exact amount to `precision` decimals so that the results add up to the rounded total.

    Each amount is floored to the minor unit; the units still missing to reach the rounded total go one
    each to the amounts with the largest remainders (ties: the order of `amounts`, which callers sort).
    """
    scale = 10**precision
    floors: dict[Hashable, int] = {}
    remainders: list[tuple[Fraction, int, Hashable]] = []
    for position, (key, amount) in enumerate(amounts.items()):
        scaled = Fraction(amount) * scale
        floor = scaled.numerator // scaled.denominator
        floors[key] = floor
        remainders.append((scaled - floor, position, key))
    total_units = _round_half_up(sum((Fraction(a) for a in amounts.values()), Fraction(0)) * scale)
    missing = total_units - sum(floors.values())
    remainders.sort(key=lambda item: (-item[0], item[1]))
    for _, _, key in remainders[:missing]:
        floors[key] += 1
    quantum = Decimal(1).scaleb(-precision)
    return {key: (Decimal(units) * quantum).quantize(quantum) for key, units in floors.items()}


def exact_arithmetic() -> AbstractContextManager[decimal.Context]:
    # The default context keeps 28 significant digits: a month of costs with 11 decimals can need more.
    # With the largest precision and Inexact trapped, a sum is exact or fails loudly, never rounded.
    context = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                              traps=[decimal.Inexact, decimal.InvalidOperation])
    return decimal.localcontext(context)


def exact_sum(amounts: Iterable[Decimal]) -> Decimal:
    with exact_arithmetic():
        return sum(amounts, Decimal(0))
