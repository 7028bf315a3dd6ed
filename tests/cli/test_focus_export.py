"""`cz-agent report --format focus`: FOCUS 1.2 columns, the allocation in x_ columns, costs that reconcile."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent.cli import main
from agent.core.periods import Period

WORKED = Path(__file__).resolve().parents[1] / "data" / "worked"
# FOCUS 1.2 columns whose feature level is Mandatory, as the specification lists them.
MANDATORY = ["BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
             "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
             "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost",
             "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName"]
NOT_NULL = ["BilledCost", "BillingAccountId", "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart",
            "ChargeCategory", "ChargeDescription", "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost",
            "EffectiveCost", "InvoiceIssuerName", "ListCost", "ProviderName", "PublisherName", "ServiceCategory",
            "ServiceName"]
COSTS = ["BilledCost", "EffectiveCost", "ListCost", "ContractedCost"]
DATES = ["BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"]
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
CHARGE_CATEGORIES = {"Usage", "Purchase", "Tax", "Credit", "Adjustment"}


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def two_currency_bill(tmp_path: Path) -> Path:
    bill = tmp_path / "bill.csv"
    bill.write_text(
        "billingCycle,unblendedCost,currency,cz_container_bill\n"
        "2026-12,1000.005,USD,cz_cluster_prod\n"
        "2026-12,300.333,USD,cz_common_subcom\n"
        "2026-12,200,USD,mobile\n"
        "2026-12,100.001,USD,\n"
        "2026-12,150001,KRW,mobile\n"
        "2026-12,33333,KRW,\n"
        "2026-12,-12.5,USD,mcmp\n"
    )
    return bill


def allocated(store: str, tmp_path: Path, *, period: str = "2026-12") -> list[dict[str, str]]:
    report = tmp_path / "report.csv"
    assert main(["--store", store, "allocate", "--bill", str(two_currency_bill(tmp_path)), "--rules",
                 str(WORKED / "rules.yaml"), "--usage", str(WORKED / "usage.csv"), "--period", period,
                 "--out", str(report)]) == 0
    with report.open(newline="") as handle:
        return list(csv.DictReader(handle))


def read_focus_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_focus_csv_has_the_mandatory_columns_and_reconciles_to_the_report(store, tmp_path):
    report = allocated(store, tmp_path)
    out = tmp_path / "focus.csv"
    assert main(["--store", store, "report", "--period", "2026-12", "--format", "focus", "--out", str(out)]) == 0
    columns, rows = read_focus_csv(out)
    assert set(MANDATORY) <= set(columns)
    assert {"x_Company", "x_Service", "x_Category", "x_Cluster"} <= set(columns)
    assert all(not c.startswith(("x", "X")) or c.startswith("x_") for c in columns)
    assert len(rows) == len(report)
    report_totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in report:
        report_totals[row["currency"]] += Decimal(row["amount"])
    for cost in COSTS:
        focus_totals: dict[str, Decimal] = defaultdict(Decimal)
        for row in rows:
            focus_totals[row["BillingCurrency"]] += Decimal(row[cost])
        assert focus_totals == report_totals
    assert report_totals == {"KRW": Decimal("183334"), "USD": Decimal("1587.84")}
    for focus_row, report_row in zip(rows, report):
        assert [focus_row[c] for c in COSTS] == [report_row["amount"]] * 4
        assert (focus_row["x_Company"], focus_row["x_Service"], focus_row["x_Category"], focus_row["x_Cluster"],
                focus_row["BillingCurrency"]) == (report_row["company"], report_row["service"],
                                                  report_row["category"], report_row["cluster"],
                                                  report_row["currency"])
        assert all(focus_row[c] for c in NOT_NULL), focus_row
        assert focus_row["ChargeCategory"] in CHARGE_CATEGORIES and focus_row["ChargeClass"] == ""
        assert focus_row["BillingAccountId"] == (report_row["company"] or "unallocated")
        assert Decimal(focus_row["PricingQuantity"]) == 1 and focus_row["PricingUnit"]


def test_focus_dates_are_iso_8601_utc_and_span_the_billing_period(store, tmp_path):
    allocated(store, tmp_path)
    out = tmp_path / "focus.csv"
    assert main(["--store", store, "report", "--run", "1", "--format", "focus", "--out", str(out)]) == 0
    _, rows = read_focus_csv(out)
    for row in rows:
        for column in DATES:
            assert ISO_UTC.match(row[column]), row[column]
            assert datetime.fromisoformat(row[column]).utcoffset().total_seconds() == 0
        # December: the exclusive end is in the next year.
        assert (row["BillingPeriodStart"], row["BillingPeriodEnd"]) == ("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z")
        assert (row["ChargePeriodStart"], row["ChargePeriodEnd"]) == (row["BillingPeriodStart"],
                                                                      row["BillingPeriodEnd"])


def test_focus_service_name_is_never_empty_and_describes_the_allocation(store, tmp_path):
    allocated(store, tmp_path)
    out = tmp_path / "focus.csv"
    assert main(["--store", store, "report", "--period", "2026-12", "--format", "focus", "--out", str(out)]) == 0
    _, rows = read_focus_csv(out)
    by_key = {(r["x_Company"], r["x_Service"], r["x_Category"], r["x_Cluster"], r["BillingCurrency"]): r for r in rows}
    common = by_key[("alpha", "", "common", "", "USD")]
    assert common["ServiceName"] == "Common pool"
    assert common["ChargeDescription"] == "common cost of Common pool, allocated to alpha"
    cluster = by_key[("beta", "mobile", "cluster", "prod", "USD")]
    assert cluster["ChargeDescription"] == "cluster cost of mobile in cluster prod, allocated to beta"
    assert cluster["BilledCost"] == "180.00"


def test_focus_parquet_keeps_exact_decimals_and_utc_timestamps(store, tmp_path):
    report = allocated(store, tmp_path)
    out = tmp_path / "focus.parquet"
    assert main(["--store", store, "report", "--period", "2026-12", "--format", "focus", "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert set(MANDATORY) <= set(table.column_names)
    assert table.schema.field("BilledCost").type == pa.decimal128(38, 2)
    assert table.schema.field("BillingPeriodStart").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.metadata[b"FocusVersion"] == b"1.2"
    costs = table.column("BilledCost").to_pylist()
    currencies = table.column("BillingCurrency").to_pylist()
    assert sum(c for c, cur in zip(costs, currencies) if cur == "USD") == \
        sum(Decimal(r["amount"]) for r in report if r["currency"] == "USD") == Decimal("1587.84")
    assert table.column("BillingPeriodStart").to_pylist()[0] == datetime(2026, 12, 1, tzinfo=UTC)
    assert table.column("ChargeClass").null_count == table.num_rows


def period_bounds(text: str) -> tuple[datetime, datetime]:
    """The bounds render_focus writes for a period."""
    period = Period.parse(text)
    return period.start, period.end


def test_period_bounds_are_midnight_utc_with_an_exclusive_end():
    assert period_bounds("2026-02") == (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
    assert period_bounds("2026-12") == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def test_plain_report_formats_are_unchanged(store, tmp_path):
    allocated(store, tmp_path)
    out = tmp_path / "report.csv"
    assert main(["--store", store, "report", "--period", "2026-12", "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0] == "period,company,service,category,cluster,amount,currency"
