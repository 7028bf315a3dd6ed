"""`cz-agent statement`: the HTML statement rendered in headless Chromium shows the report's figures, and
hostile names from bills and rules stay inert in the HTML and the CSV."""

from __future__ import annotations

import csv
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from agent.cli import main
from agent.outputs.statement import csv_safe

ROOT = Path(__file__).resolve().parents[2]
WORKED = ROOT / "tests" / "data" / "worked"
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_CHROMIUM = ROOT / "scripts" / "install-chromium.sh"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCRIPT_COMPANY = "<script>alert('x')</script>"
FORMULA_COMPANY = '=HYPERLINK("http://evil.example","x")'
FORMULA_SERVICE = "=cmd|' /C calc'!A0"
AT_SERVICE = "@SUM(1+1)"
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.texts) + "".join(child.text() for child in self.children)

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        found = [self] if (tag in (None, self.tag) and all(
            value in self.attrs.get(name.rstrip("_"), "").split() or self.attrs.get(name.rstrip("_")) == value
            for name, value in attrs.items())) else []
        for child in self.children:
            found += child.find_all(tag, **attrs)
        return found


class TreeBuilder(HTMLParser):
    """Just enough of a DOM to read tables and texts back from the page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].texts.append(data)


def parse(page: str) -> Node:
    builder = TreeBuilder()
    builder.feed(page)
    return builder.root


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, installed by the project's script the first time it is missing."""
    if not CHROMIUM.exists():
        subprocess.run([str(INSTALL_CHROMIUM)], check=True, timeout=900)
    assert CHROMIUM.exists()
    return CHROMIUM


def rendered_dom(browser: Path, page: Path, profile: Path) -> Node:
    """The DOM Chromium builds from the page (`--dump-dom`), parsed back."""
    done = subprocess.run([str(browser), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=True)
    assert "<body" in done.stdout
    return parse(done.stdout)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def allocate(store: str, tmp_path: Path, *, bill: Path, rules: Path, usage: Path | None = None,
             period: str = "2026-10") -> Path:
    report = tmp_path / f"report-{period}.csv"
    extra = ["--usage", str(usage)] if usage else ["--usage", str(empty_usage(tmp_path))]
    assert main(["--store", store, "allocate", "--bill", str(bill), "--rules", str(rules), "--period", period,
                 "--out", str(report), *extra]) == 0
    return report


def empty_usage(tmp_path: Path) -> Path:
    usage = tmp_path / "usage.csv"
    usage.write_text("cluster,namespace,service,memory_byte_seconds\n")
    return usage


def company_figures(report: Path, company: str) -> dict[str, dict[tuple[str, str], Decimal]]:
    """The test's own totals of the report's rows for one company: by category, by service, overall."""
    figures: dict[str, dict[tuple[str, str], Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    with report.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["company"] != company:
                continue
            amount = Decimal(row["amount"])
            label = row["service"] or ("(common pool)" if row["category"] == "common" else "(no service)")
            figures["category"][(row["currency"], row["category"])] += amount
            figures["service"][(row["currency"], label)] += amount
            figures["total"][(row["currency"], "Total")] += amount
    return {name: dict(values) for name, values in figures.items()}


def page_table(dom: Node, table_id: str) -> dict[tuple[str, str], Decimal]:
    """(currency, label) -> amount of a totals table as the page shows it (thousands separators removed)."""
    [table] = dom.find_all("table", id=table_id)
    shown = {}
    for row in table.find_all("tbody")[0].find_all("tr"):
        currency, label, amount = (cell.text().strip() for cell in row.children if cell.tag in ("td", "th"))
        shown[(currency, label)] = Decimal(amount.replace(",", ""))
    return shown


def statement(store: str, tmp_path: Path, company: str, *extra: str, period: str = "2026-10") -> Path:
    out = tmp_path / "statement.html"
    assert main(["--store", store, "statement", "--period", period, "--company", company, "--out", str(out),
                 *extra]) == 0
    return out


# A real Chromium (scripts/install-chromium.sh, run by make infra) renders the page.
@pytest.mark.integration
def test_statement_rendered_in_chromium_shows_the_report_figures(store, tmp_path, chromium):
    report = allocate(store, tmp_path, bill=WORKED / "bill.csv", rules=WORKED / "rules.yaml",
                      usage=WORKED / "usage.csv")
    for company in ("alpha", "beta", "gamma"):
        page = statement(store, tmp_path, company)
        dom = rendered_dom(chromium, page, tmp_path / "profile")
        expected = company_figures(report, company)
        by_category = page_table(dom, "by-category")
        by_service = page_table(dom, "by-service")
        assert {k: v for k, v in by_category.items() if k[1] != "Total"} == expected["category"]
        assert {k: v for k, v in by_service.items() if k[1] != "Total"} == expected["service"]
        assert by_category[("USD", "Total")] == by_service[("USD", "Total")] == expected["total"][("USD", "Total")]
        [due] = dom.find_all("p", class_="total-due")
        assert Decimal(due.find_all("span", class_="amount")[0].text().replace(",", "")) == \
            expected["total"][("USD", "Total")]
        assert dom.find_all(id="company")[0].text() == company
        assert len(dom.find_all("svg")) == 2 and not dom.find_all("script")
    # The worked example of DESIGN section 5, as the page shows it.
    assert expected["total"] == {("USD", "Total"): Decimal("490.00")}


def test_statement_explains_shares_ratios_reconciliation_and_audit(store, tmp_path):
    allocate(store, tmp_path, bill=WORKED / "bill.csv", rules=WORKED / "rules.yaml", usage=WORKED / "usage.csv")
    dom = parse(statement(store, tmp_path, "alpha").read_text())
    shares = [[cell.text() for cell in row.find_all("td")] for row in dom.find_all("table", id="memory-shares-table")[0]
              .find_all("tbody")[0].find_all("tr")]
    assert shares == [
        ["USD", "prod", "mobile-api", "mobile", "1,000", "60%", "70%", "420.000000"],
        ["USD", "prod", "kube-system", "(common pool)", "1,000", "10%", "50%", "50.000000"],
    ]
    ratios = {(cells[1], cells[3]): cells for row in dom.find_all("table", id="ratios-table")[0].find_all("tbody")[0]
              .find_all("tr") for cells in [[cell.text() for cell in row.find_all("td")]]}
    assert ratios[("cz_common_subcom", "service_common")][5:8] == ["50%", "70%", "105.000000"]
    assert ratios[("(untagged)", "common")][5:8] == ["100%", "50%", "50.000000"]
    assert "equal split of group subcom" in ratios[("cz_common_subcom", "service_common")][8]
    [reconciliation] = dom.find_all("table", id="reconciliation-table")[0].find_all("tbody")[0].find_all("tr")
    assert [cell.text() for cell in reconciliation.find_all("td")] == [
        "USD", "765.00", "1,600", "1,600.00", "1,600.00", "0.00", "bill = allocated + unallocated"]
    audit = {row.find_all("th")[0].text(): row.find_all("td")[0].text()
             for row in dom.find_all("table", id="audit-table")[0].find_all("tr")}
    assert audit["run id"] == "1" and audit["period"] == "2026-10"
    assert len(audit["rules digest (sha256)"]) == 64 and len(audit["usage digest (sha256)"]) == 64
    [bill_row] = dom.find_all("table", id="bills-table")[0].find_all("tbody")[0].find_all("tr")
    assert bill_row.find_all("td")[0].text().endswith("bill.csv") and len(bill_row.find_all("td")[3].text()) == 64


def test_statement_csv_beside_the_html_adds_up_to_the_company_total(store, tmp_path):
    report = allocate(store, tmp_path, bill=WORKED / "bill.csv", rules=WORKED / "rules.yaml",
                      usage=WORKED / "usage.csv")
    statement(store, tmp_path, "beta")
    with (tmp_path / "statement.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["run_id", "period", "company", "service", "category", "cluster", "namespace", "amount",
                             "currency"]
    assert {row["company"] for row in rows} == {"beta"}
    assert {(row["category"], row["cluster"], row["namespace"]): row["amount"] for row in rows if row["namespace"]} == {
        ("cluster", "prod", "mobile-api"): "180.00", ("common", "prod", "kube-system"): "30.00"}
    assert sum(Decimal(row["amount"]) for row in rows) == company_figures(report, "beta")["total"][("USD", "Total")]
    assert sum(Decimal(row["amount"]) for row in rows) == Decimal("345.00")


def test_statement_lists_the_cluster_cost_per_namespace_adding_up_to_each_row(store, tmp_path):
    demo = ROOT / "demo"
    report = allocate(store, tmp_path, bill=demo / "bill-2026-10.csv", rules=demo / "rules.yaml",
                      usage=demo / "usage-2026-10.csv")
    dom = parse(statement(store, tmp_path, "acme").read_text())
    shown = [[cell.text() for cell in row.find_all("td")] for row in dom.find_all("table", id="namespaces-table")[0]
             .find_all("tbody")[0].find_all("tr")]
    with (tmp_path / "statement.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    # The page lists the CSV's rows that have a namespace.
    on_page = sorted([cells[0], cells[1], cells[2], cells[4], cells[6].replace(",", "")] for cells in shown)
    assert on_page == sorted([r["currency"], r["cluster"], r["namespace"], r["category"], r["amount"]]
                             for r in rows if r["namespace"])
    assert ["USD", "prod", "payments-legacy", "payments", "cluster"] == next(
        cells[:5] for cells in shown if cells[2] == "payments-legacy")
    summed: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    for row in rows:
        summed[(row["service"], row["category"], row["cluster"], row["currency"])] += Decimal(row["amount"])
    with report.open(newline="") as handle:
        assert summed == {(r["service"], r["category"], r["cluster"], r["currency"]): Decimal(r["amount"])
                          for r in csv.DictReader(handle) if r["company"] == "acme"}


def test_csv_option_and_run_option(store, tmp_path, capsys):
    allocate(store, tmp_path, bill=WORKED / "bill.csv", rules=WORKED / "rules.yaml")
    allocate(store, tmp_path, bill=WORKED / "bill.csv", rules=WORKED / "rules.yaml", usage=WORKED / "usage.csv")
    rows_csv = tmp_path / "rows" / "gamma.csv"
    page = statement(store, tmp_path, "gamma", "--run", "1", "--csv", str(rows_csv))
    assert "run 1" in capsys.readouterr().out
    # Run 1 had no usage: gamma paid only its common share and the mcmp half of subcom.
    with rows_csv.open(newline="") as handle:
        assert sum(Decimal(row["amount"]) for row in csv.DictReader(handle)) == Decimal("170.00")
    assert parse(page.read_text()).find_all(id="run-id")[0].text() == "1"


def test_unknown_company_and_run_of_another_period_are_errors(store, tmp_path, capsys):
    allocate(store, tmp_path, bill=WORKED / "bill.csv", rules=WORKED / "rules.yaml")
    out = tmp_path / "s.html"
    assert main(["--store", store, "statement", "--period", "2026-10", "--company", "omega", "--out", str(out)]) == 1
    assert "no cost for company 'omega'; companies: alpha, beta, gamma" in capsys.readouterr().err
    assert main(["--store", store, "statement", "--period", "2026-09", "--company", "alpha", "--run", "1",
                 "--out", str(out)]) == 1
    assert "run 1 is of period 2026-10, not 2026-09" in capsys.readouterr().err
    assert main(["--store", store, "statement", "--period", "2026-09", "--company", "alpha", "--out", str(out)]) == 1
    assert "no stored run for period 2026-09" in capsys.readouterr().err
    assert not out.exists()


def hostile_inputs(tmp_path: Path) -> tuple[Path, Path]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({
        "companies": {SCRIPT_COMPANY: 60, FORMULA_COMPANY: 40},
        "services": {FORMULA_SERVICE: {SCRIPT_COMPANY: 1}, AT_SERVICE: {SCRIPT_COMPANY: 1, FORMULA_COMPANY: 1},
                     "mobile": {SCRIPT_COMPANY: 1}},
    }))
    bill = tmp_path / "bill.csv"
    with bill.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["billingCycle", "loginName", "unblendedCost", "currency", "cz_container_bill"])
        writer.writerows([["2026-10", "a", "100", "USD", FORMULA_SERVICE], ["2026-10", "a", "50", "USD", AT_SERVICE],
                          ["2026-10", "a", "-30", "USD", "mobile"], ["2026-10", "a", "10", "USD", ""]])
    return bill, rules


# A real Chromium renders the page.
@pytest.mark.integration
def test_hostile_names_are_escaped_in_the_html_and_inert_in_the_browser(store, tmp_path, chromium):
    bill, rules = hostile_inputs(tmp_path)
    allocate(store, tmp_path, bill=bill, rules=rules)
    page = statement(store, tmp_path, SCRIPT_COMPANY)
    source = page.read_text()
    assert "<script" not in source.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in source
    dom = rendered_dom(chromium, page, tmp_path / "profile")
    assert not dom.find_all("script")
    assert dom.find_all(id="company")[0].text() == SCRIPT_COMPANY
    by_service = page_table(dom, "by-service")
    assert by_service[("USD", FORMULA_SERVICE)] == Decimal("100.00")
    assert by_service[("USD", AT_SERVICE)] == Decimal("25.00")
    assert by_service[("USD", "mobile")] == Decimal("-30.00")
    assert by_service[("USD", "Total")] == Decimal("101.00")
    chart_labels = [text.text() for svg in dom.find_all("svg") for text in svg.find_all("text")]
    assert FORMULA_SERVICE in chart_labels and "-30.00 USD" in chart_labels


def test_hostile_names_are_neutralised_in_the_csv(store, tmp_path):
    bill, rules = hostile_inputs(tmp_path)
    allocate(store, tmp_path, bill=bill, rules=rules)
    statement(store, tmp_path, SCRIPT_COMPANY)
    with (tmp_path / "statement.csv").open(newline="") as handle:
        cells = {(row["service"], row["category"]): row for row in csv.DictReader(handle)}
    assert cells[("'" + FORMULA_SERVICE, "service_exclusive")]["amount"] == "100.00"
    assert cells[("'" + AT_SERVICE, "service_exclusive")]["company"] == SCRIPT_COMPANY
    # A negative amount is a plain number, not a formula: it is kept as it is.
    assert cells[("mobile", "service_exclusive")]["amount"] == "-30.00"
    statement(store, tmp_path, FORMULA_COMPANY)
    with (tmp_path / "statement.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["company"] for row in rows} == {"'" + FORMULA_COMPANY}
    assert sum(Decimal(row["amount"]) for row in rows) == Decimal("29.00")


@pytest.mark.parametrize(("cell", "written"), [
    ("=1+2", "'=1+2"), ("+cmd", "'+cmd"), ("-x", "'-x"), ("@SUM(A1)", "'@SUM(A1)"), ("\tcmd", "'\tcmd"),
    ("\r=1", "'\r=1"), ("-12.50", "-12.50"), ("+3", "+3"), ("42", "42"), ("-1e5", "'-1e5"), ("", ""),
    ("mobile", "mobile"), ("a=b", "a=b"),
])
def test_csv_cells_that_a_spreadsheet_would_evaluate_get_an_apostrophe(cell, written):
    assert csv_safe(cell) == written
