"""Each bill format and file type read into canonical line items."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent.bills import ImportOptions, detect_format, read_bill, total_bill
from agent.bills.lineitems import LINE_ITEM_COLUMNS
from tests.support.bills import tag_groups

DATA = Path(__file__).resolve().parents[1] / "data" / "bills"
SEPTEMBER = ImportOptions(period="2024-09")

NATIVE_ITEMS = [
    {"period": "2024-09", "cost": Decimal("12.50"), "currency": "USD", "tag": "cz_cluster_prod",
     "sub_account": "alice", "workspace": "ws-prod", "api_key": "key-1", "resource_id": "i-001",
     "service_name": "GPU Compute", "row": 2},
    {"period": "2024-09", "cost": Decimal("0.0000012"), "currency": "USD", "tag": "mobile",
     "sub_account": "alice", "workspace": None, "api_key": "key-2", "resource_id": "i-002",
     "service_name": "Object Storage", "row": 3},
    {"period": "2024-09", "cost": Decimal("3"), "currency": "USD", "tag": None,
     "sub_account": "bob", "workspace": "ws-dev", "api_key": None, "resource_id": "i-003",
     "service_name": "Model API", "row": 4},
]


def records(frame) -> list[dict]:
    """Line items without `source`, which tests check on their own."""
    return [{key: value for key, value in record.items() if key != "source"} for record in frame.to_dict("records")]


def test_native_csv_gives_exact_items_and_sets_next_month_aside():
    path = DATA / "native.csv"
    bill = read_bill(path, options=SEPTEMBER)
    assert bill.bill_format == "native"
    assert bill.input_rows == 4
    assert list(bill.items.columns) == LINE_ITEM_COLUMNS
    assert records(bill.items) == NATIVE_ITEMS
    assert set(bill.items["source"]) == {str(path)}
    assert records(bill.out_of_period) == [
        {"period": "2024-10", "cost": Decimal("7.25"), "currency": "USD", "tag": "mcmp", "sub_account": "bob",
         "workspace": "ws-dev", "api_key": "key-3", "resource_id": "i-004", "service_name": "Model API", "row": 5},
    ]
    assert bill.rejected == []


def test_native_sha256_is_that_of_the_file_bytes():
    import hashlib

    path = DATA / "native.csv"
    assert read_bill(path, options=SEPTEMBER).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_native_csv_gz_reads_like_the_plain_csv():
    bill = read_bill(DATA / "native.csv.gz", options=SEPTEMBER)
    assert records(bill.items) == NATIVE_ITEMS
    assert len(bill.out_of_period) == 1


def test_without_period_every_row_is_an_item_of_its_own_month():
    bill = read_bill(DATA / "native.csv", options=ImportOptions())
    assert list(bill.items["period"]) == ["2024-09", "2024-09", "2024-09", "2024-10"]
    assert bill.out_of_period.empty


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
    bill = read_bill(path, options=SEPTEMBER)
    assert bill.input_rows == 3
    assert list(bill.items["row"]) == [2, 4, 5]
    assert list(bill.items["cost"]) == [Decimal("12.5"), Decimal("0.0000564902"), Decimal("3")]
    assert list(bill.items["tag"]) == ["mobile", None, None]
    assert list(bill.items["workspace"]) == ["ws-prod", None, "ws-dev"]
    assert list(bill.items["api_key"]) == ["k-1", "k-2", "1234"]
    assert list(bill.items["currency"]) == ["USD", "USD", "KRW"]


def test_native_without_currency_column_uses_the_default(tmp_path):
    path = tmp_path / "bill.csv"
    path.write_text("billingCycle,unblendedCost\n2024-09,1.5\n")
    bill = read_bill(path, options=ImportOptions(default_currency="krw", untagged=True))
    assert list(bill.items["currency"]) == ["KRW"]
    assert list(bill.items["cost"]) == [Decimal("1.5")]


def test_focus_csv_trims_tag_keys_matches_case_insensitively_and_treats_null_as_missing():
    bill = read_bill(DATA / "focus.csv", options=SEPTEMBER)
    assert bill.bill_format == "focus"
    assert records(bill.items) == [
        {"period": "2024-09", "cost": Decimal("0.90000000000"), "currency": "USD", "tag": "mobile",
         "sub_account": "Atlas", "workspace": None, "api_key": None, "resource_id": "arn:r1",
         "service_name": "Amazon EC2", "row": 2},
        {"period": "2024-09", "cost": Decimal("2.00000000000"), "currency": "USD", "tag": None,
         "sub_account": None, "workspace": None, "api_key": None, "resource_id": None,
         "service_name": "Amazon S3", "row": 3},
        {"period": "2024-09", "cost": Decimal("8.0000E-7"), "currency": "USD", "tag": "mcmp",
         "sub_account": "Zenith", "workspace": None, "api_key": None, "resource_id": "arn:r3",
         "service_name": None, "row": 4},
    ]
    assert list(bill.out_of_period["row"]) == [5]
    assert bill.out_of_period_totals() == {"USD": Decimal("4.5")}


def test_focus_billed_cost_through_the_cost_column_override():
    bill = read_bill(DATA / "focus.csv", options=ImportOptions(period="2024-09", cost_column="billedcost"))
    assert list(bill.items["cost"]) == [Decimal("1"), Decimal("2"), Decimal("8.0E-7")]


def test_focus_workspace_and_sub_account_overrides():
    options = ImportOptions(period="2024-09", workspace_column="ServiceName", sub_account_column="SubAccountId")
    bill = read_bill(DATA / "focus.csv", options=options)
    assert list(bill.items["workspace"]) == ["Amazon EC2", "Amazon S3", None]
    assert list(bill.items["sub_account"]) == ["111", "222", "333"]


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
    bill = read_bill(path, options=SEPTEMBER)
    assert bill.input_rows == 3
    assert list(bill.items["row"]) == [1, 2]
    assert list(bill.items["cost"]) == [Decimal("8.0000E-7"), Decimal("-12.34567890123")]
    assert list(bill.items["tag"]) == ["mobile", None]
    assert list(bill.items["sub_account"]) == ["a", None]
    assert [(rejected.row, rejected.column, rejected.reason) for rejected in bill.rejected] == [
        (3, "EffectiveCost", "missing cost")]


def test_cur_legacy_reads_the_resource_tag_column():
    bill = read_bill(DATA / "cur-legacy.csv", options=ImportOptions(period="2023-11"))
    assert bill.bill_format == "cur"
    assert records(bill.items) == [
        {"period": "2023-11", "cost": Decimal("1.2345678901"), "currency": "USD", "tag": "mobile",
         "sub_account": "123412340534", "workspace": None, "api_key": None, "resource_id": "i-0abc",
         "service_name": "AmazonEC2", "row": 2},
        {"period": "2023-11", "cost": Decimal("1E-7"), "currency": "USD", "tag": None,
         "sub_account": "123412340534", "workspace": None, "api_key": None, "resource_id": None,
         "service_name": "AmazonS3", "row": 3},
        {"period": "2023-11", "cost": Decimal("-0.50"), "currency": "USD", "tag": "cz_common_subcom",
         "sub_account": "999912340534", "workspace": None, "api_key": None, "resource_id": None,
         "service_name": "AWSDataTransfer", "row": 4},
    ]


def test_cur_legacy_tag_column_override_reads_another_plain_column():
    bill = read_bill(DATA / "cur-legacy.csv", options=ImportOptions(tag_column="resourceTags/user:env"))
    assert list(bill.items["tag"]) == ["prod", "dev", None]


def test_cur2_csv_reads_user_prefixed_keys_in_resource_tags():
    bill = read_bill(DATA / "cur2.csv", options=SEPTEMBER)
    assert bill.bill_format == "cur2"
    assert list(bill.items["tag"]) == ["cz_cluster_prod", None, None]
    assert list(bill.items["cost"]) == [Decimal("10.10"), Decimal("3.333"), Decimal("0.01")]
    assert list(bill.items["sub_account"]) == ["123456789012", "123456789012", "210987654321"]
    assert list(bill.items["service_name"]) == ["AmazonEKS", "AmazonRDS", "AmazonS3"]
    assert list(bill.items["resource_id"]) == ["arn:eks:1", "arn:rds:1", None]


def test_cur2_with_flattened_tag_columns_reads_the_tag_column(tmp_path):
    path = tmp_path / "cur2-flat.csv"
    path.write_text("bill_billing_period_start_date,line_item_unblended_cost,line_item_currency_code,"
                    "resource_tags_user_env,resource_tags_user_cz_container_bill\n"
                    "2024-09-01T00:00:00Z,1.25,USD,prod,web\n"
                    "2024-09-01T00:00:00Z,2,USD,dev,\n", encoding="utf-8")
    bill = read_bill(path, options=SEPTEMBER)
    assert bill.bill_format == "cur2"
    assert list(bill.items["tag"]) == ["web", None]


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
    bill = read_bill(DATA / "azure.csv", options=ImportOptions(period="2023-09"))
    assert bill.bill_format == "azure"
    assert list(bill.items["tag"]) == ["mobile", "mcmp", None]
    assert list(bill.items["cost"]) == [Decimal("0.000305367"), Decimal("0.0000564902"), Decimal("1.5")]
    assert list(bill.items["currency"]) == ["CAD"] * 3
    assert list(bill.items["sub_account"]) == ["sub-prod", "sub-prod", "sub-dev"]
    assert list(bill.items["service_name"]) == ["Virtual Network", "Storage", "Virtual Machines"]
    assert bill.rejected == []


def test_forced_format_reads_a_file_detection_would_not(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text("Cost,BillingCurrency,Date\n2.5,EUR,2024-09-03\n")
    bill = read_bill(path, options=ImportOptions(bill_format="azure", untagged=True))
    assert (bill.bill_format, list(bill.items["cost"]), list(bill.items["currency"])) == (
        "azure", [Decimal("2.5")], ["EUR"])
    assert list(bill.items["period"]) == ["2024-09"]


def test_item_frame_holds_none_decimals_and_int_rows():
    items = read_bill(DATA / "focus.csv", options=SEPTEMBER).items
    assert all(isinstance(cost, Decimal) for cost in items["cost"])
    assert items.loc[1, "sub_account"] is None
    assert items.loc[1, "workspace"] is None
    assert items["row"].dtype == "int64"


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
    bill = read_bill(path, options=SEPTEMBER)
    assert bill.input_rows == 4
    assert list(bill.items["row"]) == [2, 3, 5]
    assert list(bill.out_of_period["row"]) == [6]


def test_tags_json_parsed_once_per_distinct_text(tmp_path):
    path = tmp_path / "cur2.csv"
    tags = json.dumps({"user_cz_container_bill": "mobile"}).replace('"', '""')
    rows = [f'2024-09-01,USD,1.5,"{tags}"'] * 3
    path.write_text("\n".join(["bill_billing_period_start_date,line_item_currency_code,"
                               "line_item_unblended_cost,resource_tags", *rows]) + "\n")
    bill = read_bill(path, options=SEPTEMBER)
    assert list(bill.items["tag"]) == ["mobile"] * 3
    assert sum(bill.items["cost"]) == Decimal("4.5")
