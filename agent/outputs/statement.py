"""A company's chargeback statement for a period, from a stored run: an HTML page to send, and its CSV rows.

The page is written for a finance reader: plain category names, amounts at the currency's precision (the exact
figures in an appendix), the cost basis, a statement number, the month before, the budget and the forecast. It is
self-contained (inline CSS and SVG chart, no script, no external resource) and every value from the bills or the
rules is HTML-escaped. The CSV keeps the report's codes; cells that a spreadsheet would run as a formula are
neutralised with a leading apostrophe.
"""

from __future__ import annotations

import functools
import hashlib
import html
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from pathlib import Path
from string import Template

from agent import __version__
from agent.core.allocation import CLUSTER_PREFIX, COMMON_PREFIX
from agent.core.manifest import BillInput, CostCarrying, CurrencyTotals
from agent.core.model import CATEGORIES, Contribution, NamespaceRow, ReportRow, StoredRun, TagLine
from agent.core.money import minor_unit, round_amount
from agent.core.namespaces import namespace_rows
from agent.core.periods import Period
from agent.core.rules import Budgets
from agent.errors import StatementError
from agent.outputs.explain import service_label
from agent.outputs.forecast import period_forecast
# csv_safe is re-exported: statements are where users meet formula-looking names.
from agent.outputs.report import csv_safe as csv_safe
from agent.outputs.report import render_csv, write_atomically

CSV_COLUMNS = ("run_id", "period", "company", "service", "category", "cluster", "namespace", "amount", "currency")
_EXACT_PLACES = 6
_SHARE_PLACES = 4
_CHANGE_PLACES = 1
_CHART_LABEL_CHARS = 28
# The statement's names of the report's categories; the CSV and the API keep the codes.
CATEGORY_NAMES = {
    "cluster": "Kubernetes cluster",
    "service_common": "Shared service (common)",
    "service_exclusive": "Service (exclusive)",
    "common": "Group common cost",
    "idle": "Idle capacity",
    "unallocated": "Unallocated",
}
# What a bill's cost column holds, by its name folded to lower case: the columns the formats read (agent.bills
# specs, and their overrides) and FOCUS's other cost columns.
_UNBLENDED = "unblended: each line at its own rate, as invoiced"
_BLENDED = "blended: each line at the rate averaged over the organisation's accounts"
COST_BASES = {
    "effectivecost": "amortised: after discounts, with commitment purchases spread over the usage they cover",
    "billedcost": "as invoiced: after discounts, with commitment purchases in the month they were bought",
    "listcost": "at list prices, before any discount",
    "contractedcost": "at the contracted unit prices",
    "unblendedcost": _UNBLENDED,
    "lineitem/unblendedcost": _UNBLENDED,
    "line_item_unblended_cost": _UNBLENDED,
    "lineitem/blendedcost": _BLENDED,
    "line_item_blended_cost": _BLENDED,
    "lineitem/netunblendedcost": "unblended, after discounts",
    "line_item_net_unblended_cost": "unblended, after discounts",
    "costinbillingcurrency": "in the billing currency, before credits and taxes",
}


@dataclass(frozen=True)
class Total:
    label: str
    currency: str
    amount: Decimal


@dataclass(frozen=True)
class MemoryShare:
    """One namespace's part of a cluster line that reached the company."""

    currency: str
    cluster: str
    namespace: str
    service: str
    cluster_cost: Decimal
    namespace_share: Fraction
    company_share: Fraction
    amount: Fraction


@dataclass(frozen=True)
class AppliedRatio:
    """The bill lines of one tag value (or attribution rule), the share that went to one service or the
    common pool, and the company's share of that."""

    currency: str
    tag: str
    rule: str
    category: str
    service: str
    cluster: str
    # Why the lines could not go where their tag points, when they joined the common pool instead.
    reason: str
    line_amount: Decimal
    line_share: Fraction
    company_share: Fraction
    amount: Fraction


@dataclass(frozen=True)
class Reconciliation:
    """The company's total beside its run's reconciliation of the currency."""

    currency: str
    company_total: Decimal
    run: CurrencyTotals


@dataclass(frozen=True)
class PreviousMonth:
    """The company's total per currency in the latest run of the month before (no entry where it had no cost)."""

    period: str
    run_id: int
    totals: dict[str, Decimal]

    @classmethod
    def of(cls, stored: StoredRun, *, company: str) -> PreviousMonth:
        return cls(period=stored.summary.period, run_id=stored.summary.id,
                   totals=_currency_totals(row for row in stored.rows if row.company == company))


@dataclass(frozen=True)
class MonthBudget:
    """The company's budget for the statement's month."""

    amount: Decimal
    currency: str


@dataclass(frozen=True)
class MonthEndForecast:
    """The company's expected total at the end of the open month and its range: exact, unrounded."""

    expected: Decimal
    lower: Decimal
    upper: Decimal
    currency: str


@dataclass(frozen=True)
class StatementContext:
    """What the statement shows beside its run; each None when there is none: the latest run of the month before,
    the budget, the month-end forecast."""

    previous: PreviousMonth | None = None
    budget: MonthBudget | None = None
    forecast: MonthEndForecast | None = None


def statement_context(stored: StoredRun, *, company: str, latest: Callable[[str], StoredRun | None], today: date,
                      budgets: Budgets = Budgets()) -> StatementContext:
    """The statement's context: the latest run of the month before (`latest` gives a period's latest run), the
    company's budget, and, when the run is the latest of the month `today` is in, its month-end forecast (in the
    budget's currency, else in the company's only currency)."""
    # The month before and the current month are read again by the forecast: each period's run is loaded once.
    latest = functools.cache(latest)
    period = Period.parse(stored.summary.period)
    before = latest(str(period.previous()))
    budget = budgets.companies.get(company)
    month_budget = MonthBudget(amount=budget.amount, currency=budget.currency) if budget else None
    forecast = None
    open_month = period.start.date() <= today < period.end.date()
    current = latest(str(period)) if open_month else None
    if current is not None and current.summary.id == stored.summary.id:
        rows = [row for row in period_forecast(str(period), latest=latest, today=today).aggregated("company")
                if row.company == company]
        chosen = [row for row in rows if budget is None or row.currency == budget.currency]
        if len(chosen) == 1:
            row = chosen[0]
            forecast = MonthEndForecast(expected=row.expected, lower=row.lower, upper=row.upper, currency=row.currency)
    return StatementContext(previous=PreviousMonth.of(before, company=company) if before else None,
                            budget=month_budget, forecast=forecast)


@dataclass(frozen=True)
class Statement:
    company: str
    period: str
    run_id: int
    number: str
    created_at: str
    tool_version: str
    report_sha256: str
    rows: list[ReportRow]
    by_category: list[Total]
    by_service: list[Total]
    # The rows split by namespace ("" where cost came through none); each row's add up to it.
    namespaces: list[NamespaceRow]
    memory_shares: list[MemoryShare]
    ratios: list[AppliedRatio]
    reconciliation: list[Reconciliation]
    bills: tuple[BillInput, ...]
    rules_digest: str
    usage_digest: str | None
    # Decimals of each currency's report amounts: its minor unit, or the rules' `precision`.
    places: dict[str, int]
    # How the run's rules carried unattributable cost and idle capacity; None for runs that did not record it.
    carrying: CostCarrying | None
    # The company's share of the common pool, where common cost reached it.
    common_share: Fraction | None
    context: StatementContext

    def places_of(self, currency: str) -> int:
        return self.places.get(currency, minor_unit(currency))


def write_statement(stored: StoredRun, *, company: str, html_path: Path, csv_path: Path,
                    context: StatementContext = StatementContext()) -> Statement:
    """Build the statement from the run and write both files atomically."""
    if html_path.resolve() == csv_path.resolve():
        raise StatementError(f"{html_path}: the HTML statement and its CSV would be the same file; give --csv")
    statement = build_statement(stored, company=company, context=context)
    write_atomically(html_path, render_html(statement).encode())
    write_atomically(csv_path, render_statement_csv(statement))
    return statement


def build_statement(stored: StoredRun, *, company: str, context: StatementContext = StatementContext()) -> Statement:
    rows = [row for row in stored.rows if row.company == company]
    if not company or not rows:
        known = sorted({row.company for row in stored.rows if row.company})
        raise StatementError(f"run {stored.summary.id} has no cost for company {company!r}; companies: "
                             f"{', '.join(known) or 'none'}")
    pieces = [c for c in stored.contributions if c.company == company]
    lines = {(t.currency, t.tag, t.rule): t for t in stored.tag_lines}
    manifest = stored.summary.manifest
    common_shares = {c.company_share for c in pieces if c.category == "common"}
    return Statement(
        company=company,
        period=stored.summary.period,
        run_id=stored.summary.id,
        number=statement_number(period=stored.summary.period, company=company, run_id=stored.summary.id),
        created_at=stored.summary.created_at,
        tool_version=stored.summary.tool_version,
        report_sha256=stored.summary.report_sha256,
        rows=rows,
        by_category=_category_totals(rows),
        by_service=_totals(rows, label=service_label,
                           order=lambda total: (total.currency, -total.amount, total.label)),
        namespaces=namespace_rows(rows, pieces),
        memory_shares=_memory_shares(pieces, lines),
        ratios=_ratios(pieces, lines),
        reconciliation=_reconciliation(rows, manifest.totals),
        bills=manifest.bills,
        rules_digest=manifest.rules_digest,
        usage_digest=None if manifest.usage is None else manifest.usage.digest,
        # The rounded bill total is written to the report's decimals.
        places={currency: max(-totals.bill_rounded.as_tuple().exponent, 0)
                for currency, totals in manifest.totals.items()},
        carrying=manifest.carrying,
        common_share=common_shares.pop() if len(common_shares) == 1 else None,
        context=context,
    )


def statement_number(*, period: str, company: str, run_id: int) -> str:
    """CZ-<period>-<company>-<run id>: the same for the same run and company. A company whose name is not all
    lower-case letters, digits and single hyphens is written as such a slug followed by 6 hex digits of the name's
    sha256, so that two companies' slugs differ."""
    slug = re.sub(r"[^a-z0-9]+", "-", company.lower()).strip("-")
    if slug != company:
        slug = "-".join(filter(None, (slug, hashlib.sha256(company.encode()).hexdigest()[:6])))
    return f"CZ-{period}-{slug}-{run_id}"


def category_line(category: str, cluster: str) -> str:
    """A category as the statement names it; cluster and idle cost with their cluster."""
    if category == "cluster":
        return f"{CATEGORY_NAMES[category]} {cluster}"
    if category == "idle":
        return f"{CATEGORY_NAMES[category]} (cluster {cluster})"
    return CATEGORY_NAMES[category]


def _category_totals(rows: Sequence[ReportRow]) -> list[Total]:
    order = {category_line(row.category, row.cluster): CATEGORIES.index(row.category) for row in rows}
    return _totals(rows, label=lambda row: category_line(row.category, row.cluster),
                   order=lambda total: (total.currency, order[total.label], total.label))


def _totals(rows: Sequence[ReportRow], *, label: Callable[[ReportRow], str],
            order: Callable[[Total], tuple]) -> list[Total]:
    sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        sums[(row.currency, label(row))] += row.amount
    return sorted((Total(label=key, currency=currency, amount=amount) for (currency, key), amount in sums.items()),
                  key=order)


def _memory_shares(pieces: Sequence[Contribution], lines: dict[tuple[str, str, str], TagLine]) -> list[MemoryShare]:
    shares = [
        MemoryShare(currency=c.currency, cluster=c.cluster, namespace=c.namespace, service=c.service,
                    cluster_cost=lines[(c.currency, c.tag, c.rule)].amount, namespace_share=c.target_share,
                    company_share=c.company_share, amount=c.amount)
        for c in pieces if c.namespace
    ]
    return sorted(shares, key=lambda s: (s.currency, s.cluster, -s.namespace_share, s.namespace))


def _ratios(pieces: Sequence[Contribution], lines: dict[tuple[str, str, str], TagLine]) -> list[AppliedRatio]:
    # A cluster line reaches a service through several namespaces: their shares add up per service.
    grouped: dict[tuple[str, str, str, str, str, str, str], list[Contribution]] = defaultdict(list)
    for c in pieces:
        grouped[(c.currency, c.tag, c.rule, c.category, c.service, c.cluster, c.reason)].append(c)
    ratios = [
        AppliedRatio(currency=currency, tag=tag, rule=rule, category=category, service=service, cluster=cluster,
                     reason=reason, line_amount=lines[(currency, tag, rule)].amount,
                     line_share=sum((c.target_share for c in group), Fraction(0)),
                     company_share=group[0].company_share, amount=sum((c.amount for c in group), Fraction(0)))
        for (currency, tag, rule, category, service, cluster, reason), group in grouped.items()
    ]
    return sorted(ratios, key=lambda r: (r.currency, CATEGORIES.index(r.category), r.tag, r.rule, r.service))


def _currency_totals(rows: Iterable[ReportRow]) -> dict[str, Decimal]:
    """The rows' rounded amounts summed per currency."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        totals[row.currency] += row.amount
    return dict(totals)


def _reconciliation(rows: Sequence[ReportRow], totals: dict[str, CurrencyTotals]) -> list[Reconciliation]:
    company_totals = _currency_totals(rows)
    return [Reconciliation(currency=currency, company_total=company_totals[currency], run=t)
            for currency, t in sorted(totals.items()) if currency in company_totals]


def basis(ratio: AppliedRatio) -> str:
    """In words, how the tag value's lines reached the company."""
    if ratio.rule:
        return f"attribution rule: {ratio.rule}"
    if ratio.category == "idle":
        return f"idle capacity of cluster {ratio.cluster}: its allocatable capacity less the namespaces' usage"
    if ratio.reason:
        return f"unattributable ({ratio.reason}): joined the common pool"
    if ratio.tag.startswith(CLUSTER_PREFIX):
        where = "its service's namespaces" if ratio.category == "cluster" else "namespaces without a service"
        return f"usage share of {where} in cluster {ratio.cluster}"
    if ratio.category == "service_common":
        return f"equal split of group {ratio.tag.removeprefix(COMMON_PREFIX)}"
    if ratio.category == "common":
        return "untagged: common pool, by the companies' weights"
    return "exclusive cost of the service"


# --- words -------------------------------------------------------------------------------------------------


def cost_basis(bills: Sequence[BillInput]) -> str:
    """In one sentence, which column of the bill the costs are: the cost basis."""
    if not bills or any(bill.cost_column is None for bill in bills):
        return ("This run does not record which column of the bill its costs were read from (it was made by an "
                "agent before manifest version 3).")
    columns = sorted({bill.cost_column for bill in bills if bill.cost_column})
    described = [f"{column} ({COST_BASES[column.casefold()]})" if column.casefold() in COST_BASES else column
                 for column in columns]
    whose = "bill's" if len(bills) == 1 else "bills'"
    return f"Costs are the {whose} {' and '.join(described)}."


def carrying_sentence(statement: Statement) -> str:
    """In one sentence, who carries the cost the rules cannot attribute, and this month's unallocated cost."""
    unattributable = "cost the rules cannot attribute (an unknown service or group, a cluster without usage)"
    if statement.carrying is None:
        clauses = ["this run does not record how its rules carried cost they cannot attribute (it was made by an "
                   "agent before manifest version 3)"]
    elif statement.carrying.unattributable == "common":
        share = ("" if statement.common_share is None
                 else f" ({statement.company}: {_percent(statement.common_share)})")
        clauses = [f"{unattributable} joins the common pool, which the companies share by their weights{share}"]
    else:
        clauses = [f"{unattributable} is charged to no company: it stays with the payer of the bill until the rules "
                   f"attribute it"]
    if statement.carrying is not None and statement.carrying.idle == "unallocated":
        clauses.append("the clusters' idle capacity is charged to no company")
    unallocated = ", ".join(f"{_money(r.run.unallocated, statement.places_of(r.currency))} {r.currency}"
                            for r in statement.reconciliation)
    clauses.append(f"this month's unallocated cost: {unallocated or 'none'}")
    sentence = "; ".join(clauses)
    return sentence[0].upper() + sentence[1:] + "."


# --- HTML -------------------------------------------------------------------------------------------------


def render_html(statement: Statement) -> str:
    page = resources.files("agent.outputs").joinpath("templates/statement.html")
    template = Template(page.read_text(encoding="utf-8"))
    return template.substitute(
        generator=_e(f"cz-allocation-agent {__version__}"),
        number=_e(statement.number),
        company=_e(statement.company),
        period=_e(statement.period),
        run_id=_e(statement.run_id),
        created_at=_e(statement.created_at),
        cost_basis=_e(cost_basis(statement.bills)),
        total_due=_total_due(statement),
        previous_section=_previous_section(statement),
        budget_section=_budget_section(statement),
        carrying=_e(carrying_sentence(statement)),
        category_section=_totals_section(statement, statement.by_category, name="category", heading="category"),
        service_section=_totals_section(statement, statement.by_service, name="service", heading="service"),
        namespaces_section=_namespaces_table(statement),
        reconciliation_section=_reconciliation_table(statement),
        exact_section=_exact_table(statement),
        shares_section=_shares_table(statement.memory_shares),
        ratios_section=_ratios_table(statement.ratios),
        audit_section=_audit(statement),
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _money(amount: Decimal | Fraction, places: int) -> str:
    return f"{round_amount(amount, places):,f}"


def _exact(amount: Decimal | Fraction) -> str:
    return f"{round_amount(amount, _EXACT_PLACES):,f}"


def _percent(share: Fraction) -> str:
    # 4 decimals, without trailing zeros: 60%, 33.3333%.
    text = f"{round_amount(share * 100, _SHARE_PLACES):f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + "%"


def _table(table_id: str, headings: Sequence[str], rows: Iterable[str], *, numeric: Collection[str] = ()) -> str:
    head = "".join(f'<th class="amount">{_e(h)}</th>' if h in numeric else f"<th>{_e(h)}</th>" for h in headings)
    body = "\n".join(rows)
    return f'<table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'


def _amount_cell(amount: Decimal, places: int) -> str:
    """An amount at the currency's precision; the figure as stored in `data-amount`."""
    return f'<td class="amount" data-amount="{_e(format(amount, "f"))}">{_e(_money(amount, places))}</td>'


def _amount_span(amount: Decimal | Fraction, places: int) -> str:
    return f'<span class="amount">{_e(_money(amount, places))}</span>'


def _total_due(statement: Statement) -> str:
    return "\n".join(
        f'<p class="total-due" data-currency="{_e(r.currency)}">Total due: '
        f'{_amount_span(r.company_total, statement.places_of(r.currency))} '
        f'<span class="currency">{_e(r.currency)}</span></p>'
        for r in statement.reconciliation)


def _previous_section(statement: Statement) -> str:
    """This month beside the latest run of the month before, per currency: the change in amount and in %."""
    previous = statement.context.previous
    if previous is None:
        before = Period.parse(statement.period).previous()
        return f'<p class="note" id="no-previous">No run of {_e(before)} is stored: nothing to compare with.</p>'
    current = {r.currency: r.company_total for r in statement.reconciliation}
    rows = []
    for currency in sorted(current.keys() | previous.totals.keys()):
        places = statement.places_of(currency)
        now, before = current.get(currency, Decimal(0)), previous.totals.get(currency, Decimal(0))
        change = now - before
        rows.append(f'<tr data-currency="{_e(currency)}"><td>{_e(currency)}</td>{_amount_cell(now, places)}'
                    f'{_amount_cell(before, places)}<td class="amount" data-amount="{_e(format(change, "f"))}">'
                    f'{_e(_signed(change, places))}</td><td class="share">{_e(_change_percent(change, before))}</td>'
                    f"</tr>")
    note = (f'<p class="note">The month before: run {_e(previous.run_id)}, the latest of {_e(previous.period)}.'
            f"</p>")
    return note + "\n" + _table("previous-table", ["currency", statement.period, previous.period, "change",
                                                   "change %"], rows,
                                 numeric={statement.period, previous.period, "change", "change %"})


def _signed(amount: Decimal | Fraction, places: int) -> str:
    return f"{round_amount(amount, places):+,f}"


def _change_percent(change: Decimal, before: Decimal) -> str:
    if not before:
        return "n/a"
    return f"{round_amount(Fraction(change) / Fraction(before) * 100, _CHANGE_PLACES):+f}%"


def _budget_section(statement: Statement) -> str:
    """One line: the budget, this statement's share of it, and the month-end forecast with its range."""
    budget, forecast = statement.context.budget, statement.context.forecast
    parts = []
    totals = {r.currency: r.company_total for r in statement.reconciliation}
    if budget is not None:
        places = statement.places_of(budget.currency)
        parts.append(f'Budget <span id="budget">{_amount_span(budget.amount, places)} {_e(budget.currency)}</span>')
        if budget.currency in totals and budget.amount > 0:
            used = Fraction(totals[budget.currency]) / Fraction(budget.amount) * 100
            parts.append(f"this statement {_amount_span(totals[budget.currency], places)} {_e(budget.currency)} "
                         f'(<span id="budget-used">{_e(round_amount(used, _CHANGE_PLACES))}%</span> of the budget)')
    if forecast is not None:
        places = statement.places_of(forecast.currency)
        text = (f'forecast month end <span id="forecast">{_amount_span(forecast.expected, places)} '
                f'{_e(forecast.currency)}</span> (<span id="forecast-range">{_amount_span(forecast.lower, places)}'
                f"–{_amount_span(forecast.upper, places)}</span>)")
        if budget is not None and budget.currency == forecast.currency:
            over = forecast.expected - budget.amount
            text += (f', <span id="forecast-budget">{_amount_span(abs(over), places)} {_e(forecast.currency)} '
                     f'{"over" if over > 0 else "within"} the budget</span>')
        parts.append(text)
    if not parts:
        return ""
    line = "; ".join(parts)
    return f'<p class="budget-line" id="budget-line">{line[0].upper() + line[1:]}</p>'


def _totals_section(statement: Statement, totals: Sequence[Total], *, name: str, heading: str) -> str:
    rows = []
    charts = []
    for currency in sorted({t.currency for t in totals}):
        places = statement.places_of(currency)
        of_currency = [t for t in totals if t.currency == currency]
        rows += [f'<tr data-currency="{_e(currency)}"><td>{_e(currency)}</td><td class="label">{_e(t.label)}</td>'
                 f"{_amount_cell(t.amount, places)}</tr>" for t in of_currency]
        total = sum((t.amount for t in of_currency), Decimal(0))
        rows.append(f'<tr class="total" data-currency="{_e(currency)}"><th>{_e(currency)}</th><th>Total</th>'
                    f"{_amount_cell(total, places)}</tr>")
        charts.append(bar_chart(of_currency, title=f"Totals by {heading} ({currency})", places=places))
    return "\n".join(charts) + "\n" + _table(f"by-{name}", ["currency", heading, "amount"], rows,
                                              numeric={"amount"})


def bar_chart(totals: Sequence[Total], *, title: str, places: int) -> str:
    """A horizontal bar chart as inline SVG; bar lengths are whole pixels computed from exact amounts."""
    label_width, bar_width, value_width, row_height, top = 200, 330, 150, 24, 28
    largest = max((abs(t.amount) for t in totals), default=Decimal(0))
    width = label_width + bar_width + value_width
    height = top + row_height * len(totals) + 8
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
             f"<title>{_e(title)}</title>",
             f'<text x="0" y="16" font-weight="bold">{_e(title)}</text>']
    for index, total in enumerate(totals):
        y = top + index * row_height
        length = int(abs(total.amount) * bar_width / largest) if largest else 0
        kind = "credit" if total.amount < 0 else "bar"
        shown = f"{_money(total.amount, places)} {total.currency}"
        parts.append(
            f"<g><title>{_e(total.label)}: {_e(shown)}</title>"
            f'<text x="0" y="{y + 15}">{_e(_short(total.label))}</text>'
            f'<rect class="{kind}" x="{label_width}" y="{y + 3}" width="{max(length, 1)}" height="{row_height - 8}"/>'
            f'<text x="{label_width + length + 6}" y="{y + 15}">{_e(shown)}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts)


def _short(label: str) -> str:
    return label if len(label) <= _CHART_LABEL_CHARS else label[:_CHART_LABEL_CHARS - 1] + "…"


def _namespaces_table(statement: Statement) -> str:
    shown = sorted((n for n in statement.namespaces if n.namespace),
                   key=lambda n: (n.currency, n.cluster, n.namespace, CATEGORIES.index(n.category), n.service))
    if not shown:
        return '<p class="note">No cluster cost reached this company.</p>'
    headings = ["currency", "cluster", "namespace", "service", "category", "usage share", "amount"]
    rows = [f'<tr data-currency="{_e(n.currency)}"><td>{_e(n.currency)}</td><td>{_e(n.cluster)}</td>'
            f"<td>{_e(n.namespace)}</td><td>{_e(service_label(n))}</td><td>{_e(CATEGORY_NAMES[n.category])}</td>"
            f'<td class="share">{"" if n.memory_share is None else _percent(n.memory_share)}</td>'
            f"{_amount_cell(n.amount, statement.places_of(n.currency))}</tr>" for n in shown]
    return _table("namespaces-table", headings, rows, numeric={"usage share", "amount"})


def _reconciliation_table(statement: Statement) -> str:
    headings = ["currency", "this company", "bill", "allocated", "unallocated", "check"]
    rows = []
    for r in statement.reconciliation:
        places = statement.places_of(r.currency)
        rows.append(f'<tr data-currency="{_e(r.currency)}"><td>{_e(r.currency)}</td>'
                    f"{_amount_cell(r.company_total, places)}{_amount_cell(r.run.bill_rounded, places)}"
                    f"{_amount_cell(r.run.allocated, places)}{_amount_cell(r.run.unallocated, places)}"
                    f"<td>{_verdict(r.run)}</td></tr>")
    return _table("reconciliation-table", headings, rows,
                  numeric={"this company", "bill", "allocated", "unallocated"})


def _verdict(totals: CurrencyTotals) -> str:
    if totals.reconciles():
        return '<span class="ok">bill = allocated + unallocated</span>'
    return '<span class="bad">bill ≠ allocated + unallocated</span>'


def _exact_table(statement: Statement) -> str:
    """Per currency: the bill and this company's cost, exact, beside the rounded figures of the main tables."""
    exact: dict[str, Fraction] = defaultdict(Fraction)
    for ratio in statement.ratios:
        exact[ratio.currency] += ratio.amount
    headings = ["currency", "bill (exact)", "this company (exact)", "this company (rounded)"]
    rows = [f'<tr data-currency="{_e(r.currency)}"><td>{_e(r.currency)}</td>'
            f'<td class="amount">{_e(f"{r.run.bill:,f}")}</td><td class="amount">{_e(_exact(exact[r.currency]))}</td>'
            f"{_amount_cell(r.company_total, statement.places_of(r.currency))}</tr>"
            for r in statement.reconciliation]
    return _table("exact-table", headings, rows, numeric=headings[1:])


def _shares_table(shares: Sequence[MemoryShare]) -> str:
    if not shares:
        return '<p class="note">No cluster cost reached this company.</p>'
    headings = ["currency", "cluster", "namespace", "service", "cluster cost (exact)", "namespace share",
                "company share", "amount (exact)"]
    rows = [f"<tr><td>{_e(s.currency)}</td><td>{_e(s.cluster)}</td><td>{_e(s.namespace)}</td>"
            f"<td>{_e(s.service or '(common pool)')}</td><td class=\"amount\">{_e(f'{s.cluster_cost:,f}')}</td>"
            f'<td class="share">{_percent(s.namespace_share)}</td><td class="share">{_percent(s.company_share)}</td>'
            f'<td class="amount">{_e(_exact(s.amount))}</td></tr>' for s in shares]
    return _table("memory-shares-table", headings, rows, numeric=headings[4:])


def _ratios_table(ratios: Sequence[AppliedRatio]) -> str:
    headings = ["currency", "bill tag value", "bill amount (exact)", "category", "service", "share of the lines",
                "company share", "amount (exact)", "basis"]
    rows = [f"<tr><td>{_e(r.currency)}</td><td><code>{_e(r.tag or '(untagged)')}</code></td>"
            f'<td class="amount">{_e(f"{r.line_amount:,f}")}</td><td>{_e(CATEGORY_NAMES[r.category])}</td>'
            f'<td>{_e(service_label(r))}</td><td class="share">{_percent(r.line_share)}</td>'
            f'<td class="share">{_percent(r.company_share)}</td><td class="amount">{_e(_exact(r.amount))}</td>'
            f"<td>{_e(basis(r))}</td></tr>" for r in ratios]
    return _table("ratios-table", headings, rows,
                  numeric={"bill amount (exact)", "share of the lines", "company share", "amount (exact)"})


def _audit(statement: Statement) -> str:
    facts = [("statement number", statement.number), ("run id", str(statement.run_id)),
             ("period", statement.period), ("created at", statement.created_at),
             ("tool version", statement.tool_version), ("report sha256", statement.report_sha256),
             ("rules digest (sha256)", statement.rules_digest),
             ("usage digest (sha256)", statement.usage_digest or "no usage table")]
    facts_html = "\n".join(f'<tr><th>{_e(name)}</th><td class="digest">{_e(value)}</td></tr>' for name, value in facts)
    bills = [f"<tr><td>{_e(b.path)}</td><td>{_e(b.format)}</td><td>{_e(b.cost_column or 'not recorded')}</td>"
             f'<td class="amount">{b.input_rows}</td><td class="digest">{_e(b.sha256)}</td></tr>'
             for b in statement.bills]
    return (f'<table id="audit-table"><tbody>\n{facts_html}\n</tbody></table>\n'
            + _table("bills-table", ["bill file", "format", "cost column", "rows", "sha256"], bills,
                     numeric={"rows"}))


# --- CSV --------------------------------------------------------------------------------------------------


def render_statement_csv(statement: Statement) -> bytes:
    """The company's report rows, each split by namespace ("" for cost that came through none); they add up to
    the statement's total per currency."""
    return render_csv(CSV_COLUMNS, ((str(statement.run_id), row.period, row.company, row.service, row.category,
                                     row.cluster, row.namespace, format(row.amount, "f"), row.currency)
                                    for row in statement.namespaces))
