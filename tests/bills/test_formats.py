"""Each bill format and file type read by total_bill, the entry production runs, into exact group totals."""

from __future__ import annotations

import hashlib
import json
import shutil
from decimal import Decimal
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent.bills import ImportOptions, detect_format, total_bill
from agent.bills.tags import TagReader
from tests.support.bills import outside_groups, rejects, rows_of, split_groups, tag_groups, tags_by_row

DATA = Path(__file__).resolve().parents[1] / "data" / "bills"
SEPTEMBER = ImportOptions(period="2024-09")

# native.csv in September: each line its own tag group (an untagged one keeps its sub-account, workspace and API
# key, which its attribution depends on) and its own split group.
NATIVE_TAGS = {
    ("2024-09", "USD", "cz_cluster_prod", None, None, None): (Decimal("12.50"), 1, "2"),
    ("2024-09", "USD", "mobile", None, None, None): (Decimal("0.0000012"), 1, "3"),
    ("2024-09", "USD", None, "bob", "ws-dev", None): (Decimal("3"), 1, "4"),
}
NATIVE_SPLITS = {
    ("2024-09", "USD", "alice", "ws-prod", "key-1"): (Decimal("12.50"), 1),
    ("2024-09", "USD", "alice", None, "key-2"): (Decimal("0.0000012"), 1),
    ("2024-09", "USD", "bob", "ws-dev", None): (Decimal("3"), 1),
}


def test_native_csv_gives_exact_totals_and_sets_next_month_aside():
    path = DATA / "native.csv"
    bill = total_bill(path, options=SEPTEMBER)
    assert (bill.source, bill.bill_format, bill.input_rows, bill.accepted_rows) == (str(path), "native", 4, 3)
    assert tag_groups(bill) == NATIVE_TAGS
    assert split_groups(bill) == NATIVE_SPLITS
    assert outside_groups(bill) == {("2024-10", "USD"): (Decimal("7.25"), 1)}
    assert bill.outside_rows == [(5, "2024-10")]
    assert rejects(bill) == []


def test_native_sha256_is_that_of_the_file_bytes():
    path = DATA / "native.csv"
    assert total_bill(path, options=SEPTEMBER).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_native_csv_gz_reads_like_the_plain_csv():
    bill = total_bill(DATA / "native.csv.gz", options=SEPTEMBER)
    assert (tag_groups(bill), split_groups(bill)) == (NATIVE_TAGS, NATIVE_SPLITS)
    assert bill.outside_rows == [(5, "2024-10")]


def test_without_period_every_row_is_an_item_of_its_own_month():
    bill = total_bill(DATA / "native.csv", options=ImportOptions())
    assert {row: key[0] for row, key in rows_of(bill).items()} == {2: "2024-09", 3: "2024-09", 4: "2024-09",
                                                                     5: "2024-10"}
    assert (bill.accepted_rows, bill.outside, bill.outside_rows) == (4, {}, [])


def test_native_xlsx_reads_numbers_exactly_and_counts_sheet_rows(tmp_path):
    path = tmp_path / "native.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["billingCycle", "loginName", "workspaceName", "apiKeyId", "unblendedCost", "currency",
                  "cz_container_bill"])
    sheet.append(["2024-09", "alice", "ws-prod", "k-1", 12.5, "USD", "mobile"])
    sheet.append([])  # a blank row keeps its number but is no record
    sheet.append(["2024-09", "bob", None, "k-2", 5.64902e-05, "USD", None])
    sheet.append(["2024-09", "carol", "ws-dev", 1234, 3, "KRW", "  "])
    workbook.save(path)
    bill = total_bill(path, options=SEPTEMBER)
    assert bill.input_rows == 3
    assert tag_groups(bill) == {
        ("2024-09", "USD", "mobile", None, None, None): (Decimal("12.5"), 1, "2"),
        ("2024-09", "USD", None, "bob", None, "k-2"): (Decimal("0.0000564902"), 1, "4"),
        ("2024-09", "KRW", None, "carol", "ws-dev", "1234"): (Decimal("3"), 1, "5"),
    }
    assert split_groups(bill) == {
        ("2024-09", "USD", "alice", "ws-prod", "k-1"): (Decimal("12.5"), 1),
        ("2024-09", "USD", "bob", None, "k-2"): (Decimal("0.0000564902"), 1),
        ("2024-09", "KRW", "carol", "ws-dev", "1234"): (Decimal("3"), 1),
    }


def test_native_without_currency_column_uses_the_default(tmp_path):
    path = tmp_path / "bill.csv"
    path.write_text("billingCycle,unblendedCost\n2024-09,1.5\n")
    bill = total_bill(path, options=ImportOptions(default_currency="krw", untagged=True))
    assert split_groups(bill) == {("2024-09", "KRW", None, None, None): (Decimal("1.5"), 1)}


def test_focus_csv_trims_tag_keys_matches_case_insensitively_and_treats_null_as_missing():
    bill = total_bill(DATA / "focus.csv", options=SEPTEMBER)
    assert bill.bill_format == "focus"
    assert tag_groups(bill) == {
        ("2024-09", "USD", "mobile", None, None, None): (Decimal("0.90000000000"), 1, "2"),
        ("2024-09", "USD", None, None, None, None): (Decimal("2.00000000000"), 1, "3"),
        ("2024-09", "USD", "mcmp", None, None, None): (Decimal("8.0000E-7"), 1, "4"),
    }
    assert split_groups(bill) == {
        ("2024-09", "USD", "Atlas", None, None): (Decimal("0.90000000000"), 1),
        ("2024-09", "USD", None, None, None): (Decimal("2.00000000000"), 1),
        ("2024-09", "USD", "Zenith", None, None): (Decimal("8.0000E-7"), 1),
    }
    assert bill.outside_rows == [(5, "2024-10")]
    assert bill.out_of_period_totals() == {"USD": Decimal("4.5")}


def test_focus_billed_cost_through_the_cost_column_override():
    bill = total_bill(DATA / "focus.csv", options=ImportOptions(period="2024-09", cost_column="billedcost"))
    assert {key[2]: amount for key, (amount, _, _) in tag_groups(bill).items()} == {
        "mobile": Decimal("1"), None: Decimal("2"), "mcmp": Decimal("8.0E-7")}
    # The cost basis as the header spells it.
    assert bill.cost_column == "BilledCost"


def test_focus_workspace_and_sub_account_overrides():
    options = ImportOptions(period="2024-09", workspace_column="ServiceName", sub_account_column="SubAccountId")
    bill = total_bill(DATA / "focus.csv", options=options)
    assert split_groups(bill) == {
        ("2024-09", "USD", "111", "Amazon EC2", None): (Decimal("0.9"), 1),
        ("2024-09", "USD", "222", "Amazon S3", None): (Decimal("2"), 1),
        ("2024-09", "USD", "333", None, None): (Decimal("8.0E-7"), 1),
    }


def test_focus_parquet_with_decimal_costs(tmp_path):
    path = tmp_path / "focus.parquet"
    table = pa.table({
        "EffectiveCost": pa.array([Decimal("0.00000080000"), Decimal("-12.34567890123"), None],
                                  type=pa.decimal128(20, 11)),
        "BillingCurrency": ["USD", "USD", "USD"],
        "BillingPeriodStart": pa.array([1725148800] * 3, type=pa.timestamp("s")),
        "ChargePeriodStart": ["2024-09-02T00:00:00Z", "2024-09-03T00:00:00Z", "2024-09-04T00:00:00Z"],
        "SubAccountName": ["a", None, "c"],
        "Tags": ['{"cz_container_bill": "mobile"}', None, "{}"],
    })
    pq.write_table(table, path)
    bill = total_bill(path, options=SEPTEMBER)
    assert bill.input_rows == 3
    assert tag_groups(bill) == {
        ("2024-09", "USD", "mobile", None, None, None): (Decimal("8.0000E-7"), 1, "1"),
        ("2024-09", "USD", None, None, None, None): (Decimal("-12.34567890123"), 1, "2"),
    }
    assert split_groups(bill) == {("2024-09", "USD", "a", None, None): (Decimal("8.0000E-7"), 1),
                                  ("2024-09", "USD", None, None, None): (Decimal("-12.34567890123"), 1)}
    assert rejects(bill) == [(3, "EffectiveCost", "missing cost", "")]


def test_cur_legacy_reads_the_resource_tag_column():
    bill = total_bill(DATA / "cur-legacy.csv", options=ImportOptions(period="2023-11"))
    assert bill.bill_format == "cur"
    assert tag_groups(bill) == {
        ("2023-11", "USD", "mobile", None, None, None): (Decimal("1.2345678901"), 1, "2"),
        ("2023-11", "USD", None, "123412340534", None, None): (Decimal("1E-7"), 1, "3"),
        ("2023-11", "USD", "cz_common_subcom", None, None, None): (Decimal("-0.50"), 1, "4"),
    }
    assert split_groups(bill) == {
        ("2023-11", "USD", "123412340534", None, None): (Decimal("1.2345679901"), 2),
        ("2023-11", "USD", "999912340534", None, None): (Decimal("-0.50"), 1),
    }


def test_cur_legacy_tag_column_override_reads_another_plain_column():
    bill = total_bill(DATA / "cur-legacy.csv", options=ImportOptions(tag_column="resourceTags/user:env"))
    assert tags_by_row(bill) == {2: "prod", 3: "dev", 4: None}


def test_cur2_csv_reads_user_prefixed_keys_in_resource_tags():
    bill = total_bill(DATA / "cur2.csv", options=SEPTEMBER)
    assert bill.bill_format == "cur2"
    assert tag_groups(bill) == {
        ("2024-09", "USD", "cz_cluster_prod", None, None, None): (Decimal("10.10"), 1, "2"),
        ("2024-09", "USD", None, "123456789012", None, None): (Decimal("3.333"), 1, "3"),
        ("2024-09", "USD", None, "210987654321", None, None): (Decimal("0.01"), 1, "4"),
    }
    assert split_groups(bill) == {
        ("2024-09", "USD", "123456789012", None, None): (Decimal("13.433"), 2),
        ("2024-09", "USD", "210987654321", None, None): (Decimal("0.01"), 1),
    }


def test_cur2_with_flattened_tag_columns_reads_the_tag_column(tmp_path):
    path = tmp_path / "cur2-flat.csv"
    path.write_text("bill_billing_period_start_date,line_item_unblended_cost,line_item_currency_code,"
                    "resource_tags_user_env,resource_tags_user_cz_container_bill\n"
                    "2024-09-01T00:00:00Z,1.25,USD,prod,web\n"
                    "2024-09-01T00:00:00Z,2,USD,dev,\n", encoding="utf-8")
    bill = total_bill(path, options=SEPTEMBER)
    assert bill.bill_format == "cur2"
    assert tags_by_row(bill) == {2: "web", 3: None}


def test_cur2_parquet_with_a_map_of_resource_tags(tmp_path):
    path = tmp_path / "cur2.parquet"
    tags_type = pa.map_(pa.string(), pa.string())
    pq.write_table(pa.table({
        "bill_billing_period_start_date": pa.array([1725148800000] * 3, type=pa.timestamp("ms", tz="UTC")),
        "line_item_usage_start_date": pa.array([1725494400000] * 3, type=pa.timestamp("ms", tz="UTC")),
        "line_item_currency_code": ["USD", "USD", "USD"],
        "line_item_unblended_cost": pa.array([0.1, 5.64902e-05, 1234.5], type=pa.float64()),
        "line_item_usage_account_id": ["1", "2", "3"],
        "resource_tags": pa.array([[("user_cz_container_bill", "mobile"), ("user_env", "prod")], None,
                                   [("user_CZ_CONTAINER_BILL", " mcmp ")]], type=tags_type),
    }), path)
    bill = total_bill(path, options=SEPTEMBER)
    assert bill.bill_format == "cur2"
    assert tag_groups(bill) == {
        ("2024-09", "USD", "mobile", None, None, None): (Decimal("0.1"), 1, "1"),
        ("2024-09", "USD", None, "2", None, None): (Decimal("0.0000564902"), 1, "2"),
        ("2024-09", "USD", "mcmp", None, None, None): (Decimal("1234.5"), 1, "3"),
    }


def test_azure_tags_with_and_without_braces_and_us_dates():
    bill = total_bill(DATA / "azure.csv", options=ImportOptions(period="2023-09"))
    assert bill.bill_format == "azure"
    assert tag_groups(bill) == {
        ("2023-09", "CAD", "mobile", None, None, None): (Decimal("0.000305367"), 1, "2"),
        ("2023-09", "CAD", "mcmp", None, None, None): (Decimal("0.0000564902"), 1, "3"),
        ("2023-09", "CAD", None, "sub-dev", None, None): (Decimal("1.5"), 1, "4"),
    }
    assert split_groups(bill) == {
        ("2023-09", "CAD", "sub-prod", None, None): (Decimal("0.0003618572"), 2),
        ("2023-09", "CAD", "sub-dev", None, None): (Decimal("1.5"), 1),
    }
    assert rejects(bill) == []


def test_forced_format_reads_a_file_detection_would_not(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text("Cost,BillingCurrency,Date\n2.5,EUR,2024-09-03\n")
    bill = total_bill(path, options=ImportOptions(bill_format="azure", untagged=True))
    assert bill.bill_format == "azure"
    assert split_groups(bill) == {("2024-09", "EUR", None, None, None): (Decimal("2.5"), 1)}


def test_groups_hold_exact_decimals_none_for_missing_values_and_int_rows():
    bill = total_bill(DATA / "focus.csv", options=SEPTEMBER)
    groups = [*bill.tag_groups.items(), *bill.split_groups.items(), *bill.outside.items()]
    assert all(isinstance(group.amount, Decimal) for _, group in groups)
    assert all(value is None or (isinstance(value, str) and value) for key, _ in groups for value in key)
    assert all(type(row) is int for row in rows_of(bill))
    assert all(type(row) is int for row, _ in bill.outside_rows)


@pytest.mark.parametrize(("columns", "expected"), [
    (["identity/LineItemId", "lineItem/UnblendedCost"], "cur"),
    (["line_item_unblended_cost", "resource_tags"], "cur2"),
    (["BilledCost", "ChargePeriodStart"], "focus"),
    (["effectivecost", "chargeperiodstart"], "focus"),
    (["CostInBillingCurrency", "Date"], "azure"),
    (["loginName", "unblendedCost"], "native"),
])
def test_detect_format(columns, expected):
    assert detect_format(columns) == expected


def test_blank_lines_keep_the_row_numbers_of_the_file(tmp_path):
    path = tmp_path / "native.csv"
    shutil.copy(DATA / "native.csv", path)
    text = path.read_text().replace("2024-09,bob", "\n2024-09,bob", 1)
    path.write_text(text + "\n")
    bill = total_bill(path, options=SEPTEMBER)
    assert bill.input_rows == 4
    assert sorted(rows_of(bill)) == [2, 3, 5]
    assert bill.outside_rows == [(6, "2024-10")]


def test_tags_json_parsed_once_per_distinct_text(tmp_path, monkeypatch):
    path = tmp_path / "cur2.csv"
    tags = json.dumps({"user_cz_container_bill": "mobile"}).replace('"', '""')
    rows = [f'2024-09-01,USD,1.5,"{tags}"'] * 3
    path.write_text("\n".join(["bill_billing_period_start_date,line_item_currency_code,"
                               "line_item_unblended_cost,resource_tags", *rows]) + "\n")
    parsed = []
    parse = TagReader._parse
    monkeypatch.setattr(TagReader, "_parse", lambda reader, text: parsed.append(text) or parse(reader, text))
    bill = total_bill(path, options=SEPTEMBER)
    assert tag_groups(bill) == {("2024-09", "USD", "mobile", None, None, None): (Decimal("4.5"), 3, "2-4")}
    assert len(parsed) == 1
