"""The pure bill split: grouping by sub-account, workspace and API key, and its exact rounding."""

from decimal import Decimal

import pandas as pd
import pytest

from agent.bills.grouping import split_bill
from agent.core.split import NO_VALUE, SplitRow, parse_dimensions
from agent.errors import SplitError
from tests.support.factories import line_items


def bill(lines: list[tuple[str, str, str | None, str | None, str | None]]) -> pd.DataFrame:
    """Line items from (cost, currency, sub_account, workspace, api_key)."""
    frames = []
    for cost, currency, sub_account, workspace, api_key in lines:
        frame = line_items([(None, cost)], currency=currency)
        frame["sub_account"], frame["workspace"], frame["api_key"] = sub_account, workspace, api_key
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


LINES = [
    ("1.005", "USD", "alice", "ws-prod", "key-1"),
    ("2.005", "USD", "alice", "ws-prod", "key-2"),
    ("0.333", "USD", "bob", "ws-prod", None),
    ("0.333", "USD", "bob", None, None),
    ("0.334", "USD", None, "ws-dev", "key-1"),
    ("1500.5", "KRW", "alice", "ws-prod", "key-1"),
    ("1499.4", "KRW", "carol", "ws-dev", "key-1"),
]


@pytest.mark.parametrize(("text", "columns"), [
    ("workspace", ("workspace",)),
    ("workspace,apikey", ("workspace", "api_key")),
    ("apikey, workspace ,subaccount", ("api_key", "workspace", "sub_account")),
    ("SubAccount,APIKEY", ("sub_account", "api_key")),
])
def test_dimensions_keep_the_order_given(text, columns):
    assert parse_dimensions(text) == columns


@pytest.mark.parametrize(("text", "message"), [
    ("", "at least one dimension"),
    (" , ", "at least one dimension"),
    ("workspace,project", "unknown dimension(s) 'project'"),
    ("workspace,,apikey", "unknown dimension(s) ''"),
    ("workspace,apikey,workspace", "more than once: workspace"),
])
def test_bad_dimensions_are_refused_with_the_reason(text, message):
    with pytest.raises(SplitError) as caught:
        parse_dimensions(text)
    assert message in str(caught.value)


def test_split_by_workspace_then_api_key_is_sorted_and_rounded_per_currency():
    result = split_bill(bill(LINES), columns=("workspace", "api_key"))
    assert result.header() == ("period", "workspace", "api_key", "amount", "currency")
    assert [(r.currency, r.values, r.amount, r.exact_amount, r.line_count) for r in result.rows] == [
        ("KRW", ("ws-dev", "key-1"), Decimal("1499"), Decimal("1499.4"), 1),
        ("KRW", ("ws-prod", "key-1"), Decimal("1501"), Decimal("1500.5"), 1),
        ("USD", (NO_VALUE, NO_VALUE), Decimal("0.33"), Decimal("0.333"), 1),
        ("USD", ("ws-dev", "key-1"), Decimal("0.33"), Decimal("0.334"), 1),
        ("USD", ("ws-prod", NO_VALUE), Decimal("0.33"), Decimal("0.333"), 1),
        # 4.010 rounds to 401 cents, 399 after flooring: the two .5 remainders get the missing cents.
        ("USD", ("ws-prod", "key-1"), Decimal("1.01"), Decimal("1.005"), 1),
        ("USD", ("ws-prod", "key-2"), Decimal("2.01"), Decimal("2.005"), 1),
    ]
    assert result.bill_totals == {"KRW": Decimal("2999.9"), "USD": Decimal("4.010")}
    assert result.rounded_totals == {"KRW": Decimal("3000"), "USD": Decimal("4.01")}
    assert result.row_totals() == result.rounded_totals
    assert list(result.records())[0] == ("2026-10", "ws-dev", "key-1", "1499", "KRW")


def test_split_by_sub_account_merges_the_lines_of_each_group():
    result = split_bill(bill(LINES), columns=("sub_account",))
    assert [(r.currency, r.values, r.amount, r.line_count) for r in result.rows] == [
        ("KRW", ("alice",), Decimal("1501"), 1),
        ("KRW", ("carol",), Decimal("1499"), 1),
        ("USD", (NO_VALUE,), Decimal("0.33"), 1),
        ("USD", ("alice",), Decimal("3.01"), 2),
        ("USD", ("bob",), Decimal("0.67"), 2),
    ]


def test_precision_overrides_the_minor_unit_and_still_reconciles():
    result = split_bill(bill(LINES), columns=("api_key", "sub_account"), precision=1)
    assert result.rounded_totals == {"KRW": Decimal("2999.9"), "USD": Decimal("4.0")}
    assert result.row_totals() == result.rounded_totals
    assert all(r.amount.as_tuple().exponent == -1 for r in result.rows)


def test_blank_and_nan_values_group_under_none():
    items = bill([("1", "USD", "  ", None, None), ("2", "USD", float("nan"), None, None),
                  ("4", "USD", "a", None, None)])
    result = split_bill(items, columns=("sub_account",))
    assert [(r.values, r.amount) for r in result.rows] == [((NO_VALUE,), Decimal("3.00")), (("a",), Decimal("4.00"))]


def test_sums_beyond_28_digits_stay_exact():
    items = bill([("12345678901234567890.12345678901", "USD", "a", None, None),
                  ("0.00000000001", "USD", "a", None, None)])
    [row] = split_bill(items, columns=("sub_account",)).rows
    assert row.exact_amount == Decimal("12345678901234567890.12345678902")
    assert row.amount == Decimal("12345678901234567890.12")


def test_empty_bill_gives_no_rows():
    result = split_bill(line_items([]), columns=("workspace",))
    assert (result.rows, result.bill_totals, result.rounded_totals) == ([], {}, {})


def test_rows_are_typed_records():
    [row] = split_bill(bill([("3", "JPY", None, "w", None)]), columns=("workspace",)).rows
    assert row == SplitRow(period="2026-10", values=("w",), amount=Decimal("3"), currency="JPY",
                           exact_amount=Decimal("3"), line_count=1)


@pytest.mark.parametrize("columns", [(), ("workspace", "workspace"), ("project",)])
def test_invalid_columns_are_refused(columns):
    with pytest.raises(SplitError):
        split_bill(bill(LINES), columns=columns)
