"""The cz-agent command line end to end: files in, report, rejects and stored runs out."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agent.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"
WORKED = DATA / "worked"
REAL = DATA / "bills" / "real"
DEMO = Path(__file__).resolve().parents[2] / "demo"


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def allocate(store: str, out: Path, *extra: str, bill: Path = WORKED / "bill.csv",
             rules: Path = WORKED / "rules.yaml", period: str = "2026-10") -> int:
    return main(["--store", store, "allocate", "--bill", str(bill), "--rules", str(rules), "--period", period,
                 "--out", str(out), *extra])


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_worked_example_report_has_the_contract_columns_and_amounts(store, tmp_path):
    out = tmp_path / "report.csv"
    assert allocate(store, out, "--usage", str(WORKED / "usage.csv")) == 0
    assert out.read_text().splitlines()[0] == "period,company,service,category,cluster,amount,currency"
    rows = read_rows(out)
    by_company: dict[str, Decimal] = {}
    for row in rows:
        by_company[row["company"]] = by_company.get(row["company"], Decimal(0)) + Decimal(row["amount"])
    assert by_company == {"alpha": Decimal("765.00"), "beta": Decimal("345.00"), "gamma": Decimal("490.00")}
    assert {"period": "2026-10", "company": "alpha", "service": "mobile", "category": "cluster",
            "cluster": "prod", "amount": "420.00", "currency": "USD"} in rows
    assert {"period": "2026-10", "company": "gamma", "service": "", "category": "common", "cluster": "prod",
            "amount": "20.00", "currency": "USD"} in rows
    assert len({(r["company"], r["service"], r["category"], r["cluster"], r["currency"]) for r in rows}) == len(rows)


def test_without_usage_cluster_cost_is_unallocated_with_its_cluster(store, tmp_path):
    out = tmp_path / "report.csv"
    assert allocate(store, out) == 0
    unallocated = [r for r in read_rows(out) if r["category"] == "unallocated"]
    assert unallocated == [{"period": "2026-10", "company": "", "service": "", "category": "unallocated",
                            "cluster": "prod", "amount": "1000.00", "currency": "USD"}]


def test_same_inputs_give_a_byte_identical_report_and_one_stored_run(store, tmp_path, capsys):
    first, second, exported = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    assert allocate(store, first, "--usage", str(WORKED / "usage.csv")) == 0
    assert allocate(store, second, "--usage", str(WORKED / "usage.csv")) == 0
    assert first.read_bytes() == second.read_bytes()
    assert main(["--store", store, "report", "--run", "1", "--out", str(exported)]) == 0
    assert exported.read_bytes() == first.read_bytes()
    capsys.readouterr()
    assert main(["--store", store, "runs", "--period", "2026-10"]) == 0
    listing = capsys.readouterr().out
    assert "Stored runs" in listing and "2026-10" in listing
    # A run identical to the period's latest is not stored again (agent/store.py save_run).
    assert [line.split("│")[1].strip() for line in listing.splitlines() if line.startswith("│")] == ["1"]


def test_report_formats_json_and_parquet_hold_the_same_exact_rows(store, tmp_path):
    csv_out, json_out, parquet_out = tmp_path / "r.csv", tmp_path / "r.json", tmp_path / "r.parquet"
    assert allocate(store, csv_out, "--usage", str(WORKED / "usage.csv")) == 0
    assert main(["--store", store, "report", "--period", "2026-10", "--out", str(json_out)]) == 0
    assert main(["--store", store, "report", "--period", "2026-10", "--out", str(parquet_out)]) == 0
    expected = read_rows(csv_out)
    assert json.loads(json_out.read_text()) == expected
    table = pq.read_table(parquet_out)
    assert str(table.schema.field("amount").type) == "decimal128(38, 2)"
    assert [{**r, "amount": format(r["amount"], "f")} for r in table.to_pylist()] == expected


def test_manifest_records_inputs_counts_and_reconciliation(store, tmp_path):
    from agent.store.runs import list_runs, open_store

    assert allocate(store, tmp_path / "r.csv", "--usage", str(WORKED / "usage.csv")) == 0
    manifest = list_runs(open_store(store))[0].manifest.to_json()
    assert manifest["bills"][0]["sha256"] == __import__("hashlib").sha256((WORKED / "bill.csv").read_bytes()).hexdigest()
    assert manifest["rows"] == {"input": 5, "accepted": 5, "rejected": 0, "out_of_period": 0}
    assert manifest["totals"]["USD"] == {"bill": "1600", "bill_rounded": "1600.00", "allocated": "1600.00",
                                         "unallocated": "0.00", "out_of_period": "0"}
    assert manifest["namespace_map"] == {"prod": {"kube-system": None, "mcmp": "mcmp", "mobile-api": "mobile"}}
    assert manifest["usage"]["namespaces"] == 3
    assert len(manifest["rules_digest"]) == 64
    # The cost basis and who carries unattributable cost and idle capacity: the native bill's column, the defaults.
    assert manifest["bills"][0]["cost_column"] == "unblendedCost"
    assert manifest["carrying"] == {"unattributable": "unallocated", "idle": "spread"}


BAD_BILL = """billingCycle,cz_container_bill,unblendedCost,currency
2026-10,mobile,10.00,USD
2026-10,mobile,ten,USD
2026-10,,5.5,USD
2026-09,,7,USD
2026-10,mobile,1,
"""


def test_rejected_and_out_of_period_rows_are_listed_and_reconciled(store, tmp_path, capsys):
    bill = tmp_path / "bill.csv"
    bill.write_text(BAD_BILL)
    out = tmp_path / "report.csv"
    assert allocate(store, out, bill=bill) == 0
    printed = capsys.readouterr().out
    assert "rows: 5 input = 2 accepted + 2 rejected + 1 out of period" in printed
    assert f"{bill}, row 3, column 'unblendedCost'" in printed
    rejects = read_rows(tmp_path / "report.csv.rejects.csv")
    assert [(r["row"], r["column"], r["raw_cost"]) for r in rejects] == [("3", "unblendedCost", "ten"),
                                                                         ("6", "currency", "1")]
    assert sum(Decimal(r["amount"]) for r in read_rows(out)) == Decimal("15.50")
    assert "out of period 7" in printed


def test_strict_fails_on_rejected_rows_and_stores_nothing(store, tmp_path, capsys):
    bill = tmp_path / "bill.csv"
    bill.write_text(BAD_BILL)
    out = tmp_path / "report.csv"
    assert allocate(store, out, "--strict", bill=bill) == 1
    assert "2 bill row(s) rejected (--strict)" in capsys.readouterr().err
    assert not out.exists()
    assert main(["--store", store, "runs"]) == 0
    assert "│ 1" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("rules_text", "message"),
    [
        ("companies: {alpha: 50}\nservices: {mobile: {alpha: -1}}\n", "services.mobile.alpha: weight must be >= 0"),
        ("companies: {alpha: 1}\ncommon_groups: {g: [ghost]}\n", "common_groups.g: unknown service 'ghost'"),
    ],
)
def test_bad_rules_fail_with_the_key_and_store_nothing(store, tmp_path, capsys, rules_text, message):
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text)
    assert allocate(store, tmp_path / "r.csv", rules=rules) == 1
    assert message in capsys.readouterr().err
    from agent.store.runs import list_runs, open_store
    assert list_runs(open_store(store)) == []


def test_bad_usage_and_missing_bill_fail_naming_the_file(store, tmp_path, capsys):
    usage = tmp_path / "usage.csv"
    usage.write_text("cluster,namespace,service,memory_byte_seconds\nprod,web,,a lot\n")
    assert allocate(store, tmp_path / "r.csv", "--usage", str(usage)) == 1
    assert f"{usage}, row 2, column 'memory_byte_seconds'" in capsys.readouterr().err
    assert allocate(store, tmp_path / "r.csv", bill=tmp_path / "absent.csv") == 1
    assert "absent.csv: no such file" in capsys.readouterr().err


def test_bad_period_is_a_usage_error(store, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        allocate(store, tmp_path / "r.csv", period="2026-13")
    assert exited.value.code == 2
    assert "expected a month as YYYY-MM" in capsys.readouterr().err


def test_explain_shows_tags_namespaces_shares_and_bill_rows(store, tmp_path, capsys):
    assert allocate(store, tmp_path / "r.csv", "--usage", str(WORKED / "usage.csv")) == 0
    capsys.readouterr()
    assert main(["--store", store, "explain", "--period", "2026-10", "--company", "alpha", "--service",
                 "mobile"]) == 0
    explained = capsys.readouterr().out
    assert "alpha · mobile · cluster · cluster prod: 420.00 USD" in explained
    assert "cz_cluster_prod" in explained and "mobile-api" in explained and "60.0000%" in explained
    assert f"{WORKED / 'bill.csv'} rows 2-3" in explained
    assert "alpha · mobile · service_common: 105.00 USD" in explained
    assert main(["--store", store, "explain", "--run", "1", "--company", "nobody"]) == 1
    assert "no cost for company 'nobody'" in capsys.readouterr().err


def test_explain_shows_the_namespaces_behind_the_cluster_cost(store, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert allocate(store, out, "--usage", str(DEMO / "usage-2026-10.csv"), bill=DEMO / "bill-2026-10.csv",
                    rules=DEMO / "rules.yaml") == 0
    capsys.readouterr()
    assert main(["--store", store, "explain", "--period", "2026-10", "--company", "acme", "--service",
                 "payments"]) == 0
    explained = capsys.readouterr().out
    table = explained[explained.index("Cluster cost by namespace"):]
    shown = {tuple(cells[:2]): cells[5] for cells in (line.replace("│", " ").split() for line in table.splitlines())
             if len(cells) == 7 and cells[-1] == "USD"}
    prod = next(row for row in read_rows(out) if (row["company"], row["service"], row["category"], row["cluster"])
                == ("acme", "payments", "cluster", "prod"))
    assert set(shown) == {("prod", "payments-api"), ("prod", "payments-legacy"), ("stage", "payments-api")}
    assert Decimal(shown[("prod", "payments-api")].replace(",", "")) + \
        Decimal(shown[("prod", "payments-legacy")].replace(",", "")) == Decimal(prod["amount"])


@pytest.mark.parametrize(("options", "cost_column"), [((), "EffectiveCost"), (("--cost-column", "BilledCost"), "BilledCost")])
def test_real_focus_sample_excludes_the_next_period_row_and_reconciles(store, tmp_path, capsys, options, cost_column):
    rules = tmp_path / "rules.yaml"
    rules.write_text("companies: {a: 2, b: 1}\n")
    out = tmp_path / "report.csv"
    assert allocate(store, out, *options, bill=REAL / "focus-1.0-sample.csv", rules=rules, period="2024-09") == 0
    assert "rows: 1000 input = 999 accepted + 0 rejected + 1 out of period" in capsys.readouterr().out
    with (REAL / "focus-1.0-sample.csv").open(newline="") as handle:
        expected = sum(Decimal(r[cost_column]) for r in csv.DictReader(handle)
                       if r["BillingPeriodStart"].startswith("2024-09"))
    assert sum(Decimal(r["amount"]) for r in read_rows(out)) == expected.quantize(Decimal("0.01"))
    from agent.store.runs import list_runs, open_store

    assert [bill.cost_column for bill in list_runs(open_store(store))[0].manifest.bills] == [cost_column]


def test_several_currencies_are_reported_separately(store, tmp_path):
    bill = tmp_path / "bill.csv"
    bill.write_text("billingCycle,cz_container_bill,unblendedCost,currency\n2026-10,,1000,KRW\n2026-10,,0.015,USD\n"
                    "2026-10,,0.015,USD\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("companies: {a: 1, b: 2}\n")
    out = tmp_path / "report.csv"
    assert allocate(store, out, bill=bill, rules=rules) == 0
    assert [(r["company"], r["amount"], r["currency"]) for r in read_rows(out)] == [
        ("a", "333", "KRW"), ("b", "667", "KRW"), ("a", "0.01", "USD"), ("b", "0.02", "USD")]


def test_demo_month_reconciles_to_the_cent(store, tmp_path, capsys):
    out = tmp_path / "report.csv"
    assert allocate(store, out, "--usage", str(DEMO / "usage-2026-10.csv"), bill=DEMO / "bill-2026-10.csv",
                    rules=DEMO / "rules.yaml") == 0
    printed = capsys.readouterr().out
    assert "rows: 3004 input = 3000 accepted + 3 rejected + 1 out of period" in printed
    rows = read_rows(out)
    assert sum(Decimal(r["amount"]) for r in rows) == Decimal("60297.59")
    categories = {r["category"] for r in rows}
    assert categories == {"cluster", "service_common", "service_exclusive", "common", "unallocated"}
    assert "unallocated USD 89.31: unknown service 'legacy-crm'" in printed


def test_import_progress_hears_every_row_of_each_bill(tmp_path):
    from agent.bills import ImportOptions
    from agent.pipeline import RunRequest, import_bills
    from agent.sources.rules_file import load_rules

    heard: dict[Path, int] = {}
    read_bytes: dict[Path, int | None] = {}
    stages: list[str] = []

    def on_rows(path: Path, rows: int, done: int | None) -> None:
        heard[path] = heard.get(path, 0) + rows
        read_bytes[path] = done

    request = RunRequest(bills=[WORKED / "bill.csv", DEMO / "bill-2026-10.csv"], period="2026-10",
                         rules=load_rules(WORKED / "rules.yaml"), usage=None,
                         import_options=ImportOptions(period="2026-10"))
    imports = import_bills(request, on_rows=on_rows, on_stage=stages.append)
    assert heard == {WORKED / "bill.csv": 5, DEMO / "bill-2026-10.csv": 3004}
    assert read_bytes == {path: path.stat().st_size for path in heard}
    assert [bill.input_rows for bill in imports] == [5, 3004]
    assert [line.split(" in ")[0] for line in stages] == [
        f"read {WORKED / 'bill.csv'}: 5 rows (5 accepted, 0 rejected, 0 out of period)",
        f"read {DEMO / 'bill-2026-10.csv'}: 3,004 rows (3,000 accepted, 3 rejected, 1 out of period)"]


def test_explain_names_the_attribution_rule_that_applied(store, tmp_path, capsys):
    rules = tmp_path / "rules.yaml"
    rules.write_text((WORKED / "rules.yaml").read_text()
                     + "attribution:\n  - match: {sub_account: finops}\n    company: gamma\n")
    assert allocate(store, tmp_path / "r.csv", "--usage", str(WORKED / "usage.csv"), rules=rules) == 0
    rows = read_rows(tmp_path / "r.csv")
    assert {"period": "2026-10", "company": "gamma", "service": "", "category": "service_exclusive",
            "cluster": "", "amount": "100.00", "currency": "USD"} in rows
    assert not [r for r in rows if r["category"] == "common" and r["cluster"] == ""]
    capsys.readouterr()
    assert main(["--store", store, "explain", "--period", "2026-10", "--company", "gamma", "--service", ""]) == 0
    explained = capsys.readouterr().out
    assert "attribution[0] sub_account=finops -> company gamma" in explained
    assert f"bill rows of attribution[0] sub_account=finops -> company gamma: {WORKED / 'bill.csv'} rows 6" in explained


def test_on_a_terminal_each_bill_shows_bytes_read_of_its_size_and_the_stages_a_line_each(tmp_path):
    import io

    from rich.console import Console

    from agent.cli import import_progress

    bill = DEMO / "bill-2026-10.csv"
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system=None)
    with import_progress(console) as (on_rows, on_stage):
        on_rows(bill, 1000, bill.stat().st_size // 2)
        on_stage("allocated 2026-10: 12 report rows in 0.1 s")
    text = out.getvalue()
    assert "reading " in text and "1,000 rows" in text
    size_kb = bill.stat().st_size / 1000
    assert f"{size_kb / 2:.1f}/{size_kb:.1f} kB" in text
    assert "allocated 2026-10: 12 report rows in 0.1 s" in text


def test_without_a_terminal_the_stages_go_to_stderr_a_line_each(store, tmp_path, capsys):
    assert allocate(store, tmp_path / "report.csv") == 0
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" in ")[0] for line in lines] == [
        f"read {WORKED / 'bill.csv'}: 5 rows (5 accepted, 0 rejected, 0 out of period)",
        "allocated 2026-10: 9 report rows", "stored run 1", f"wrote {tmp_path / 'report.csv'}"]
