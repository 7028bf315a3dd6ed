"""A company's chargeback statement for a period, from a stored run: an HTML page to send, and its CSV rows.

The page is self-contained (inline CSS and SVG chart, no script, no external resource) and every value
from the bills or the rules is HTML-escaped. CSV cells that a spreadsheet would run as a formula are
neutralised with a leading apostrophe.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from pathlib import Path
from string import Template

from agent import __version__
from agent.core.allocation import CLUSTER_PREFIX, COMMON_PREFIX
from agent.core.manifest import BillInput, CurrencyTotals
from agent.core.model import CATEGORIES, Contribution, NamespaceRow, ReportRow, StoredRun, TagLine
from agent.core.money import round_amount
from agent.core.namespaces import namespace_rows
from agent.errors import StatementError
from agent.outputs.explain import service_label
# csv_safe is re-exported: statements are where users meet formula-looking names.
from agent.outputs.report import csv_safe as csv_safe
from agent.outputs.report import render_csv, write_atomically

CSV_COLUMNS = ("run_id", "period", "company", "service", "category", "cluster", "namespace", "amount", "currency")
_EXACT_PLACES = 6
_SHARE_PLACES = 4
_CHART_LABEL_CHARS = 28


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
class Statement:
    company: str
    period: str
    run_id: int
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


def write_statement(stored: StoredRun, *, company: str, html_path: Path, csv_path: Path) -> Statement:
    """Build the statement from the run and write both files atomically."""
    if html_path.resolve() == csv_path.resolve():
        raise StatementError(f"{html_path}: the HTML statement and its CSV would be the same file; give --csv")
    statement = build_statement(stored, company=company)
    write_atomically(html_path, render_html(statement).encode())
    write_atomically(csv_path, render_statement_csv(statement))
    return statement


def build_statement(stored: StoredRun, *, company: str) -> Statement:
    rows = [row for row in stored.rows if row.company == company]
    if not company or not rows:
        known = sorted({row.company for row in stored.rows if row.company})
        raise StatementError(f"run {stored.summary.id} has no cost for company {company!r}; companies: "
                             f"{', '.join(known) or 'none'}")
    pieces = [c for c in stored.contributions if c.company == company]
    lines = {(t.currency, t.tag, t.rule): t for t in stored.tag_lines}
    manifest = stored.summary.manifest
    return Statement(
        company=company,
        period=stored.summary.period,
        run_id=stored.summary.id,
        created_at=stored.summary.created_at,
        tool_version=stored.summary.tool_version,
        report_sha256=stored.summary.report_sha256,
        rows=rows,
        by_category=_totals(rows, label=lambda row: row.category,
                            order=lambda total: (total.currency, CATEGORIES.index(total.label))),
        by_service=_totals(rows, label=service_label,
                           order=lambda total: (total.currency, -total.amount, total.label)),
        namespaces=namespace_rows(rows, pieces),
        memory_shares=_memory_shares(pieces, lines),
        ratios=_ratios(pieces, lines),
        reconciliation=_reconciliation(rows, manifest.totals),
        bills=manifest.bills,
        rules_digest=manifest.rules_digest,
        usage_digest=None if manifest.usage is None else manifest.usage.digest,
    )


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


def _reconciliation(rows: Sequence[ReportRow], totals: dict[str, CurrencyTotals]) -> list[Reconciliation]:
    company_totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        company_totals[row.currency] += row.amount
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


# --- HTML -------------------------------------------------------------------------------------------------


def render_html(statement: Statement) -> str:
    page = resources.files("agent.outputs").joinpath("templates/statement.html")
    template = Template(page.read_text(encoding="utf-8"))
    return template.substitute(
        generator=_e(f"cz-allocation-agent {__version__}"),
        company=_e(statement.company),
        period=_e(statement.period),
        run_id=_e(statement.run_id),
        created_at=_e(statement.created_at),
        total_due=_total_due(statement),
        category_section=_totals_section(statement.by_category, name="category", heading="category"),
        service_section=_totals_section(statement.by_service, name="service", heading="service"),
        namespaces_section=_namespaces_table(statement.namespaces),
        shares_section=_shares_table(statement.memory_shares),
        ratios_section=_ratios_table(statement.ratios),
        reconciliation_section=_reconciliation_table(statement.reconciliation),
        audit_section=_audit(statement),
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _money(amount: Decimal) -> str:
    return f"{amount:,f}"


def _exact(amount: Fraction) -> str:
    return f"{round_amount(amount, _EXACT_PLACES):,f}"


def _percent(share: Fraction) -> str:
    # 4 decimals, without trailing zeros: 60%, 33.3333%.
    text = f"{round_amount(share * 100, _SHARE_PLACES):f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + "%"


def _table(table_id: str, headings: Sequence[str], rows: Iterable[str], *, numeric: Collection[str] = ()) -> str:
    head = "".join(f'<th class="amount">{_e(h)}</th>' if h in numeric else f"<th>{_e(h)}</th>" for h in headings)
    body = "\n".join(rows)
    return f'<table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'


def _amount_cell(amount: Decimal) -> str:
    return f'<td class="amount" data-amount="{_e(format(amount, "f"))}">{_e(_money(amount))}</td>'


def _total_due(statement: Statement) -> str:
    return "\n".join(
        f'<p class="total-due" data-currency="{_e(r.currency)}">Total due: <span class="amount">'
        f'{_e(_money(r.company_total))}</span> <span class="currency">{_e(r.currency)}</span></p>'
        for r in statement.reconciliation)


def _totals_section(totals: Sequence[Total], *, name: str, heading: str) -> str:
    rows = []
    charts = []
    for currency in sorted({t.currency for t in totals}):
        of_currency = [t for t in totals if t.currency == currency]
        rows += [f'<tr data-currency="{_e(currency)}"><td>{_e(currency)}</td><td class="label">{_e(t.label)}</td>'
                 f'{_amount_cell(t.amount)}</tr>' for t in of_currency]
        total = sum((t.amount for t in of_currency), Decimal(0))
        rows.append(f'<tr class="total" data-currency="{_e(currency)}"><th>{_e(currency)}</th><th>Total</th>'
                    f'{_amount_cell(total)}</tr>')
        charts.append(bar_chart(of_currency, title=f"Totals by {heading} ({currency})"))
    return "\n".join(charts) + "\n" + _table(f"by-{name}", ["currency", heading, "amount"], rows,
                                              numeric={"amount"})


def bar_chart(totals: Sequence[Total], *, title: str) -> str:
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
        parts.append(
            f'<g><title>{_e(total.label)}: {_e(_money(total.amount))} {_e(total.currency)}</title>'
            f'<text x="0" y="{y + 15}">{_e(_short(total.label))}</text>'
            f'<rect class="{kind}" x="{label_width}" y="{y + 3}" width="{max(length, 1)}" height="{row_height - 8}"/>'
            f'<text x="{label_width + length + 6}" y="{y + 15}">{_e(_money(total.amount))} {_e(total.currency)}'
            f"</text></g>")
    parts.append("</svg>")
    return "\n".join(parts)


def _short(label: str) -> str:
    return label if len(label) <= _CHART_LABEL_CHARS else label[:_CHART_LABEL_CHARS - 1] + "…"


def _namespaces_table(namespaces: Sequence[NamespaceRow]) -> str:
    shown = sorted((n for n in namespaces if n.namespace),
                   key=lambda n: (n.currency, n.cluster, n.namespace, CATEGORIES.index(n.category), n.service))
    if not shown:
        return '<p class="note">No cluster cost reached this company.</p>'
    headings = ["currency", "cluster", "namespace", "service", "category", "usage share", "amount"]
    rows = [f'<tr data-currency="{_e(n.currency)}"><td>{_e(n.currency)}</td><td>{_e(n.cluster)}</td>'
            f"<td>{_e(n.namespace)}</td><td>{_e(service_label(n))}</td><td>{_e(n.category)}</td>"
            f'<td class="share">{"" if n.memory_share is None else _percent(n.memory_share)}</td>'
            f"{_amount_cell(n.amount)}</tr>" for n in shown]
    return _table("namespaces-table", headings, rows, numeric={"usage share", "amount"})


def _shares_table(shares: Sequence[MemoryShare]) -> str:
    if not shares:
        return '<p class="note">No cluster cost reached this company.</p>'
    headings = ["currency", "cluster", "namespace", "service", "cluster cost", "namespace share", "company share",
                "amount (exact)"]
    rows = [f"<tr><td>{_e(s.currency)}</td><td>{_e(s.cluster)}</td><td>{_e(s.namespace)}</td>"
            f"<td>{_e(s.service or '(common pool)')}</td>{_amount_cell(s.cluster_cost)}"
            f'<td class="share">{_percent(s.namespace_share)}</td><td class="share">{_percent(s.company_share)}</td>'
            f'<td class="amount">{_e(_exact(s.amount))}</td></tr>' for s in shares]
    return _table("memory-shares-table", headings, rows,
                  numeric={"cluster cost", "namespace share", "company share", "amount (exact)"})


def _ratios_table(ratios: Sequence[AppliedRatio]) -> str:
    headings = ["currency", "bill tag value", "bill lines", "category", "service", "share of the lines",
                "company share", "amount (exact)", "basis"]
    rows = [f"<tr><td>{_e(r.currency)}</td><td><code>{_e(r.tag or '(untagged)')}</code></td>"
            f"{_amount_cell(r.line_amount)}<td>{_e(r.category)}</td><td>{_e(service_label(r))}</td>"
            f'<td class="share">{_percent(r.line_share)}</td><td class="share">{_percent(r.company_share)}</td>'
            f'<td class="amount">{_e(_exact(r.amount))}</td><td>{_e(basis(r))}</td></tr>' for r in ratios]
    return _table("ratios-table", headings, rows,
                  numeric={"bill lines", "share of the lines", "company share", "amount (exact)"})


def _reconciliation_table(reconciliation: Sequence[Reconciliation]) -> str:
    headings = ["currency", "this company", "run: bill (exact)", "bill (rounded)", "allocated", "unallocated",
                "check"]
    rows = [f'<tr data-currency="{_e(r.currency)}"><td>{_e(r.currency)}</td>{_amount_cell(r.company_total)}'
            f"{_amount_cell(r.run.bill)}{_amount_cell(r.run.bill_rounded)}{_amount_cell(r.run.allocated)}"
            f"{_amount_cell(r.run.unallocated)}<td>{_verdict(r.run)}</td></tr>" for r in reconciliation]
    return _table("reconciliation-table", headings, rows,
                  numeric={"this company", "run: bill (exact)", "bill (rounded)", "allocated", "unallocated"})


def _verdict(totals: CurrencyTotals) -> str:
    if totals.reconciles():
        return '<span class="ok">bill = allocated + unallocated</span>'
    return '<span class="bad">bill ≠ allocated + unallocated</span>'


def _audit(statement: Statement) -> str:
    facts = [("run id", str(statement.run_id)), ("period", statement.period), ("created at", statement.created_at),
             ("tool version", statement.tool_version), ("report sha256", statement.report_sha256),
             ("rules digest (sha256)", statement.rules_digest),
             ("usage digest (sha256)", statement.usage_digest or "no usage table")]
    facts_html = "\n".join(f'<tr><th>{_e(name)}</th><td class="digest">{_e(value)}</td></tr>' for name, value in facts)
    bills = [f'<tr><td>{_e(b.path)}</td><td>{_e(b.format)}</td><td class="amount">{b.input_rows}</td>'
             f'<td class="digest">{_e(b.sha256)}</td></tr>' for b in statement.bills]
    return (f'<table id="audit-table"><tbody>\n{facts_html}\n</tbody></table>\n'
            + _table("bills-table", ["bill file", "format", "rows", "sha256"], bills, numeric={"rows"}))


# --- CSV --------------------------------------------------------------------------------------------------


def render_statement_csv(statement: Statement) -> bytes:
    """The company's report rows, each split by namespace ("" for cost that came through none); they add up to
    the statement's total per currency."""
    return render_csv(CSV_COLUMNS, ((str(statement.run_id), row.period, row.company, row.service, row.category,
                                     row.cluster, row.namespace, format(row.amount, "f"), row.currency)
                                    for row in statement.namespaces))
