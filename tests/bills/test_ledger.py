"""Bills as a ledger: every accepted line belongs to exactly one period, its billing period where the bill has
one, else its charge month; whichever path (Arrow or row by row) reads it."""

from __future__ import annotations

import csv
import tempfile
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.bills import ImportOptions, total_bill
from agent.bills.totals import BillTotals
from agent.errors import BillFormatError
from tests.bills.test_fuzz import FUZZ
from tests.support.bills import rows_of

MONTHS = ("2026-08", "2026-09", "2026-10")
# Per format with a billing period and a charge date: its header, and a line from (cost, billing month or None,
# charge day YYYY-MM-DD).
FORMATS = {
    "focus": (["BilledCost", "EffectiveCost", "BillingCurrency", "BillingPeriodStart", "ChargePeriodStart", "Tags"],
              lambda cost, billing, day: [cost, cost, "USD", f"{billing}-01 00:00:00" if billing else "",
                                          f"{day} 00:00:00", '{"cz_container_bill": "mobile"}']),
    "cur": (["bill/BillingPeriodStartDate", "lineItem/UsageStartDate", "lineItem/UnblendedCost",
             "lineItem/CurrencyCode", "resourceTags/user:cz_container_bill"],
            lambda cost, billing, day: [f"{billing}-01T00:00:00Z" if billing else "", f"{day}T13:00:00Z", cost, "USD",
                                        "mobile"]),
    "azure": (["SubscriptionName", "Date", "CostInBillingCurrency", "BillingCurrencyCode", "Tags",
               "BillingPeriodStartDate"],
              lambda cost, billing, day: ["sub", _us_date(day), cost, "USD", '"cz_container_bill": "mobile"',
                                          _us_date(f"{billing}-01") if billing else ""]),
}


def _us_date(day: str) -> str:
    year, month, date = day.split("-")
    return f"{int(month)}/{int(date)}/{year}"


def write_bill(path: Path, lines: list[tuple[str, str | None, str]], *, bill_format: str = "focus") -> Path:
    """A CSV bill of (cost, billing month or None, charge day) lines."""
    header, line = FORMATS[bill_format]
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(line(*fields) for fields in lines)
    return path


def accepted(bill: BillTotals) -> tuple[int, Decimal]:
    return bill.accepted_rows, sum((group.amount for group in bill.split_groups.values()), Decimal(0))


def test_a_line_billed_in_october_for_a_charge_on_30_september_belongs_to_october(tmp_path):
    path = write_bill(tmp_path / "focus.csv", [("10.00", "2026-10", "2026-09-30"), ("5.00", "2026-10", "2026-10-02")])
    october = total_bill(path, options=ImportOptions(period="2026-10"))
    september = total_bill(path, options=ImportOptions(period="2026-09"))
    assert accepted(october) == (2, Decimal("15.00"))
    assert (october.out_of_period_rows, september.out_of_period_rows) == (0, 2)
    assert accepted(september) == (0, Decimal(0))
    assert sorted(rows_of(october)) == [2, 3]
    assert september.outside_rows == [(2, "2026-10"), (3, "2026-10")]


def test_without_a_billing_period_a_line_belongs_to_its_charge_month(tmp_path):
    path = write_bill(tmp_path / "focus.csv", [("1.25", None, "2026-09-30"), ("2.50", None, "2026-10-01")])
    assert accepted(total_bill(path, options=ImportOptions(period="2026-09"))) == (1, Decimal("1.25"))
    assert accepted(total_bill(path, options=ImportOptions(period="2026-10"))) == (1, Decimal("2.50"))


line = st.tuples(st.decimals(min_value=-1000, max_value=1000, places=2).map(str),
                 st.sampled_from((None, *MONTHS)),
                 st.sampled_from(MONTHS).flatmap(lambda month: st.integers(1, 28).map(lambda d: f"{month}-{d:02d}")))


@pytest.mark.parametrize("bill_format", FORMATS)
@FUZZ
@given(lines=st.lists(line, min_size=1, max_size=40), malformed=st.sets(st.integers(0, 39), max_size=5))
def test_every_accepted_line_lands_in_exactly_one_period(bill_format, lines, malformed):
    """Over the periods found, the lines accepted in each period add up to all accepted lines, row by row;
    rows whose cost must be read the exact way (an exponent) mix both import paths into each chunk."""
    lines = [(f"{Decimal(cost):E}" if index in malformed else cost, billing, charge)
             for index, (cost, billing, charge) in enumerate(lines)]
    with tempfile.TemporaryDirectory() as directory:
        path = write_bill(Path(directory) / "bill.csv", lines, bill_format=bill_format)
        whole = total_bill(path, options=ImportOptions())
        per_period = {period: total_bill(path, options=ImportOptions(period=period)) for period in MONTHS}
    by_row = Counter(row for bill in per_period.values() for row in rows_of(bill))
    landed = {row: key[0] for bill in per_period.values() for row, key in rows_of(bill).items()}
    assert accepted(whole)[0] == len(lines)
    assert sum(bill.accepted_rows for bill in per_period.values()) == whole.accepted_rows
    assert sum(accepted(bill)[1] for bill in per_period.values()) == accepted(whole)[1]
    assert by_row == Counter(range(2, len(lines) + 2))
    assert landed == {index + 2: billing or charge[:7] for index, (_, billing, charge) in enumerate(lines)}
    expected = Counter(billing or charge[:7] for _, billing, charge in lines)
    assert {period: bill.accepted_rows for period, bill in per_period.items() if bill.accepted_rows} == expected
    amounts = {period: sum((Decimal(cost) for cost, billing, charge in lines if (billing or charge[:7]) == period),
                           Decimal(0)) for period in expected}
    assert {period: accepted(bill)[1] for period, bill in per_period.items() if bill.accepted_rows} == amounts


def test_a_tag_key_no_column_holds_is_refused_with_the_closest_column_and_the_way_out(tmp_path):
    path = tmp_path / "bill.csv"
    path.write_text("billingCycle,unblendedCost,currency,tag:cz_container_bill\n2026-10,1.00,USD,mobile\n")
    with pytest.raises(BillFormatError) as refused:
        total_bill(path, options=ImportOptions(tag_key="cz_container_bil"))
    message = str(refused.value)
    assert message.startswith(f"{path}: no column holds the tag key 'cz_container_bil' (looked for ")
    assert "Did you mean 'tag:cz_container_bill'?" in message and "`untagged: true`" in message
    assert "\n" not in message
    untagged = total_bill(path, options=ImportOptions(tag_key="cz_container_bil", untagged=True))
    assert [key[2] for key in untagged.tag_groups] == [None]
