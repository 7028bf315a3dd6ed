"""Property tests of the split: for random lines and dimension orders, no line is lost and the rows add up
to the rounded bill of each currency."""

from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.bills.grouping import split_bill
from agent.bills.lineitems import LINE_ITEM_COLUMNS
from agent.core.money import largest_remainder
from agent.core.split import NO_VALUE

MINOR_UNITS = {"USD": 2, "KRW": 0, "JPY": 0, "KWD": 3, "CLF": 4}
NAMES = {
    "sub_account": [None, "alice", "bob", "Bob", "(x)"],
    "workspace": [None, "ws-prod", "ws-dev", "ws-prod-2"],
    "api_key": [None, "key-1", "key-2", "key-10"],
}
amounts = st.decimals(min_value=Decimal("-5000"), max_value=Decimal("10") ** 9, places=7, allow_nan=False,
                      allow_infinity=False)
line = st.fixed_dictionaries({
    "cost": amounts,
    "currency": st.sampled_from(sorted(MINOR_UNITS)),
    **{column: st.sampled_from(values) for column, values in NAMES.items()},
})
dimension_orders = st.lists(st.sampled_from(sorted(NAMES)), min_size=1, max_size=3, unique=True)


def frame(lines: list[dict]) -> pd.DataFrame:
    records = [{**dict.fromkeys(LINE_ITEM_COLUMNS), "period": "2026-10", "source": "bill.csv", "row": index + 2,
                **values} for index, values in enumerate(lines)]
    return pd.DataFrame(records, columns=LINE_ITEM_COLUMNS)


def rounded(amount: Decimal, places: int) -> Decimal:
    with localcontext(prec=200):
        return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(line, min_size=1, max_size=60), columns=dimension_orders)
def test_rows_add_up_to_the_rounded_bill_and_no_line_is_lost(lines, columns):
    result = split_bill(frame(lines), columns=columns)
    expected: dict[tuple, Decimal] = defaultdict(Decimal)
    with localcontext(prec=200):
        for values in lines:
            key = (values["currency"], *(values[c] if values[c] is not None else NO_VALUE for c in columns))
            expected[key] += values["cost"]
    got = {(row.currency, *row.values): row for row in result.rows}
    assert len(got) == len(result.rows)
    assert set(got) == set(expected)
    assert sum(row.line_count for row in result.rows) == len(lines)
    for key, row in got.items():
        unit = Decimal(1).scaleb(-MINOR_UNITS[row.currency])
        assert row.exact_amount == expected[key]
        assert abs(row.amount - expected[key]) < unit
        assert row.amount.as_tuple().exponent == unit.as_tuple().exponent
    for currency in {key[0] for key in expected}:
        with localcontext(prec=200):
            bill = sum((amount for key, amount in expected.items() if key[0] == currency), Decimal(0))
        assert result.rounded_totals[currency] == rounded(bill, MINOR_UNITS[currency])
        assert result.row_totals()[currency] == result.rounded_totals[currency]
    assert [(row.currency, *row.values) for row in result.rows] == sorted(got)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(amounts, min_size=1, max_size=40), places=st.integers(min_value=0, max_value=4))
def test_largest_remainder_gives_decimals_the_result_of_their_exact_fractions(values, places):
    assert largest_remainder(values, places) == largest_remainder([Fraction(value) for value in values], places)
