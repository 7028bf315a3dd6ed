"""`cz-agent statement`: the HTML statement rendered in headless Chromium (a screenshot that is not blank, the
DOM it builds) shows the stored run's figures at the currency's precision, the month before and the change; the
page names categories and the cost basis in plain words, carries a statement number, the budget and the forecast;
hostile names from bills and rules stay inert in the HTML and the CSV."""

from __future__ import annotations

import csv
import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from agent.cli import main
from agent.core.model import StoredRun
from agent.outputs.statement import (MonthBudget, MonthEndForecast, PreviousMonth, StatementContext, build_statement,
                                     csv_safe, render_html, statement_number)
from agent.store.runs import list_runs, load_run, open_store
from tests.support.png import png_pixels

ROOT = Path(__file__).resolve().parents[2]
WORKED = ROOT / "tests" / "data" / "worked"
REAL = ROOT / "tests" / "data" / "bills" / "real"
# Where tests leave what a person looks at afterwards (git ignores out/).
ARTIFACTS = ROOT / "out" / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_CHROMIUM = ROOT / "scripts" / "install-chromium.sh"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The statement's words for the report's category codes, as this test expects them.
PLAIN_CATEGORIES = {"cluster": "Kubernetes cluster {cluster}", "service_common": "Shared service (common)",
                    "service_exclusive": "Service (exclusive)", "common": "Group common cost",
                    "idle": "Idle capacity (cluster {cluster})", "unallocated": "Unallocated"}
SCRIPT_COMPANY = "<script>alert('x')</script>"
FORMULA_COMPANY = '=HYPERLINK("http://evil.example","x")'
FORMULA_SERVICE = "=cmd|' /C calc'!A0"
AT_SERVICE = "@SUM(1+1)"
PLACES = {"USD": 2, "KRW": 0}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    # Texts and child elements, in document order.
    content: list[Node | str] = field(default_factory=list)

    @property
    def children(self) -> list[Node]:
        return [child for child in self.content if isinstance(child, Node)]

    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text() for child in self.content)

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
        self.stack[-1].content.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].content.append(data)


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


def screenshot(browser: Path, page: Path, profile: Path, png: Path) -> Path:
    """The page as Chromium draws it in a 1200x1600 window."""
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    subprocess.run([str(browser), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
                    "--window-size=1200,1600", page.as_uri()], capture_output=True, timeout=120, check=True)
    print(f"statement screenshot: {png}")
    return png


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
    """The test's own totals of the report's rows for one company: overall, per currency."""
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    with report.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["company"] == company:
                totals[(row["currency"], "Total")] += Decimal(row["amount"])
    return {"total": dict(totals)}


@dataclass
class Figure:
    """A statement line as the stored run has it: its report rows' rounded sum, their exact sum, how many."""

    rounded: Decimal = Decimal(0)
    exact: Fraction = Fraction(0)
    rows: int = 0


def line_labels(item) -> dict[str, str]:
    """The labels a report row or a contribution is summed under in the statement's two tables and its total."""
    return {"by-category": PLAIN_CATEGORIES[item.category].format(cluster=item.cluster),
            "by-service": item.service or ("(common pool)" if item.category == "common" else "(no service)"),
            "total": "Total"}


def run_figures(stored: StoredRun, company: str) -> dict[str, dict[tuple[str, str], Figure]]:
    """The stored run's figures for one company, by the statement's category lines, services, and overall."""
    figures: dict[str, dict[tuple[str, str], Figure]] = defaultdict(lambda: defaultdict(Figure))
    for row in stored.rows:
        if row.company == company:
            for table, label in line_labels(row).items():
                figure = figures[table][(row.currency, label)]
                figure.rounded += row.amount
                figure.rows += 1
    for piece in stored.contributions:
        if piece.company == company:
            for table, label in line_labels(piece).items():
                figures[table][(piece.currency, label)].exact += piece.amount
    return figures


def page_table(dom: Node, table_id: str) -> dict[tuple[str, str], str]:
    """(currency, label) -> the amount's text in a totals table of the page."""
    [table] = dom.find_all("table", id=table_id)
    shown = {}
    for row in table.find_all("tbody")[0].find_all("tr"):
        currency, label, amount = (cell.text().strip() for cell in row.children if cell.tag in ("td", "th"))
        shown[(currency, label)] = amount
    return shown


def amount_of(text: str, *, places: int) -> Decimal:
    """The amount a cell shows, checked to be written at `places` decimals with thousands separators."""
    assert re.fullmatch(r"-?\d{1,3}(,\d{3})*" + (rf"\.\d{{{places}}}" if places else ""), text), (text, places)
    return Decimal(text.replace(",", ""))


def check_main_figures(dom: Node, stored: StoredRun, company: str) -> None:
    """Every amount of the totals tables is the stored run's, at the currency's precision: the sum of its rounded
    report rows, within a minor unit per row of their exact sum; each table's rows add up to its total, which is
    the total due."""
    figures = run_figures(stored, company)
    for table in ("by-category", "by-service"):
        shown = page_table(dom, table)
        assert {key for key in shown if key[1] != "Total"} == set(figures[table])
        for (currency, label), text in shown.items():
            places = PLACES[currency]
            figure = figures["total" if label == "Total" else table][(currency, label)]
            amount = amount_of(text, places=places)
            assert amount == figure.rounded
            assert abs(Fraction(amount) - figure.exact) < Fraction(1, 10**places) * figure.rows
        for currency in {currency for currency, _ in shown}:
            parts = [amount_of(text, places=PLACES[c]) for (c, label), text in shown.items()
                     if c == currency and label != "Total"]
            assert sum(parts) == amount_of(shown[(currency, "Total")], places=PLACES[currency])
    due = {p.attrs["data-currency"]: p.find_all("span", class_="amount")[0].text()
           for p in dom.find_all("p", class_="total-due")}
    assert {currency: amount_of(text, places=PLACES[currency]) for currency, text in due.items()} == {
        currency: figure.rounded for (currency, _), figure in figures["total"].items()}


def check_month_before(dom: Node, stored: StoredRun, before: StoredRun, company: str) -> None:
    """The month before's total (its latest run), this month's and the change, in amount and in %."""
    now, then = run_figures(stored, company)["total"], run_figures(before, company)["total"]
    [table] = dom.find_all("table", id="previous-table")
    headings = [cell.text() for cell in table.find_all("th")]
    assert headings == ["currency", stored.summary.period, before.summary.period, "change", "change %"]
    shown = {}
    for row in table.find_all("tbody")[0].find_all("tr"):
        currency, this_month, month_before, change, percent = (cell.text() for cell in row.find_all("td"))
        places = PLACES[currency]
        shown[currency] = (amount_of(this_month, places=places), amount_of(month_before, places=places),
                           amount_of(change.removeprefix("+"), places=places), percent)
    expected = {}
    for currency in {currency for currency, _ in now} | {currency for currency, _ in then}:
        current, previous = now[(currency, "Total")].rounded, then[(currency, "Total")].rounded
        change = current - previous
        percent = (change / previous * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
        expected[currency] = (current, previous, change, f"{percent:+f}%")
    assert shown == expected
    assert f"run {before.summary.id}, the latest of {before.summary.period}" in dom.find_all(id="summary")[0].text()


def odd_cent_bill(tmp_path: Path, period: str, amounts: tuple[str, ...]) -> Path:
    """The worked example's tag values with amounts of three decimals: the rounding of every share matters."""
    bill = tmp_path / f"bill-{period}.csv"
    tags = ("cz_cluster_prod", "cz_cluster_prod", "cz_common_subcom", "mobile", "")
    bill.write_text("billingCycle,cz_container_bill,unblendedCost,currency\n"
                    + "".join(f"{period},{tag},{amount},USD\n" for tag, amount in zip(tags, amounts, strict=True)))
    return bill


def two_months(store: str, tmp_path: Path) -> tuple[StoredRun, StoredRun]:
    """September then October of odd-cent bills, allocated with the worked example's rules and usage."""
    for period, amounts in (("2026-09", ("512.347", "377.125", "288.004", "190.333", "97.777")),
                            ("2026-10", ("600.333", "400.101", "300.005", "200.017", "100.019"))):
        allocate(store, tmp_path, bill=odd_cent_bill(tmp_path, period, amounts), rules=WORKED / "rules.yaml",
                 usage=WORKED / "usage.csv", period=period)
    engine = open_store(store)
    september, october = (load_run(engine, run.id) for run in list_runs(engine))
    return september, october


def statement(store: str, tmp_path: Path, company: str, *extra: str, period: str = "2026-10") -> Path:
    out = tmp_path / "statement.html"
    assert main(["--store", store, "statement", "--period", period, "--company", company, "--out", str(out),
                 *extra]) == 0
    return out


# A real Chromium (scripts/install-chromium.sh, run by make infra) renders the page.
@pytest.mark.integration
def test_statement_rendered_in_chromium_shows_the_stored_figures_and_the_month_before(store, tmp_path, chromium):
    september, october = two_months(store, tmp_path)
    for company in ("alpha", "beta", "gamma"):
        page = statement(store, tmp_path, company)
        png = screenshot(chromium, page, tmp_path / "profile", ARTIFACTS / f"statement-{company}.png")
        pixels = png_pixels(png)[..., :3].astype(float)
        assert pixels.shape == (1600, 1200, 3)
        # Not blank: text, table rules and chart bars vary the pixels, top and bottom of the window.
        assert pixels.var() > 100 and pixels[:400].var() > 100 and pixels[1200:].var() > 10
        dom = rendered_dom(chromium, page, tmp_path / "profile")
        check_main_figures(dom, october, company)
        check_month_before(dom, october, september, company)
        assert dom.find_all(id="statement-number")[0].text() == f"CZ-2026-10-{company}-{october.summary.id}"
        assert dom.find_all(id="company")[0].text() == company
        assert len(dom.find_all("svg")) == 2 and not dom.find_all("script")
    # The open month's budget and forecast, as the lead's sources will give them.
    context = StatementContext(previous=PreviousMonth.of(september, company="alpha"),
                               budget=MonthBudget(amount=Decimal("700"), currency="USD"),
                               forecast=MonthEndForecast(expected=Decimal("812.3456"), lower=Decimal("780.004"),
                                                         upper=Decimal("851.995"), currency="USD"))
    page = tmp_path / "statement-budget.html"
    page.write_text(render_html(build_statement(october, company="alpha", context=context)))
    png = screenshot(chromium, page, tmp_path / "profile", ARTIFACTS / "statement-alpha-budget.png")
    assert png_pixels(png)[..., :3].astype(float)[:400].var() > 100
    dom = rendered_dom(chromium, page, tmp_path / "profile")
    check_main_figures(dom, october, "alpha")
    check_month_before(dom, october, september, "alpha")
    assert dom.find_all(id="budget-line")[0].text().endswith(
        "forecast month end 812.35 USD (780.00–852.00), 112.35 USD over the budget")


def test_the_page_shows_the_stored_figures_and_the_month_before(store, tmp_path):
    september, october = two_months(store, tmp_path)
    for company in ("alpha", "beta", "gamma"):
        dom = parse(statement(store, tmp_path, company).read_text())
        check_main_figures(dom, october, company)
        check_month_before(dom, october, september, company)


def test_amounts_at_each_currencys_precision(store, tmp_path):
    bill = tmp_path / "bill.csv"
    bill.write_text("billingCycle,cz_container_bill,unblendedCost,currency\n2026-10,,1000,KRW\n2026-10,,0.015,USD\n"
                    "2026-10,,0.015,USD\n2026-10,,1234567.891,USD\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("companies: {a: 1, b: 2}\n")
    allocate(store, tmp_path, bill=bill, rules=rules)
    stored = load_run(open_store(store), 1)
    for company in ("a", "b"):
        dom = parse(statement(store, tmp_path, company).read_text())
        check_main_figures(dom, stored, company)
        # The exact figures are in the appendix only: a's third and b's two thirds of the USD bill.
        exact = {row.find_all("td")[0].text(): row.find_all("td")[2].text()
                 for row in dom.find_all("table", id="exact-table")[0].find_all("tbody")[0].find_all("tr")}
        share = Fraction(Decimal("1234567.921")) * Fraction({"a": 1, "b": 2}[company], 3)
        assert exact["USD"] == f"{Decimal(share.numerator) / Decimal(share.denominator):,.6f}"


def test_plain_category_names_cost_basis_and_statement_number(store, tmp_path):
    allocate(store, tmp_path, bill=WORKED / "bill.csv", rules=WORKED / "rules.yaml", usage=WORKED / "usage.csv")
    dom = parse(statement(store, tmp_path, "alpha").read_text())
    assert {label for _, label in page_table(dom, "by-category")} == {
        "Kubernetes cluster prod", "Shared service (common)", "Service (exclusive)", "Group common cost", "Total"}
    main_text = " ".join(dom.find_all("section", id=name)[0].text()
                         for name in ("summary", "categories", "services", "namespaces", "reconciliation"))
    for code in ("service_common", "service_exclusive", "cz_cluster_prod", "cz_common_subcom", ".000000"):
        assert code not in main_text
    assert {row.find_all("td")[4].text() for row in dom.find_all("table", id="namespaces-table")[0]
            .find_all("tbody")[0].find_all("tr")} == {"Kubernetes cluster", "Group common cost"}
    assert dom.find_all(id="cost-basis")[0].text() == \
        "Costs are the bill's unblendedCost (unblended: each line at its own rate, as invoiced)."
    assert dom.find_all(id="statement-number")[0].text() == "CZ-2026-10-alpha-1"
    # The same run and company: the same number; a later run of the month, another.
    allocate(store, tmp_path, bill=WORKED / "bill.csv", rules=WORKED / "rules.yaml")
    assert parse(statement(store, tmp_path, "alpha", "--run", "1").read_text()).find_all(
        id="statement-number")[0].text() == "CZ-2026-10-alpha-1"
    assert parse(statement(store, tmp_path, "alpha").read_text()).find_all(
        id="statement-number")[0].text() == "CZ-2026-10-alpha-2"


@pytest.mark.parametrize(("options", "column", "words"), [
    ((), "EffectiveCost", "amortised: after discounts, with commitment purchases spread over the usage they cover"),
    (("--cost-column", "billedcost"), "BilledCost",
     "as invoiced: after discounts, with commitment purchases in the month they were bought"),
])
def test_the_cost_basis_is_the_bills_cost_column(store, tmp_path, options, column, words):
    rules = tmp_path / "rules.yaml"
    rules.write_text("companies: {a: 2, b: 1}\n")
    assert main(["--store", store, "allocate", "--bill", str(REAL / "focus-1.0-sample.csv"), "--rules", str(rules),
                 "--period", "2024-09", "--out", str(tmp_path / "report.csv"), *options]) == 0
    dom = parse(statement(store, tmp_path, "a", period="2024-09").read_text())
    assert dom.find_all(id="cost-basis")[0].text() == f"Costs are the bill's {column} ({words})."
    [bill] = dom.find_all("table", id="bills-table")[0].find_all("tbody")[0].find_all("tr")
    assert bill.find_all("td")[2].text() == column


def test_statement_numbers_are_slugs_that_two_companies_never_share():
    numbers = {company: statement_number(period="2026-10", company=company, run_id=7)
               for company in ("acme", "Acme", "ACME", "acme inc", "acme-inc", SCRIPT_COMPANY, "株式会社", "日本")}
    assert numbers["acme"] == "CZ-2026-10-acme-7" and numbers["acme-inc"] == "CZ-2026-10-acme-inc-7"
    assert len(set(numbers.values())) == len(numbers)
    assert all(re.fullmatch(r"CZ-2026-10-[a-z0-9]+(-[a-z0-9]+)*-7", number) for number in numbers.values())
    assert numbers["Acme"].startswith("CZ-2026-10-acme-") and numbers[SCRIPT_COMPANY].startswith(
        "CZ-2026-10-script-alert-x-script-")
    assert numbers == {company: statement_number(period="2026-10", company=company, run_id=7) for company in numbers}


def test_budget_and_forecast_lines_when_given(store, tmp_path):
    allocate(store, tmp_path, bill=WORKED / "bill.csv", rules=WORKED / "rules.yaml", usage=WORKED / "usage.csv")
    stored = load_run(open_store(store), 1)
    total = sum(row.amount for row in stored.rows if row.company == "alpha")
    budget = MonthBudget(amount=Decimal("20000"), currency="USD")
    forecast = MonthEndForecast(expected=Decimal("21900.004"), lower=Decimal("20799.995"), upper=Decimal("23100.5"),
                                currency="USD")

    def line(context: StatementContext) -> str | None:
        found = parse(render_html(build_statement(stored, company="alpha", context=context))).find_all(
            id="budget-line")
        return found[0].text() if found else None

    used = (total / budget.amount * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    assert line(StatementContext(budget=budget, forecast=forecast)) == (
        f"Budget 20,000.00 USD; this statement {total:,.2f} USD ({used}% of the budget); forecast month end "
        "21,900.00 USD (20,800.00–23,100.50), 1,900.00 USD over the budget")
    assert line(StatementContext(forecast=forecast)) == "Forecast month end 21,900.00 USD (20,800.00–23,100.50)"
    under = replace(forecast, expected=Decimal("19999.994"))
    assert line(StatementContext(budget=budget, forecast=under)).endswith(
        "forecast month end 19,999.99 USD (20,800.00–23,100.50), 0.01 USD within the budget")
    # A budget in a currency the statement has no cost in: the budget alone, at that currency's precision.
    assert line(StatementContext(budget=MonthBudget(amount=Decimal("2500000"), currency="KRW"))) == \
        "Budget 2,500,000 KRW"
    assert line(StatementContext()) is None


def carrying_of(store: str, tmp_path: Path, rules_text: str, *, company: str = "alpha", idle: int = 0) -> str:
    """The sentence on who carries unattributable cost, for the worked example with rules added, an unknown service
    legacy-crm of 7.50 and `idle` byte-seconds of idle capacity in cluster prod."""
    rules = tmp_path / "rules.yaml"
    rules.write_text((WORKED / "rules.yaml").read_text() + rules_text)
    bill = tmp_path / "bill.csv"
    bill.write_text((WORKED / "bill.csv").read_text() + "2026-10,ops,ws-prod,,legacy-crm,7.5,USD\n")
    usage = tmp_path / "usage-idle.csv"
    usage.write_text((WORKED / "usage.csv").read_text() + (f"prod,__idle__,,{idle}\n" if idle else ""))
    allocate(store, tmp_path, bill=bill, rules=rules, usage=usage)
    return parse(statement(store, tmp_path, company).read_text()).find_all(id="carrying")[0].text()


def test_who_carries_unattributable_cost_by_default(store, tmp_path):
    assert carrying_of(store, tmp_path, "") == (
        "Cost the rules cannot attribute (an unknown service or group, a cluster without usage) is charged to no "
        "company: it stays with the payer of the bill until the rules attribute it; this month's unallocated cost: "
        "7.50 USD.")


def test_who_carries_unattributable_cost_in_the_common_pool(store, tmp_path):
    # legacy-crm's 7.50 joined the common pool; the idle capacity (2 of prod's 12 byte-seconds) went to no company.
    sentence = carrying_of(store, tmp_path, "unattributable: common\nidle: unallocated\n", company="beta", idle=2)
    rows = load_run(open_store(store), 1).rows
    assert {row.category for row in rows if not row.company} == {"idle"}
    idle = sum(row.amount for row in rows if not row.company)
    assert abs(idle - Decimal(1000) * 2 / 12) < Decimal("0.01")
    assert sentence == (
        "Cost the rules cannot attribute (an unknown service or group, a cluster without usage) joins the common "
        "pool, which the companies share by their weights (beta: 30%); the clusters' idle capacity is charged to no "
        f"company; this month's unallocated cost: {idle} USD.")


def test_a_run_from_before_the_cost_basis_was_recorded_says_so(store, tmp_path):
    allocate(store, tmp_path, bill=WORKED / "bill.csv", rules=WORKED / "rules.yaml")
    stored = load_run(open_store(store), 1)
    manifest = stored.summary.manifest
    older = replace(manifest, carrying=None, bills=tuple(replace(bill, cost_column=None) for bill in manifest.bills))
    dom = parse(render_html(build_statement(replace(stored, summary=replace(stored.summary, manifest=older)),
                                            company="alpha")))
    assert "does not record which column of the bill" in dom.find_all(id="cost-basis")[0].text()
    assert "does not record how its rules carried" in dom.find_all(id="carrying")[0].text()
    assert dom.find_all("table", id="bills-table")[0].find_all("td")[2].text() == "not recorded"


def test_without_a_run_of_the_month_before_there_is_nothing_to_compare(store, tmp_path):
    allocate(store, tmp_path, bill=WORKED / "bill.csv", rules=WORKED / "rules.yaml")
    dom = parse(statement(store, tmp_path, "alpha").read_text())
    assert not dom.find_all("table", id="previous-table")
    assert dom.find_all(id="no-previous")[0].text() == "No run of 2026-09 is stored: nothing to compare with."


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
    assert ratios[("cz_common_subcom", "Shared service (common)")][5:8] == ["50%", "70%", "105.000000"]
    assert ratios[("(untagged)", "Group common cost")][5:8] == ["100%", "50%", "50.000000"]
    assert "equal split of group subcom" in ratios[("cz_common_subcom", "Shared service (common)")][8]
    [reconciliation] = dom.find_all("table", id="reconciliation-table")[0].find_all("tbody")[0].find_all("tr")
    assert [cell.text() for cell in reconciliation.find_all("td")] == [
        "USD", "765.00", "1,600.00", "1,600.00", "0.00", "bill = allocated + unallocated"]
    [exact] = dom.find_all("table", id="exact-table")[0].find_all("tbody")[0].find_all("tr")
    assert [cell.text() for cell in exact.find_all("td")] == ["USD", "1,600", "765.000000", "765.00"]
    audit = {row.find_all("th")[0].text(): row.find_all("td")[0].text()
             for row in dom.find_all("table", id="audit-table")[0].find_all("tr")}
    assert audit["run id"] == "1" and audit["period"] == "2026-10"
    assert audit["statement number"] == "CZ-2026-10-alpha-1"
    assert len(audit["rules digest (sha256)"]) == 64 and len(audit["usage digest (sha256)"]) == 64
    [bill_row] = dom.find_all("table", id="bills-table")[0].find_all("tbody")[0].find_all("tr")
    assert [cell.text() for cell in bill_row.find_all("td")][1:3] == ["native", "unblendedCost"]
    assert bill_row.find_all("td")[0].text().endswith("bill.csv") and len(bill_row.find_all("td")[4].text()) == 64


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
    assert on_page == sorted([r["currency"], r["cluster"], r["namespace"],
                              PLAIN_CATEGORIES[r["category"]].format(cluster="").strip(), r["amount"]]
                             for r in rows if r["namespace"])
    assert ["USD", "prod", "payments-legacy", "payments", "Kubernetes cluster"] == next(
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
    assert [by_service[("USD", service)] for service in (FORMULA_SERVICE, AT_SERVICE, "mobile", "Total")] == [
        "100.00", "25.00", "-30.00", "101.00"]
    check_main_figures(dom, load_run(open_store(store), 1), SCRIPT_COMPANY)
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
