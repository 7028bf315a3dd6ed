"""Mistakes that would move a month's money end the run with one clear line and store nothing; a bill given
twice counts once."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.cli import main
from agent.store.runs import list_runs, open_store

DATA = Path(__file__).resolve().parents[1] / "data"
WORKED = DATA / "worked"
REAL = DATA / "bills" / "real"
DEMO = Path(__file__).resolve().parents[2] / "demo"


def allocate(store: str, out: Path, *bills: Path, rules: Path = WORKED / "rules.yaml", period: str = "2026-10",
             usage: Path | None = None) -> int:
    flags = [flag for bill in bills for flag in ("--bill", str(bill))]
    usage_flags = ["--usage", str(usage)] if usage else []
    return main(["--store", store, "allocate", *flags, "--rules", str(rules), *usage_flags, "--period", period,
                 "--out", str(out)])


def stored_runs(store: str) -> list:
    return list_runs(open_store(store))


def total(report: Path) -> str:
    from decimal import Decimal

    lines = report.read_text().splitlines()[1:]
    return str(sum((Decimal(line.split(",")[5]) for line in lines), Decimal(0)))


def test_a_typo_in_the_tag_key_fails_naming_the_closest_column_and_stores_nothing(tmp_path, capsys):
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    rules = tmp_path / "rules.yaml"
    rules.write_text("tag_key: cz_container_bil\n" + (WORKED / "rules.yaml").read_text())
    assert allocate(store, tmp_path / "report.csv", WORKED / "bill.csv", rules=rules) == 1
    error = capsys.readouterr().err.strip()
    assert "no column holds the tag key 'cz_container_bil'" in error and "'cz_container_bill'" in error
    assert len(error.splitlines()) == 1
    assert stored_runs(store) == [] and not (tmp_path / "report.csv").exists()


def test_a_bill_untagged_on_purpose_is_all_common_cost(tmp_path):
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    rules = tmp_path / "rules.yaml"
    rules.write_text((WORKED / "rules.yaml").read_text() + "bill: {untagged: true}\n")
    assert allocate(store, tmp_path / "report.csv", REAL / "aws-cur-legacy-sample.csv", rules=rules,
                    period="2023-11") == 0
    [run] = stored_runs(store)
    assert {row.split(",")[3] for row in (tmp_path / "report.csv").read_text().splitlines()[1:]} == {"common"}
    assert run.manifest.rows.accepted == 1281


def test_the_wrong_period_fails_listing_the_periods_found_and_stores_nothing(tmp_path, capsys):
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    assert allocate(store, tmp_path / "report.csv", WORKED / "bill.csv", period="2026-11") == 1
    error = capsys.readouterr().err
    assert "no bill row is in 2026-11: the rows are in 2026-10 (" in error
    assert stored_runs(store) == []


def test_a_bill_given_twice_through_a_symlink_or_a_copy_counts_once_with_a_warning(tmp_path, caplog):
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    bill = WORKED / "bill.csv"
    once = tmp_path / "once.csv"
    assert allocate(store, once, bill) == 0
    copy = shutil.copy(bill, tmp_path / "copy.csv")
    link = tmp_path / "link.csv"
    link.symlink_to(bill)
    caplog.clear()
    assert allocate(store, tmp_path / "twice.csv", bill, bill, Path(copy), link) == 0
    assert [(record.levelname, record.getMessage()) for record in caplog.records if record.levelname == "WARNING"] == [
        ("WARNING", f"{bill} is the same file as {bill}: counted once"),
        ("WARNING", f"{copy} has the same bytes as {bill}: counted once"),
        ("WARNING", f"{link} is the same file as {bill}: counted once")]
    assert total(tmp_path / "twice.csv") == total(once)
    assert [len(run.manifest.bills) for run in stored_runs(store)] == [1]


CUR_HEADER = ("identity/LineItemId,identity/TimeInterval,bill/BillingPeriodStartDate,lineItem/UsageStartDate,"
              "lineItem/CurrencyCode,lineItem/UnblendedCost,resourceTags/user:cz_container_bill\n")


def cur_line(line_id: str, hour: int, cost: str) -> str:
    interval = f"2026-10-05T{hour:02d}:00:00Z/2026-10-05T{hour + 1:02d}:00:00Z"
    return f"{line_id},{interval},2026-10-01T00:00:00Z,2026-10-05T{hour:02d}:00:00Z,USD,{cost},mobile\n"


def test_a_line_identity_in_two_files_of_the_period_fails_naming_both_unless_allowed(tmp_path, capsys):
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    first = tmp_path / "cur-1.csv"
    first.write_text(CUR_HEADER + cur_line("a1", 0, "1.00") + cur_line("a1", 1, "2.00"))
    # Another hour of a1 is another line; a1 at hour 1 again is the same charge delivered twice.
    second = tmp_path / "cur-2.csv"
    second.write_text(CUR_HEADER + cur_line("a1", 2, "4.00") + cur_line("a1", 1, "2.00"))
    assert allocate(store, tmp_path / "report.csv", first, second) == 1
    error = capsys.readouterr().err
    assert f"1 line(s) of 2026-10 are in both {first} and {second} (the first: row 3, identity/LineItemId " in error
    assert "`duplicates: allow`" in error and stored_runs(store) == []
    third = tmp_path / "cur-3.csv"
    third.write_text(CUR_HEADER + cur_line("a1", 2, "4.00"))
    assert allocate(store, tmp_path / "report.csv", first, third) == 0
    assert total(tmp_path / "report.csv") == "7.00"
    rules = tmp_path / "rules.yaml"
    rules.write_text((WORKED / "rules.yaml").read_text() + "bill: {duplicates: allow}\n")
    assert allocate(store, tmp_path / "report.csv", first, second, rules=rules) == 0
    assert total(tmp_path / "report.csv") == "9.00"


def test_a_line_identity_column_named_in_the_rules_is_checked_too(tmp_path, capsys):
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    header = "billingCycle,invoiceLineId,unblendedCost,currency,cz_container_bill\n"
    first, second = tmp_path / "a.csv", tmp_path / "b.xlsx"
    first.write_text(header + "2026-10,L1,1.00,USD,mobile\n2026-10,L2,2.00,USD,mobile\n")
    import openpyxl

    workbook = openpyxl.Workbook()
    for row in (header.strip().split(","), ["2026-10", "L2", "2.00", "USD", "mobile"]):
        workbook.active.append(row)
    workbook.save(second)
    rules = tmp_path / "rules.yaml"
    rules.write_text((WORKED / "rules.yaml").read_text() + "bill: {line_id: invoiceLineId}\n")
    assert allocate(store, tmp_path / "report.csv", first, second) == 0
    assert allocate(store, tmp_path / "report.csv", first, second, rules=rules) == 1
    assert f"are in both {first} and {second} (the first: row 2, invoiceLineId 'L2')" in capsys.readouterr().err


def test_a_period_of_stray_rows_is_allocated_with_a_warning_in_the_summary(tmp_path, capsys):
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    bill = tmp_path / "october.csv"
    bill.write_text("billingCycle,cz_container_bill,unblendedCost,currency\n"
                    + "".join(f"2026-10,mobile,{n}.00,USD\n" for n in range(1, 201)) + "2026-09,mobile,18.43,USD\n")
    capsys.readouterr()
    assert allocate(store, tmp_path / "september.csv", bill, period="2026-09") == 0
    assert "warning 2026-09 holds only 1 of the 201 lines of its bill(s)" in " ".join(capsys.readouterr().out.split())
    assert allocate(store, tmp_path / "october.csv.out", bill) == 0
    assert "stray rows?" not in capsys.readouterr().out


def test_the_same_bill_as_csv_and_as_xlsx_fails_naming_both(tmp_path, capsys):
    import csv

    import openpyxl

    store = f"sqlite:///{tmp_path / 'runs.db'}"
    bill = DEMO / "bill-2026-10.csv"
    workbook = openpyxl.Workbook()
    with bill.open(newline="") as file:
        for row in csv.reader(file):
            workbook.active.append(row)
    xlsx = tmp_path / "bill-2026-10.xlsx"
    workbook.save(xlsx)
    demo = {"rules": DEMO / "rules.yaml", "usage": DEMO / "usage-2026-10.csv"}
    assert allocate(store, tmp_path / "report.csv", bill, xlsx, **demo) == 1
    error = " ".join(capsys.readouterr().err.split())
    assert f"{bill} and {xlsx} give 2026-10 the same lines" in error and stored_runs(store) == []
    assert allocate(store, tmp_path / "report.csv", xlsx, **demo) == 0
    assert allocate(store, tmp_path / "csv.csv", bill, **demo) == 0
    assert total(tmp_path / "report.csv") == total(tmp_path / "csv.csv")
