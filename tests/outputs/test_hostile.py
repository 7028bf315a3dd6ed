"""Names that a spreadsheet would run as formulas, or a browser as script, reach every output of a real run
harmlessly: CSV cells get OWASP's leading apostrophe (amounts stay numbers), HTML is escaped."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from agent.cli import main
from agent.outputs.report import csv_safe
from agent.service.api import create_app
from agent.store.runs import open_store

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
EVIL_COMPANY = '=HYPERLINK("http://evil.example","x")'
PLUS_COMPANY = "+acme"
SCRIPT_COMPANY = "<script>alert('x')</script>"
AT_SERVICE = "@SUM(1+1)"
MINUS_SERVICE = "-2+3"
TAB_SERVICE = "\tcmd"
# Bill cells are trimmed on import, so leading tabs and CRs reach the outputs through the rules' names.
TAB_COMPANY = "\tcorp"
CR_COMPANY = "\rcorp"
CLUSTER = "=calc"


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def assert_spreadsheet_safe(content: str) -> list[list[str]]:
    """No cell starts a formula unless it is a plain number; returns the rows for further checks."""
    rows = list(csv.reader(io.StringIO(content, newline="")))
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS) or is_number(cell), f"formula cell {cell!r} in {row}"
    return rows


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    directory = tmp_path_factory.mktemp("hostile")
    rules = {"companies": {EVIL_COMPANY: 1, PLUS_COMPANY: 1, SCRIPT_COMPANY: 1, TAB_COMPANY: 1, CR_COMPANY: 1},
             "services": {AT_SERVICE: {EVIL_COMPANY: 1}, MINUS_SERVICE: {PLUS_COMPANY: 1, SCRIPT_COMPANY: 1},
                          TAB_SERVICE: {PLUS_COMPANY: 1}}}
    (directory / "rules.yaml").write_text(yaml.safe_dump(rules))
    bill = [["billingCycle", "unblendedCost", "currency", "tag:cz_container_bill", "workspaceName", "apiKeyName"],
            ["2026-10", "10.00", "USD", AT_SERVICE, "=ws", "@key"],
            ["2026-10", "-12.50", "USD", AT_SERVICE, "+ws", "-key"],
            ["2026-10", "40.00", "USD", MINUS_SERVICE, "ws", "key"],
            ["2026-10", "7.00", "USD", f"cz_cluster_{CLUSTER}", "\rws", "\tkey"],
            ["2026-10", "3.00", "USD", TAB_SERVICE, "ws", "key"],
            ["2026-10", "1.00", "USD", "", "ws", "key"]]
    with (directory / "bill.csv").open("w", newline="") as out:
        csv.writer(out).writerows(bill)  # CRLF line ends: a cell holding a CR is quoted
    (directory / "usage.csv").write_text(f"cluster,namespace,service,memory_byte_seconds\n{CLUSTER},ns,{AT_SERVICE},5\n"
                                         f"{CLUSTER},ns2,{MINUS_SERVICE},5\n")
    store = f"sqlite:///{directory / 'runs.db'}"
    assert main(["--store", store, "allocate", "--bill", str(directory / "bill.csv"), "--rules",
                 str(directory / "rules.yaml"), "--usage", str(directory / "usage.csv"), "--period", "2026-10",
                 "--out", str(directory / "report.csv")]) == 0
    assert main(["--store", store, "report", "--period", "2026-10", "--format", "focus", "--out",
                 str(directory / "focus.csv")]) == 0
    for name, company in (("evil", EVIL_COMPANY), ("script", SCRIPT_COMPANY)):
        assert main(["--store", store, "statement", "--period", "2026-10", "--company", company, "--out",
                     str(directory / f"statement-{name}.html")]) == 0
    return {"directory": directory, "store": store}


def test_the_bill_really_carries_the_hostile_names(run) -> None:
    """The bill was written by a plain CSV writer: the names reach the run as given."""
    with (run["directory"] / "bill.csv").open(newline="") as bill:
        cells = {cell for row in csv.reader(bill) for cell in row}
    assert {AT_SERVICE, MINUS_SERVICE, TAB_SERVICE, "=ws", "\rws"} <= cells


def test_report_csv_neutralises_names_and_keeps_negative_amounts(run) -> None:
    rows = assert_spreadsheet_safe((run["directory"] / "report.csv").read_bytes().decode())
    companies = {row[1] for row in rows[1:]}
    assert {"'" + EVIL_COMPANY, "'" + PLUS_COMPANY, SCRIPT_COMPANY, "'" + TAB_COMPANY, "'" + CR_COMPANY} <= companies
    assert {"'" + AT_SERVICE, "'" + MINUS_SERVICE} <= {row[2] for row in rows[1:]}
    assert "'" + CLUSTER in {row[4] for row in rows[1:]}
    amounts = [row[5] for row in rows[1:]]
    assert all(is_number(amount) for amount in amounts) and any(amount.startswith("-") for amount in amounts)


def test_focus_export_csv_neutralises_names(run) -> None:
    rows = assert_spreadsheet_safe((run["directory"] / "focus.csv").read_bytes().decode())
    header = rows[0]
    companies = {row[header.index("x_Company")] for row in rows[1:]}
    assert {"'" + EVIL_COMPANY, "'" + PLUS_COMPANY} <= companies
    assert all(is_number(row[header.index("BilledCost")]) for row in rows[1:])


def test_statement_csv_neutralises_and_html_escapes(run) -> None:
    directory = run["directory"]
    rows = assert_spreadsheet_safe((directory / "statement-evil.csv").read_bytes().decode())
    assert {row[2] for row in rows[1:]} == {"'" + EVIL_COMPANY}
    amount = rows[0].index("amount")
    assert any(row[amount].startswith("-") for row in rows[1:]), "the credit stays a negative number"
    page = (directory / "statement-script.html").read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


def test_api_csv_outputs_neutralise_names(run) -> None:
    engine = open_store(run["store"])
    client = TestClient(create_app(engine=engine, registry=CollectorRegistry()))
    allocations = client.get("/api/v1/allocations", params={"period": "2026-10", "format": "csv"})
    assert allocations.status_code == 200
    rows = assert_spreadsheet_safe(allocations.text)
    assert "'" + EVIL_COMPANY in {row[1] for row in rows[1:]}
    by_namespace = client.get("/api/v1/allocations", params={"period": "2026-10", "aggregate": "namespace",
                                                             "format": "csv"})
    rows = assert_spreadsheet_safe(by_namespace.text)
    assert {("'" + AT_SERVICE, "'" + CLUSTER, "ns"), ("'" + MINUS_SERVICE, "'" + CLUSTER, "ns2")} <= \
        {(row[1], row[2], row[3]) for row in rows[1:]}
    split = client.get("/api/v1/split", params={"period": "2026-10", "by": "workspace,apikey", "format": "csv"})
    assert split.status_code == 200
    rows = assert_spreadsheet_safe(split.text)
    cells = {cell for row in rows[1:] for cell in row}
    assert {"'=ws", "'+ws", "'@key", "'-key"} <= cells
    assert client.get("/api/v1/allocations", params={"period": "2026-10"}).json()["rows"][0]["company"] in {
        EVIL_COMPANY, PLUS_COMPANY, SCRIPT_COMPANY, ""}, "JSON carries the names unchanged"


@pytest.mark.parametrize("cell, written", [
    ("-12.50", "-12.50"), ("+3", "+3"), ("-0", "-0"), ("=1+2", "'=1+2"), ("-1+2", "'-1+2"), ("-", "'-"),
    ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\rx"), ("+", "'+"), ("-1e5", "'-1e5"), ("a=b", "a=b"), ("", ""),
])
def test_csv_safe(cell: str, written: str) -> None:
    assert csv_safe(cell) == written


MARKUP_NAMES = {"company": "[/a]", "service": "[bold]svc", "tag": "[/oops]", "cluster": ":fire:[red]"}


def test_names_that_look_like_console_markup_are_printed_as_written(tmp_path: Path, capsys: pytest.CaptureFixture):
    names = MARKUP_NAMES
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"companies": {names["company"]: 1, "b": 1},
                                     "services": {names["service"]: {names["company"]: 1}}}))
    bill = tmp_path / "bill.csv"
    bill.write_text("billingCycle,cz_container_bill,unblendedCost,currency\n"
                    f"2026-10,{names['tag']},10,USD\n2026-10,{names['service']},5,USD\n"
                    f"2026-10,cz_cluster_{names['cluster']},1,USD\n")
    store = ["--store", f"sqlite:///{tmp_path / 'runs.db'}"]
    out = tmp_path / "[b]report.csv"
    commands = [["allocate", "--bill", str(bill), "--rules", str(rules), "--period", "2026-10", "--out", str(out)],
                ["explain", "--period", "2026-10", "--company", ""],
                ["explain", "--period", "2026-10", "--company", names["company"]],
                ["allocate", "--bill", str(bill), "--rules", str(rules), "--period", "2026-10", "--out", str(out),
                 "--strict"]]
    for command in commands:
        assert main([*store, *command]) == 0, command
    printed = capsys.readouterr().out
    for name in (names["tag"], names["service"], names["company"], str(out), f"cz_cluster_{names['cluster']}"):
        assert name in printed, name
    assert main([*store, "explain", "--period", "2026-10", "--company", "[/nobody]"]) == 1
    assert "no cost for company '[/nobody]'; companies: , [/a]" in capsys.readouterr().err.replace("\n", "")
