"""The streamed import (Arrow for well-formed rows, row by row for the others) gives exactly what the line
items of `read_bill` give once grouped: the same sums, line counts, rejected rows and row samples."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.bills import ImportOptions, fast, read_bill, reader, total_bill, totals
from agent.bills.totals import BillTotals

DATA = Path(__file__).resolve().parents[1] / "data" / "bills"
COSTS = ["12.5", "-0.50", "0", "-0", "+3", ".25", "7.", "1e3", "5.64902E-05", "1_000", "NaN", "", "NULL", " 4.2 ",
         "0.1234567890123", "99999999999999999999999.5", "1" * 25, "12,5", "\u0663", "0.000001"]
CURRENCIES = ["USD", "usd", " EUR", "", "NULL", "US", "ＵＳＤ", "KRW"]
TAGS = ["", "web", " web ", "cz_cluster_prod", "cz_common_db", "NULL", "\x1cweb", "web\u00a0"]
DATES = ["2026-10", "2026-10-03", "2026-11-01", "20261005", "10/5/2026", "", "not a date"]
NAMES = ["", "team-a", " team-a", "NULL", "team-b"]
SMALL = [(reader, "CSV_BLOCK_BYTES", 1024), (reader, "CHUNK_ROWS", 7), (fast, "KNOWN_TEXTS", 3), (totals, "SUM_ROWS", 20)]


def grouped(path: Path, options: ImportOptions) -> BillTotals:
    bill = read_bill(path, options=options)
    totals = BillTotals(source=str(path), input_rows=bill.input_rows, rejected=bill.rejected)
    totals.add_items(bill.items, outside=bill.out_of_period)
    return totals


def view(totals: BillTotals) -> tuple:
    def sums(groups):
        return {key: (group.exact(), group.lines) for key, group in groups.items()}
    return (sums(totals.tag_groups), sums(totals.split_groups), sums(totals.outside),
            {key: sample.describe() for key, sample in totals.tag_rows.items()},
            [reject.message() for reject in totals.rejected], totals.input_rows, totals.outside_rows)


@pytest.mark.parametrize("name", ["native.csv", "native.csv.gz", "focus.csv", "cur-legacy.csv", "cur2.csv",
                                  "azure.csv", "bad.csv", "real/focus-1.0-sample.csv",
                                  "real/aws-cur-legacy-sample.csv", "real/azure-ea-sample.csv"])
@pytest.mark.parametrize("period", [None, "2023-11", "2024-09"])
def test_streamed_totals_equal_the_grouped_line_items_of_every_sample(name, period):
    options = ImportOptions(period=period, default_currency="USD", untagged=True)
    assert view(total_bill(DATA / name, options=options)) == view(grouped(DATA / name, options))


# 60 examples of up to 300 rows: about 5 s, 8 s on a loaded 2-core machine.
@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.sampled_from(COSTS), st.sampled_from(CURRENCIES), st.sampled_from(TAGS),
                               st.sampled_from(DATES), st.sampled_from(NAMES), st.sampled_from(NAMES)),
                     min_size=1, max_size=300),
       period=st.sampled_from([None, "2026-10"]), default=st.sampled_from([None, "USD"]), small=st.booleans())
def test_streamed_totals_equal_the_grouped_line_items_of_hostile_rows(tmp_path, monkeypatch, rows, period, default,
                                                                       small):
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["unblendedCost", "currency", "cz_container_bill", "billingDate", "loginName", "workspaceName"])
    writer.writerows(rows)
    path = tmp_path / "bill.csv"
    path.write_text(text.getvalue(), encoding="utf-8")
    options = ImportOptions(period=period, default_currency=default)
    # Small chunks share values, a judge that remembers only a few texts starts afresh between them, and the
    # Arrow sums are settled every few chunks.
    with monkeypatch.context() as patch:
        for module, name, value in SMALL if small else []:
            patch.setattr(module, name, value)
        assert view(total_bill(path, options=options)) == view(grouped(path, options))


def test_a_record_holding_only_a_resource_id_is_rejected_not_taken_for_a_blank_line(tmp_path):
    path = tmp_path / "bill.csv"
    path.write_text("unblendedCost,currency,cz_container_bill,resourceId,productName\n"
                    "1.5,USD,web,i-1,ec2\n"
                    ",,,i-2,\n"
                    ",,,,\n"
                    ",,,,rds\n", encoding="utf-8")
    options = ImportOptions(period="2026-10")
    streamed = total_bill(path, options=options)
    assert [(reject.row, reject.reason) for reject in streamed.rejected] == [(3, "missing cost"), (5, "missing cost")]
    assert view(streamed) == view(grouped(path, options))


def test_sums_past_the_range_of_arrow_decimals_stay_exact(tmp_path):
    # 200 costs of 9e23 add up to 1.8e26, past decimal128(38, 12): Arrow would wrap around without a word.
    path = tmp_path / "bill.csv"
    path.write_text("unblendedCost,currency,cz_container_bill\n" + "900000000000000000000000.5,USD,web\n" * 200
                    + "0.25,USD,web\n" * 3, encoding="utf-8")
    streamed = total_bill(path, options=ImportOptions(period="2026-10"))
    assert [group.exact() for group in streamed.split_groups.values()] == [Decimal("180000000000000000000000100.75")]
    assert view(streamed) == view(grouped(path, ImportOptions(period="2026-10")))


@st.composite
def written_costs(draw) -> str:
    """Plain decimals of any length: up to 30 digits on each side of the point, trailing zeros included,
    around the 12 decimals the Arrow path takes and the 24 digits an amount may have."""
    sign = draw(st.sampled_from(["", "-", "+"]))
    whole = draw(st.text("0123456789", max_size=30))
    decimals = draw(st.text("0123456789", max_size=30)) + "0" * draw(st.integers(0, 20))
    point = draw(st.booleans()) or not whole
    return sign + (whole or ("" if decimals else "0")) + ("." + decimals if point else "")


NEIGHBOURS = {"alone": [], "all plain": ["1.5", "-0.25"], "one the Arrow cast refuses": ["1.5", "abc"]}


# 80 examples of three small bills each: about 5 s.
@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cost=written_costs(), first=st.booleans())
def test_a_cost_gets_the_same_verdict_and_total_whatever_its_neighbours(tmp_path, cost, first):
    """Arrow casts a chunk's costs at once, or, when one cell does not cast, picks the plain ones by pattern:
    a cost must not be accepted by one way and rejected by the other."""
    verdicts = set()
    for name, neighbours in NEIGHBOURS.items():
        costs = [cost, *neighbours] if first else [*neighbours, cost]
        path = tmp_path / f"{name}.csv"
        path.write_text("unblendedCost,currency,cz_container_bill\n" + "".join(f"{text},USD,web\n" for text in costs),
                        encoding="utf-8")
        options = ImportOptions(period="2026-10")
        streamed = total_bill(path, options=options)
        assert view(streamed) == view(grouped(path, options)), name
        row = 2 + costs.index(cost)
        verdicts.add(next((reject.reason for reject in streamed.rejected if reject.row == row), "accepted"))
    assert len(verdicts) == 1, f"{cost!r}: {verdicts}"
