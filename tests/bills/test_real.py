"""The public real-world samples (copied from shared/data/bills), checked against independent Decimal sums."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest

from agent.bills import ImportOptions, read_bill
from agent.errors import BillFormatError

REAL = Path(__file__).resolve().parents[1] / "data" / "bills" / "real"


def dict_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as file:
        return list(csv.DictReader(file))


def test_focus_sample_has_one_row_outside_september_and_exact_totals():
    path = REAL / "focus-1.0-sample.csv"
    rows = dict_rows(path)
    bill = read_bill(path, options=ImportOptions(period="2024-09"))
    assert (bill.bill_format, bill.input_rows, len(bill.items), len(bill.out_of_period)) == ("focus", 1000, 999, 1)
    assert bill.rejected == []
    september = sum((Decimal(row["EffectiveCost"]) for row in rows if row["BillingPeriodStart"].startswith("2024-09")),
                    Decimal(0))
    assert sum(bill.items["cost"], Decimal(0)) == september
    late = [index + 2 for index, row in enumerate(rows) if not row["BillingPeriodStart"].startswith("2024-09")]
    assert list(bill.out_of_period["row"]) == late
    assert set(bill.items["currency"]) == {"USD"}


def test_focus_sample_tag_key_with_a_leading_space_is_found():
    path = REAL / "focus-1.0-sample.csv"
    tagged = sum(1 for row in dict_rows(path)
                 if row["Tags"] != "NULL" and any(key.strip() == "org" for key in json.loads(row["Tags"])))
    bill = read_bill(path, options=ImportOptions(tag_key="org"))
    assert tagged > 0
    assert bill.items["tag"].notna().sum() == tagged
    assert set(bill.items["tag"].dropna()) == {"trey"}


def test_cur_legacy_sample_has_no_tags_and_exact_total():
    path = REAL / "aws-cur-legacy-sample.csv"
    expected = sum((Decimal(row["lineItem/UnblendedCost"]) for row in dict_rows(path)), Decimal(0))
    with pytest.raises(BillFormatError, match="no column holds the tag key 'cz_container_bill'.*untagged: true"):
        read_bill(path, options=ImportOptions(period="2023-11"))
    bill = read_bill(path, options=ImportOptions(period="2023-11", untagged=True))
    assert (bill.bill_format, bill.input_rows, len(bill.items)) == ("cur", 1281, 1281)
    assert bill.rejected == [] and bill.out_of_period.empty
    assert bill.items["tag"].isna().all()
    assert sum(bill.items["cost"], Decimal(0)) == expected
    assert set(bill.items["sub_account"]) == {row["lineItem/UsageAccountId"] for row in dict_rows(path)}


def test_azure_sample_parses_exponent_costs_exactly_and_braceless_tags():
    path = REAL / "azure-ea-sample.csv"
    expected = sum((Decimal(row["CostInBillingCurrency"]) for row in dict_rows(path)), Decimal(0))
    bill = read_bill(path, options=ImportOptions(period="2023-09", tag_key="tagB"))
    assert (bill.bill_format, bill.input_rows, len(bill.items)) == ("azure", 27, 27)
    assert set(bill.items["currency"]) == {"CAD"}
    assert bill.items.loc[bill.items["row"] == 3, "cost"].item() == Decimal("0.0000564902")
    assert sum(bill.items["cost"], Decimal(0)) == expected
    assert set(bill.items["tag"]) == {"valueB"}
