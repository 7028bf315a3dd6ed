"""The public real-world samples (copied from shared/data/bills), checked against independent Decimal sums."""

from __future__ import annotations

import csv
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from agent.bills import ImportOptions, total_bill
from agent.errors import BillFormatError
from tests.support.bills import rejects, split_groups, total

REAL = Path(__file__).resolve().parents[1] / "data" / "bills" / "real"


def dict_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as file:
        return list(csv.DictReader(file))


def cell(row: dict[str, str], name: str) -> str | None:
    """A text cell as the import reads it: trimmed, None when empty or NULL."""
    text = row[name].strip()
    return None if text in ("", "NULL") else text


def sums_by(rows: list[dict[str, str]], *, key: str, cost: str) -> dict[str | None, tuple[Decimal, int]]:
    """Independent exact sums and line counts of `cost` per value of the column `key`."""
    amounts: dict[str | None, Decimal] = {}
    for row in rows:
        amounts[cell(row, key)] = amounts.get(cell(row, key), Decimal(0)) + Decimal(row[cost])
    lines = Counter(cell(row, key) for row in rows)
    return {value: (amount, lines[value]) for value, amount in amounts.items()}


def test_focus_sample_has_one_row_outside_september_and_exact_totals():
    path = REAL / "focus-1.0-sample.csv"
    rows = dict_rows(path)
    bill = total_bill(path, options=ImportOptions(period="2024-09"))
    assert (bill.bill_format, bill.input_rows, bill.accepted_rows, bill.out_of_period_rows) == ("focus", 1000, 999, 1)
    assert rejects(bill) == []
    september = [row for row in rows if row["BillingPeriodStart"].startswith("2024-09")]
    assert split_groups(bill) == {("2024-09", "USD", account, None, None): sums
                                  for account, sums in sums_by(september, key="SubAccountName",
                                                               cost="EffectiveCost").items()}
    late = [(index + 2, "2024-10") for index, row in enumerate(rows) if row["BillingPeriodStart"].startswith("2024-10")]
    assert bill.outside_rows == late


def test_focus_sample_tag_key_with_a_leading_space_is_found():
    path = REAL / "focus-1.0-sample.csv"
    tagged = sum(1 for row in dict_rows(path)
                 if row["Tags"] != "NULL" and any(key.strip() == "org" for key in json.loads(row["Tags"])))
    bill = total_bill(path, options=ImportOptions(tag_key="org"))
    assert tagged > 0
    assert sum(group.lines for key, group in bill.tag_groups.items() if key[2] is not None) == tagged
    assert {key[2] for key in bill.tag_groups} == {"trey", None}


def test_cur_legacy_sample_has_no_tags_and_exact_total():
    path = REAL / "aws-cur-legacy-sample.csv"
    rows = dict_rows(path)
    with pytest.raises(BillFormatError, match="no column holds the tag key 'cz_container_bill'.*untagged: true"):
        total_bill(path, options=ImportOptions(period="2023-11"))
    bill = total_bill(path, options=ImportOptions(period="2023-11", untagged=True))
    assert (bill.bill_format, bill.input_rows, bill.accepted_rows) == ("cur", 1281, 1281)
    assert (rejects(bill), bill.outside) == ([], {})
    assert {key[2] for key in bill.tag_groups} == {None}
    assert total(bill) == sum((Decimal(row["lineItem/UnblendedCost"]) for row in rows), Decimal(0))
    assert split_groups(bill) == {("2023-11", "USD", account, None, None): sums
                                  for account, sums in sums_by(rows, key="lineItem/UsageAccountId",
                                                               cost="lineItem/UnblendedCost").items()}


def test_azure_sample_parses_exponent_costs_exactly_and_braceless_tags():
    path = REAL / "azure-ea-sample.csv"
    rows = dict_rows(path)
    bill = total_bill(path, options=ImportOptions(period="2023-09", tag_key="tagB"))
    assert (bill.bill_format, bill.input_rows, bill.accepted_rows) == ("azure", 27, 27)
    expected = sum((Decimal(row["CostInBillingCurrency"]) for row in rows), Decimal(0))
    assert {key: (group.exact(), group.lines) for key, group in bill.tag_groups.items()} == {
        ("2023-09", "CAD", "valueB", None, None, None): (expected, 27)}
    assert split_groups(bill) == {("2023-09", "CAD", account, None, None): sums
                                  for account, sums in sums_by(rows, key="SubscriptionName",
                                                               cost="CostInBillingCurrency").items()}
