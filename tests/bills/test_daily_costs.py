"""The bill per charge day and charge kind (agent.bills.taglines.daily_costs_of), the forecast's input: per (currency,
tag) it adds up exactly to the tag lines; its days and kinds are those the bill writes, counted here independently."""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent.bills import ImportOptions, fast, reader, total_bill, totals
from agent.bills.taglines import daily_costs_of, tag_lines_of
from agent.bills.totals import BillTotals
from agent.core.model import CHARGE_KINDS, DailyCost
from agent.core.money import exact_arithmetic
from agent.core.rules import Rules
from agent.errors import FastReadError
from tests.support.bills import judged_row_by_row, view

REAL = Path(__file__).resolve().parents[1] / "data" / "bills" / "real"
DATA = Path(__file__).resolve().parents[1] / "data" / "bills"
DEMO = Path(__file__).resolve().parents[2] / "demo"
RULES = Rules.model_validate({"companies": {"acme": 1}})
# The kinds as each format's documentation names them, spelled here on their own: the values meaning usage.
USAGE_BASED = {"usage-based"}
CUR_USAGE = {"Usage", "DiscountedUsage", "SavingsPlanCoveredUsage", "SavingsPlanNegation", "BundledDiscount",
             "EdpDiscount", "PrivateRateDiscount", "DistributorDiscount"}
AZURE_USAGE = {"UsageBased"}


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as file:
        return list(csv.DictReader(file))


def by_day_and_kind(rows: list[dict[str, str]], *, cost: str, day: Callable[[str], date | None],
                    usage: Callable[[dict[str, str]], bool]) -> dict[tuple[date | None, str], tuple[Decimal, int]]:
    """Independent exact sums and line counts per (charge day, charge kind) of the rows."""
    sums: dict[tuple[date | None, str], Decimal] = {}
    counts: Counter[tuple[date | None, str]] = Counter()
    for row in rows:
        key = (day(row), "usage" if usage(row) else "fixed")
        sums[key] = sums.get(key, Decimal(0)) + Decimal(row[cost])
        counts[key] += 1
    return {key: (amount, counts[key]) for key, amount in sums.items()}


def daily_by_day_and_kind(daily: list[DailyCost]) -> dict[tuple[date | None, str], tuple[Decimal, int]]:
    sums: dict[tuple[date | None, str], tuple[Decimal, int]] = {}
    for cost in daily:
        amount, lines = sums.get((cost.day, cost.kind), (Decimal(0), 0))
        sums[(cost.day, cost.kind)] = (amount + cost.amount, lines + cost.line_count)
    return sums


def assert_adds_up_to_the_tag_lines(bill: BillTotals) -> list[DailyCost]:
    """The bill's daily costs, checked: per (currency, tag) the sum of the tag lines (over their rules), amounts and
    line counts; each kind one of CHARGE_KINDS."""
    lines_of_tags = tag_lines_of([bill], rules=RULES)
    daily = daily_costs_of([bill], tag_lines=lines_of_tags)
    tagged: dict[tuple[str, str], tuple[Decimal, int]] = {}
    summed: dict[tuple[str, str], tuple[Decimal, int]] = {}
    with exact_arithmetic():
        for line in lines_of_tags:
            amount, lines = tagged.get((line.currency, line.tag), (Decimal(0), 0))
            tagged[(line.currency, line.tag)] = (amount + line.amount, lines + line.line_count)
        for cost in daily:
            amount, lines = summed.get((cost.currency, cost.tag), (Decimal(0), 0))
            summed[(cost.currency, cost.tag)] = (amount + cost.amount, lines + cost.line_count)
    assert summed == tagged
    assert {cost.kind for cost in daily} <= set(CHARGE_KINDS)
    assert sum(cost.line_count for cost in daily) == bill.accepted_rows
    return daily


def test_focus_sample_days_and_kinds_are_the_bills():
    path = REAL / "focus-1.0-sample.csv"
    rows = [row for row in rows_of(path) if row["BillingPeriodStart"].startswith("2024-09")]
    bill = total_bill(path, options=ImportOptions(period="2024-09", tag_key="application"))

    daily = assert_adds_up_to_the_tag_lines(bill)

    expected = by_day_and_kind(rows, cost="EffectiveCost", day=lambda row: date.fromisoformat(
        row["ChargePeriodStart"][:10]), usage=lambda row: row["ChargeFrequency"].casefold() in USAGE_BASED)
    assert daily_by_day_and_kind(daily) == expected
    assert {kind for _, kind in expected} == {"usage", "fixed"}, "the sample has both kinds"
    assert len({cost.tag for cost in daily}) > 2, "the sample has several tag values"


def test_cur_sample_taxes_are_fixed_and_usage_is_by_day():
    path = REAL / "aws-cur-legacy-sample.csv"
    rows = rows_of(path)
    bill = total_bill(path, options=ImportOptions(untagged=True))

    daily = assert_adds_up_to_the_tag_lines(bill)

    expected = by_day_and_kind(rows, cost="lineItem/UnblendedCost", day=lambda row: date.fromisoformat(
        row["lineItem/UsageStartDate"][:10]), usage=lambda row: row["lineItem/LineItemType"] in CUR_USAGE)
    assert daily_by_day_and_kind(daily) == expected
    assert Counter(row["lineItem/LineItemType"] for row in rows)["Tax"] == sum(
        cost.line_count for cost in daily if cost.kind == "fixed") > 0


def test_azure_sample_us_dates_are_read_as_days():
    path = REAL / "azure-ea-sample.csv"
    rows = rows_of(path)
    bill = total_bill(path, options=ImportOptions(tag_key="tagA"))

    daily = assert_adds_up_to_the_tag_lines(bill)

    expected = by_day_and_kind(rows, cost="CostInBillingCurrency",
                               day=lambda row: datetime.strptime(row["Date"], "%m/%d/%Y").date(),
                               usage=lambda row: row["Frequency"] in AZURE_USAGE)
    assert daily_by_day_and_kind(daily) == expected


def test_demo_bill_has_no_charge_date_and_its_rejected_rows_are_not_counted():
    path = DEMO / "bill-2026-10.csv"
    bill = total_bill(path, options=ImportOptions(period="2026-10"))
    rejected = {reject.row for reject in bill.rejected}
    rows = [row for number, row in enumerate(rows_of(path), start=2)
            if number not in rejected and row["billingCycle"] == "2026-10"]

    daily = assert_adds_up_to_the_tag_lines(bill)

    assert len(rejected) == 3
    assert daily_by_day_and_kind(daily) == by_day_and_kind(rows, cost="unblendedCost", day=lambda row: None,
                                                           usage=lambda row: True)


@pytest.mark.parametrize("path", [DATA / "native.csv", DATA / "cur-legacy.csv"], ids=lambda path: path.name)
def test_a_bill_without_charge_dates_gives_no_day(path: Path, tmp_path: Path):
    # The CUR bill without its usage start date: the billing period remains, the day goes.
    rows = rows_of(path)
    undated = tmp_path / path.name
    with undated.open("w", newline="") as file:
        columns = [name for name in rows[0] if name != "lineItem/UsageStartDate"]
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    bill = total_bill(undated, options=ImportOptions())
    daily = assert_adds_up_to_the_tag_lines(bill)

    assert daily and {(cost.day, cost.kind) for cost in daily} == {(None, "usage")}


HOSTILE_HEADER = ["BillingPeriodStart", "ChargePeriodStart", "EffectiveCost", "BillingCurrency", "ChargeFrequency",
                  "Tags"]
# (row, accepted): rows the import must reject are counted in no day.
HOSTILE_ROWS = [
    (["2024-09-01", "2024-09-01T00:00:00Z", "1.25", "USD", "Usage-Based", '{"cz_container_bill": "web"}'], True),
    (["2024-09-01", "2024-09-01 13:00:00", "2.50", "USD", "usage-based", '{"cz_container_bill": "web"}'], True),
    (["2024-09-01", "9/2/2024", "0.125", "USD", "One-Time", '{"cz_container_bill": "web"}'], True),
    (["2024-09-01", "20240903", "-4", "usd", "Recurring", ""], True),
    (["2024-09-01", "2024-09", "3", "USD", "", ""], True),
    (["2024-09-01", "2024-02-30", "6", "USD", "NULL", ""], True),
    (["2024-09-01", "2024-09-04", "n/a", "USD", "Usage-Based", ""], False),
    (["2024-09-01", "2024-09-04", "7", "US D", "One-Time", ""], False),
    (["2024-09-01", "yesterday", "8", "USD", "Usage-Based", ""], False),
    (["2024-09-01", "2024-09-05", "9", "USD", "Usage-Based", '{"cz_container_bill": '], False),
]


@pytest.mark.usefixtures("csv_reader")
def test_hostile_rows_are_rejected_and_in_no_day(tmp_path: Path):
    path = tmp_path / "hostile.csv"
    with path.open("w", newline="") as file:
        csv.writer(file).writerows([HOSTILE_HEADER, *(row for row, _ in HOSTILE_ROWS)])
    bill = total_bill(path, options=ImportOptions())

    daily = assert_adds_up_to_the_tag_lines(bill)

    assert sorted(reject.row for reject in bill.rejected) == [
        number for number, (_, accepted) in enumerate(HOSTILE_ROWS, start=2) if not accepted]
    # A date without a day, or with a day its month lacks, is read for its month and gives no day.
    assert daily == [
        DailyCost("USD", "", None, "usage", Decimal("9"), 2),
        DailyCost("USD", "", date(2024, 9, 3), "fixed", Decimal("-4"), 1),
        DailyCost("USD", "web", date(2024, 9, 1), "usage", Decimal("3.75"), 2),
        DailyCost("USD", "web", date(2024, 9, 2), "fixed", Decimal("0.125"), 1),
    ]
    assert view(bill) == view(judged_row_by_row(path, ImportOptions()))


def test_days_that_do_not_add_up_to_the_tag_lines_fail_instead_of_storing_another_bill():
    bill = total_bill(DEMO / "bill-2026-10.csv", options=ImportOptions(period="2026-10"))
    lines = tag_lines_of([bill], rules=RULES)
    key, group = next(iter(bill.day_groups.items()))
    bill.day_groups[key] = replace(group, amount=group.amount + 1)

    with pytest.raises(RuntimeError, match="does not add up to its tag lines"):
        daily_costs_of([bill], tag_lines=lines)


def test_days_of_costs_past_28_digits_add_up_to_their_tag_line_exactly(tmp_path):
    # Costs of 30 digits: summed in Decimal's default context, each day would be rounded to 28 digits before the
    # month is, and these two days would then miss their month by a unit of the 28th digit.
    costs = ["318881839909643594.410540603165", "675725255829103812.531666907077"]
    path = tmp_path / "bill.csv"
    path.write_text("\n".join([",".join(CUR_HEADER), *(
        f"{day},2024-09-01T00:00:00Z,2024-09-0{day}T00:00:00Z,Usage,USD,{cost},web"
        for day, cost in enumerate(costs, start=1))]) + "\n")
    bill = total_bill(path, options=ImportOptions(period="2024-09"))

    daily = assert_adds_up_to_the_tag_lines(bill)

    assert [day.amount for day in daily] == [Decimal(cost) for cost in costs]
    assert tag_lines_of([bill], rules=RULES)[0].amount == Decimal("994607095738747406.942207510242")


# A CUR bill whose charge days and kinds change from line to line, spelled as bills spell them; a few costs in
# scientific notation, which convert.py takes row by row while their neighbours go through Arrow.
CUR_HEADER = ["identity/LineItemId", "bill/BillingPeriodStartDate", "lineItem/UsageStartDate", "lineItem/LineItemType",
              "lineItem/CurrencyCode", "lineItem/UnblendedCost", "resourceTags/user:cz_container_bill"]
CUR_KINDS = ["Usage", "Tax", " usage ", "TAX", "", "NULL", "Fee", "SavingsPlanCoveredUsage", "RIFee", "DiscountedUsage"]
CUR_COSTS = ["1.25", "-0.5", "3", "0.000125", "2.5E-1", "17.10"]
# Small chunks and blocks, judges that remember three texts (so they start afresh between chunks), sums settled
# every twenty lines: a line's day and kind must not depend on its chunk.
SMALL_CHUNKS = [(reader, "CSV_BLOCK_BYTES", 1024), (reader, "CHUNK_ROWS", 7), (fast, "KNOWN_TEXTS", 3),
                (totals, "SUM_ROWS", 20)]


def varied_cur_rows(count: int) -> list[list[str]]:
    chosen = random.Random(7)
    rows = []
    for number in range(count):
        day = chosen.randint(1, 31)
        charge = chosen.choice([f"2026-10-{day:02d}T00:00:00.000Z", f"2026-10-{day:02d}T13:00:00Z",
                                f"2026-10-{day:02d}", ""])
        rows.append([f"li-{number}", "2026-10-01T00:00:00.000Z", charge, chosen.choice(CUR_KINDS),
                     chosen.choice(["USD", "usd", "EUR"]), chosen.choice(CUR_COSTS),
                     chosen.choice(["web", " web", "db", "", "NULL"])])
    return rows


def counted_by_csv(path: Path) -> dict[tuple[str, str, date | None, str], tuple[Decimal, int]]:
    """Exact sums and line counts per (currency, tag, charge day, kind), read with the csv module."""
    usage = {kind.casefold() for kind in CUR_USAGE}
    sums: dict[tuple[str, str, date | None, str], tuple[Decimal, int]] = {}
    for row in rows_of(path):
        tag = row["resourceTags/user:cz_container_bill"].strip()
        charge = row["lineItem/UsageStartDate"].strip()
        kind = row["lineItem/LineItemType"].strip()
        key = (row["lineItem/CurrencyCode"].upper(), "" if tag == "NULL" else tag,
               date.fromisoformat(charge[:10]) if charge else None,
               "usage" if kind in ("", "NULL") or kind.casefold() in usage else "fixed")
        amount, lines = sums.get(key, (Decimal(0), 0))
        sums[key] = (amount + Decimal(row["lineItem/UnblendedCost"]), lines + 1)
    return sums


def written_as(container: str, path: Path, rows: list[list[str]]) -> Path:
    if container == "parquet":
        target = path.with_suffix(".parquet")
        pq.write_table(pa.table({name: [row[i] for row in rows] for i, name in enumerate(CUR_HEADER)}), target)
        return target
    text = io.StringIO()
    csv.writer(text).writerows([CUR_HEADER, *rows])
    if container == "csv.gz":
        target = path.with_suffix(".csv.gz")
        target.write_bytes(gzip.compress(text.getvalue().encode()))
        return target
    path.write_text(text.getvalue())
    return path


@pytest.mark.parametrize("small", [True, False], ids=["small chunks", "one chunk"])
@pytest.mark.parametrize("container", ["csv", "csv read by the fallback", "csv.gz", "parquet"])
def test_days_and_kinds_varying_across_chunks_are_each_lines_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   container: str, small: bool):
    rows = varied_cur_rows(210)
    path = written_as(container, tmp_path / "cur.csv", rows)
    expected = counted_by_csv(written_as("csv", tmp_path / "cur.csv", rows))
    for module, name, value in SMALL_CHUNKS if small else []:
        monkeypatch.setattr(module, name, value)
    if container == "csv read by the fallback":
        monkeypatch.setattr(reader, "_arrow_csv_batches", refuse_arrow)

    bill = total_bill(path, options=ImportOptions(period="2026-10"))
    daily = assert_adds_up_to_the_tag_lines(bill)

    assert not bill.rejected and bill.accepted_rows == len(rows)
    assert {(cost.currency, cost.tag, cost.day, cost.kind): (cost.amount, cost.line_count)
            for cost in daily} == expected
    assert {kind for *_, kind in expected} == {"usage", "fixed"} and None in {day for _, _, day, _ in expected}


def refuse_arrow(*_args: object, **_kwargs: object) -> None:
    raise FastReadError("refused by the test")
