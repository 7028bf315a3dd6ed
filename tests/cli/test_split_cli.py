"""`cz-agent split` end to end, on bills of every format, checked against a computation of the test's own:
csv.DictReader, Decimal sums per group, and its own rounding check."""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"
BILLS = DATA / "bills"
REAL = BILLS / "real"
SPLIT = DATA / "split"
MINOR_UNITS = {"KRW": 0, "JPY": 0, "KWD": 3}
OUTPUT_NAMES = {"subaccount": "sub_account", "workspace": "workspace", "apikey": "api_key"}


@dataclass(frozen=True)
class Layout:
    """Where the test finds each field in a bill's header (its own reading, not the importer's)."""

    cost: str
    currency: str | None
    dates: tuple[str, ...]
    dimensions: dict[str, str] = field(default_factory=dict)
    default_currency: str | None = None


NATIVE = Layout(cost="unblendedCost", currency="currency", dates=("billingCycle",),
                dimensions={"subaccount": "loginName", "workspace": "workspaceName", "apikey": "apiKeyName"})
FOCUS = Layout(cost="EffectiveCost", currency="BillingCurrency", dates=("BillingPeriodStart", "ChargePeriodStart"),
               dimensions={"subaccount": "SubAccountName"})
CUR = Layout(cost="lineItem/UnblendedCost", currency="lineItem/CurrencyCode",
             dates=("bill/BillingPeriodStartDate", "lineItem/UsageStartDate"),
             dimensions={"subaccount": "lineItem/UsageAccountId"})
CUR2 = Layout(cost="line_item_unblended_cost", currency="line_item_currency_code",
              dates=("bill_billing_period_start_date", "line_item_usage_start_date"),
              dimensions={"subaccount": "line_item_usage_account_id"})
AZURE = Layout(cost="CostInBillingCurrency", currency="BillingCurrencyCode", dates=("BillingPeriodStartDate", "Date"),
               dimensions={"subaccount": "SubscriptionName"})
_MONTH = re.compile(r"^(\d{4})-?(\d{2})")
_US_DATE = re.compile(r"^(\d{1,2})/\d{1,2}/(\d{4})")


def month_of(text: str) -> str:
    if found := _US_DATE.match(text):
        return f"{found[2]}-{int(found[1]):02d}"
    found = _MONTH.match(text)
    assert found, f"test cannot read date {text!r}"
    return f"{found[1]}-{found[2]}"


def cell(text: str | None) -> str | None:
    text = (text or "").strip()
    return None if text in ("", "NULL") else text


def expected_split(bills: list[Path], layout: Layout, *, period: str, by: list[str]) -> dict[tuple, Decimal]:
    """(currency, *group values) -> exact cost, over the bill rows of the period with a valid cost and currency."""
    sums: dict[tuple, Decimal] = defaultdict(Decimal)
    with localcontext(prec=200):
        for path in bills:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
                for row in csv.DictReader(handle):
                    cost_text = cell(row[layout.cost])
                    currency = cell(row[layout.currency]) if layout.currency else None
                    currency = (currency or layout.default_currency or "").upper()
                    if cost_text is None or not currency:
                        continue
                    try:
                        cost = Decimal(cost_text)
                    except InvalidOperation:
                        continue
                    months = {month_of(text) for column in layout.dates if (text := cell(row.get(column)))}
                    if months - {period}:
                        continue
                    group = tuple(cell(row[layout.dimensions[d]]) if d in layout.dimensions else None for d in by)
                    sums[(currency, *("(none)" if value is None else value for value in group))] += cost
    return dict(sums)


def check_split(out: Path, expected: dict[tuple, Decimal], *, period: str, by: list[str],
                precision: int | None = None) -> list[dict[str, str]]:
    """The output's contract: header, one row per group, each within one minor unit of its exact sum, the
    rows of a currency adding up to its rounded bill, sorted by currency then values."""
    with out.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    columns = [OUTPUT_NAMES[d] for d in by]
    assert reader.fieldnames == ["period", *columns, "amount", "currency"]
    keys = [(row["currency"], *(row[c] for c in columns)) for row in rows]
    assert len(set(keys)) == len(rows)
    assert set(keys) == set(expected)
    assert keys == sorted(keys)
    assert {row["period"] for row in rows} == {period}
    totals: dict[str, Decimal] = defaultdict(Decimal)
    exact_totals: dict[str, Decimal] = defaultdict(Decimal)
    for key, row in zip(keys, rows):
        places = precision if precision is not None else MINOR_UNITS.get(row["currency"], 2)
        amount = Decimal(row["amount"])
        assert amount.as_tuple().exponent == -places, row
        assert abs(amount - expected[key]) < Decimal(1).scaleb(-places), (row, expected[key])
        totals[row["currency"]] += amount
        with localcontext(prec=200):
            exact_totals[row["currency"]] += expected[key]
    for currency, exact in exact_totals.items():
        places = precision if precision is not None else MINOR_UNITS.get(currency, 2)
        with localcontext(prec=200):
            assert totals[currency] == exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return rows


def split(tmp_path: Path, bills: list[Path], *, period: str, by: str, extra: tuple[str, ...] = ()) -> Path:
    out = tmp_path / f"split-{by.replace(',', '-')}.csv"
    arguments = ["split", "--period", period, "--by", by, "--out", str(out), *extra]
    for bill in bills:
        arguments += ["--bill", str(bill)]
    assert main(arguments) == 0
    return out


@pytest.mark.parametrize("by", ["subaccount", "workspace", "apikey", "workspace,apikey", "apikey,workspace",
                                "subaccount,workspace,apikey", "workspace,subaccount", "apikey,subaccount,workspace"])
def test_native_multi_currency_bill_in_every_dimension_order(tmp_path, by):
    bill = SPLIT / "native-multi.csv"
    out = split(tmp_path, [bill], period="2026-10", by=by)
    expected = expected_split([bill], NATIVE, period="2026-10", by=by.split(","))
    rows = check_split(out, expected, period="2026-10", by=by.split(","))
    assert {row["currency"] for row in rows} == {"EUR", "JPY", "KRW", "KWD", "USD"}


def test_native_split_by_workspace_and_api_key_has_the_expected_amounts(tmp_path):
    out = split(tmp_path, [BILLS / "native.csv"], period="2024-09", by="workspace,apikey")
    assert out.read_text() == (
        "period,workspace,api_key,amount,currency\n"
        "2024-09,(none),key-2,0.00,USD\n"
        "2024-09,ws-dev,(none),3.00,USD\n"
        "2024-09,ws-prod,key-1,12.50,USD\n"
    )


def test_worked_bill_split_by_sub_account(tmp_path, capsys):
    out = split(tmp_path, [DATA / "worked" / "bill.csv"], period="2026-10", by="subaccount")
    assert out.read_text().splitlines() == [
        "period,sub_account,amount,currency",
        "2026-10,dba,300.00,USD",
        "2026-10,finops,100.00,USD",
        "2026-10,ops,1000.00,USD",
        "2026-10,team-mobile,200.00,USD",
    ]
    printed = capsys.readouterr().out
    assert "rows: 5 input = 5 accepted + 0 rejected + 0 out of period" in printed
    assert "USD: bill 1600 -> 1600.00 = sum of 4 rows 1600.00 reconciled" in printed


@pytest.mark.parametrize(("bill", "layout", "period"), [
    (REAL / "focus-1.0-sample.csv", FOCUS, "2024-09"),
    (REAL / "aws-cur-legacy-sample.csv", CUR, "2023-11"),
    (REAL / "azure-ea-sample.csv", AZURE, "2023-09"),
    (BILLS / "focus.csv", FOCUS, "2024-09"),
    (BILLS / "cur-legacy.csv", CUR, "2023-11"),
    (BILLS / "cur2.csv", CUR2, "2024-09"),
    (BILLS / "azure.csv", AZURE, "2023-09"),
    (BILLS / "native.csv.gz", NATIVE, "2024-09"),
])
@pytest.mark.parametrize("by", ["subaccount", "workspace,subaccount", "subaccount,apikey"])
def test_every_bill_format_matches_the_independent_split(tmp_path, bill, layout, period, by):
    out = split(tmp_path, [bill], period=period, by=by)
    expected = expected_split([bill], layout, period=period, by=by.split(","))
    rows = check_split(out, expected, period=period, by=by.split(","))
    assert rows


def test_real_focus_sample_groups_by_sub_account_name(tmp_path, capsys):
    out = split(tmp_path, [REAL / "focus-1.0-sample.csv"], period="2024-09", by="subaccount")
    accounts = [row["sub_account"] for row in csv.DictReader(out.open())]
    assert "Atlas Nimbus" in accounts and "Zenith Eclipse" in accounts
    printed = capsys.readouterr().out
    assert "rows: 1000 input = 999 accepted + 0 rejected + 1 out of period" in printed
    assert "row(s) outside the period, excluded" in printed


def test_real_cur_sample_groups_by_usage_account(tmp_path):
    out = split(tmp_path, [REAL / "aws-cur-legacy-sample.csv"], period="2023-11", by="subaccount")
    accounts = {row["sub_account"] for row in csv.DictReader(out.open())}
    with (REAL / "aws-cur-legacy-sample.csv").open(newline="") as handle:
        assert accounts == {row["lineItem/UsageAccountId"] for row in csv.DictReader(handle)}


def test_several_bills_are_split_together(tmp_path):
    bills = [BILLS / "native.csv", BILLS / "focus.csv"]
    out = split(tmp_path, bills, period="2024-09", by="subaccount")
    native = expected_split([bills[0]], NATIVE, period="2024-09", by=["subaccount"])
    focus = expected_split([bills[1]], FOCUS, period="2024-09", by=["subaccount"])
    expected = defaultdict(Decimal, native)
    for key, amount in focus.items():
        expected[key] += amount
    rows = check_split(out, dict(expected), period="2024-09", by=["subaccount"])
    assert {row["sub_account"]: row["amount"] for row in rows} == {
        "(none)": "2.00", "Atlas": "0.90", "Zenith": "0.00", "alice": "12.50", "bob": "3.00"}


def test_parquet_and_xlsx_bills_split_like_their_csv(tmp_path):
    source = SPLIT / "native-multi.csv"
    with source.open(newline="") as handle:
        reader = csv.reader(handle)
        header, *records = list(reader)
    parquet = tmp_path / "bill.parquet"
    pq.write_table(pa.table({name: [r[i] for r in records] for i, name in enumerate(header)}), parquet)
    workbook = openpyxl.Workbook()
    workbook.active.append(header)
    for record in records:
        workbook.active.append(record)
    xlsx = tmp_path / "bill.xlsx"
    workbook.save(xlsx)
    from_csv = split(tmp_path / "csv", [source], period="2026-10", by="apikey,subaccount").read_bytes()
    assert split(tmp_path / "parquet", [parquet], period="2026-10", by="apikey,subaccount").read_bytes() == from_csv
    assert split(tmp_path / "xlsx", [xlsx], period="2026-10", by="apikey,subaccount").read_bytes() == from_csv


def test_column_overrides_read_headers_no_format_knows(tmp_path):
    bill = SPLIT / "custom-columns.csv"
    out = split(tmp_path, [bill], period="2026-10", by="subaccount,workspace,apikey", extra=(
        "--bill-format", "native", "--cost-column", "charge", "--sub-account-column", "account",
        "--workspace-column", "project", "--api-key-column", "token", "--currency", "krw"))
    layout = Layout(cost="charge", currency=None, dates=(), default_currency="KRW",
                    dimensions={"subaccount": "account", "workspace": "project", "apikey": "token"})
    expected = expected_split([bill], layout, period="2026-10", by=["subaccount", "workspace", "apikey"])
    check_split(out, expected, period="2026-10", by=["subaccount", "workspace", "apikey"])
    assert out.read_text().splitlines() == [
        "period,sub_account,workspace,api_key,amount,currency",
        "2026-10,(none),proj-b,(none),10,KRW",
        "2026-10,acc-1,proj-a,tok-1,1000,KRW",
        "2026-10,acc-1,proj-a,tok-2,250,KRW",
        "2026-10,acc-1,proj-b,tok-2,-5,KRW",
        # 1355.1 won is 1355 and the floors make 1353: the two .5 remainders (-5.5 and 99.5) get a won each.
        "2026-10,acc-2,(none),tok-3,0,KRW",
        "2026-10,acc-2,proj-a,tok-1,100,KRW",
    ]


def test_focus_with_custom_workspace_and_api_key_columns_and_billed_cost(tmp_path, capsys):
    bill = SPLIT / "focus-custom.csv"
    out = split(tmp_path, [bill], period="2026-10", by="workspace,apikey,subaccount", extra=(
        "--cost-column", "BilledCost", "--workspace-column", "x_Workspace", "--api-key-column", "x_ApiKey"))
    layout = Layout(cost="BilledCost", currency="BillingCurrency", dates=("BillingPeriodStart", "ChargePeriodStart"),
                    dimensions={"subaccount": "SubAccountName", "workspace": "x_Workspace", "apikey": "x_ApiKey"})
    expected = expected_split([bill], layout, period="2026-10", by=["workspace", "apikey", "subaccount"])
    check_split(out, expected, period="2026-10", by=["workspace", "apikey", "subaccount"])
    # The malformed Tags object of Zenith's line does not matter to a split: the line is kept.
    assert "2026-10,ws-dev,key-chat,Zenith,5.00,USD" in out.read_text().splitlines()
    printed = capsys.readouterr().out
    assert "rows: 6 input = 5 accepted + 0 rejected + 1 out of period" in printed
    assert "focus-custom.csv, row 7: period 2026-11" in printed


def test_precision_option_rounds_every_currency_to_it(tmp_path):
    bill = SPLIT / "native-multi.csv"
    out = split(tmp_path, [bill], period="2026-10", by="workspace", extra=("--precision", "4"))
    expected = expected_split([bill], NATIVE, period="2026-10", by=["workspace"])
    check_split(out, expected, period="2026-10", by=["workspace"], precision=4)


def test_rejected_and_out_of_period_rows_are_reported_and_excluded(tmp_path, capsys):
    out = split(tmp_path, [SPLIT / "native-multi.csv"], period="2026-10", by="subaccount")
    printed = capsys.readouterr().out
    assert "rows: 123 input = 120 accepted + 2 rejected + 1 out of period (excluded)" in printed
    assert "2 rejected row(s), excluded:" in printed
    assert "native-multi.csv, row 123, column 'unblendedCost': cost is not a number: 'n/a'" in printed
    assert "native-multi.csv, row 124, column 'currency': missing currency" in printed
    assert "native-multi.csv, row 122: period 2026-09" in printed
    assert printed.count("reconciled") == 5
    assert out.exists()


def test_strict_fails_on_rejected_rows_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "split.csv"
    code = main(["split", "--bill", str(SPLIT / "native-multi.csv"), "--period", "2026-10", "--by", "workspace",
                 "--out", str(out), "--strict"])
    assert code == 1
    assert "2 bill row(s) rejected (--strict); first:" in capsys.readouterr().err
    assert not out.exists()


def test_bad_rows_of_the_bad_bill_are_rejected_with_file_row_and_column(tmp_path, capsys):
    out = split(tmp_path, [BILLS / "bad.csv"], period="2024-09", by="subaccount")
    printed = capsys.readouterr().out
    assert "5 rejected row(s), excluded:" in printed
    assert "bad.csv, row 3, column 'EffectiveCost': cost is not a number: 'abc'" in printed
    assert "bad.csv, row 4, column 'BillingCurrency'" in printed
    assert "bad.csv, row 6, column 'ChargePeriodStart': not a date: 'someday'" in printed
    assert "bad.csv, row 7, column 'EffectiveCost': missing cost" in printed
    assert "bad.csv, row 8, column 'BillingCurrency'" in printed
    # broken-tags and list-tags: their tags are malformed, but a split does not read tags.
    assert out.read_text().splitlines() == ["period,sub_account,amount,currency", "2024-09,broken-tags,3.00,USD",
                                            "2024-09,list-tags,6.00,USD", "2024-09,ok,1.00,USD",
                                            "2024-09,ok-too,7.00,USD"]


@pytest.mark.parametrize(("by", "message"), [
    ("workspace,project", "unknown dimension(s) 'project'"),
    ("workspace,workspace", "more than once: workspace"),
    ("", "at least one dimension"),
    ("sub_account", "unknown dimension(s) 'sub_account'"),
])
def test_bad_by_is_a_usage_error(tmp_path, capsys, by, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["split", "--bill", str(BILLS / "native.csv"), "--period", "2024-09", "--by", by,
              "--out", str(tmp_path / "out.csv")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_precision_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["split", "--bill", str(BILLS / "native.csv"), "--period", "2024-09", "--by", "workspace",
              "--precision", "-1", "--out", str(tmp_path / "out.csv")])
    assert exit_info.value.code == 2
    assert "decimals from 0 to 12" in capsys.readouterr().err


def test_missing_override_column_names_the_column(tmp_path, capsys):
    code = main(["split", "--bill", str(BILLS / "native.csv"), "--period", "2024-09", "--by", "workspace",
                 "--workspace-column", "project", "--out", str(tmp_path / "out.csv")])
    assert code == 1
    assert "native.csv, column 'project': the workspace column given ('project') is not in the header" in \
        capsys.readouterr().err


def test_output_is_csv_that_round_trips(tmp_path):
    out = split(tmp_path, [SPLIT / "native-multi.csv"], period="2026-10", by="workspace,apikey")
    text = out.read_text()
    assert list(csv.reader(io.StringIO(text)))[0] == ["period", "workspace", "api_key", "amount", "currency"]
    assert not list(tmp_path.glob(".*.tmp"))
