"""What the CLI prints: the run summary, the list of runs, the explanation of an amount, and a forecast.

Names come from bills and rules: they reach the console as Text or escaped, never as Rich markup."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agent.core.manifest import RunManifest
from agent.core.model import CATEGORIES, NO_COMPANY, NamespaceRow, RunResult, RunSummary, StoredRun
from agent.core.rules import Rules
from agent.errors import AgentError, NoCostError
from agent.outputs.explain import exact_amount_text, select_explanation, service_label
from agent.outputs.forecast import PeriodForecast
from agent.outputs.formats import FORECAST_DIMENSIONS

_SHOWN_REJECTS = 10
_ALLOCATED = [c for c in CATEGORIES if c != "unallocated"]


def print_run(result: RunResult, *, rules: Rules, out: Path, rejects_path: Path | None, console: Console) -> None:
    manifest = result.manifest
    console.print(f"[bold]run {result.run_id}[/] · period {manifest.period} · "
                  f"{len(result.allocation.rows)} report rows written to {escape(str(out))}")
    console.print(_company_table(result))
    console.print(_category_table(result))
    _print_reconciliation(manifest, console=console)
    stray = manifest.stray_rows()
    if stray:
        console.print(f"[yellow]warning[/] {escape(stray)}", highlight=False)
    if result.rejected:
        console.print(f"[yellow]{len(result.rejected)} rejected row(s)[/], listed in {escape(str(rejects_path))}:")
        for reject in result.rejected[:_SHOWN_REJECTS]:
            console.print(f"  {reject.message()}", highlight=False, markup=False)
        if len(result.rejected) > _SHOWN_REJECTS:
            console.print(f"  ... and {len(result.rejected) - _SHOWN_REJECTS} more")
    reasons = _unallocated_reasons(result)
    for line in reasons[:_SHOWN_REJECTS]:
        console.print(f"[yellow]unallocated[/] {escape(line)}", highlight=False)
    if len(reasons) > _SHOWN_REJECTS:
        console.print(f"  ... and {len(reasons) - _SHOWN_REJECTS} more reasons (cz-agent explain --company '')",
                      highlight=False)


def _company_table(result: RunResult) -> Table:
    table = Table(title="Chargeback by company", title_justify="left")
    # Idle capacity has a column where the rules give it a category of its own.
    shown = [c for c in _ALLOCATED if c != "idle" or any(r.category == c for r in result.allocation.rows)]
    for heading in ["currency", "company", *shown, "total"]:
        numeric = heading not in ("currency", "company")
        # Amounts never wrap or truncate; long headings wrap at the underscore instead.
        table.add_column(heading.replace("_", "_\n") if numeric else heading, justify="right" if numeric else "left",
                         no_wrap=numeric)
    cells: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for row in result.allocation.rows:
        if row.company != NO_COMPANY:
            cells[(row.currency, row.company)][row.category] += row.amount
    for (currency, company), by_category in sorted(cells.items()):
        amounts = [by_category.get(category, Decimal(0)) for category in shown]
        table.add_row(currency, Text(company), *(_money(a) for a in amounts), _money(sum(amounts, Decimal(0))))
    return table


def _category_table(result: RunResult) -> Table:
    table = Table(title="By category", title_justify="left")
    for heading in ["currency", "category", "amount"]:
        table.add_column(heading, justify="right" if heading == "amount" else "left")
    for (currency, category), amount in sorted(result.allocation.totals_by("category").items(),
                                               key=lambda item: (item[0][0], CATEGORIES.index(item[0][1]))):
        table.add_row(currency, category, _money(amount))
    return table


def _print_reconciliation(manifest: RunManifest, *, console: Console) -> None:
    rows = manifest.rows
    console.print(f"rows: {rows.input} input = {rows.accepted} accepted + {rows.rejected} rejected + "
                  f"{rows.out_of_period} out of period", highlight=False)
    for currency, totals in manifest.totals.items():
        mark = "[green]reconciled[/]" if totals.reconciles() else "[bold red]DOES NOT RECONCILE[/]"
        console.print(f"{currency}: bill {totals.bill:f} -> {totals.bill_rounded:f} = allocated {totals.allocated:f} + "
                      f"unallocated {totals.unallocated:f} {mark}; out of period {totals.out_of_period:f}",
                      highlight=False)


def _unallocated_reasons(result: RunResult) -> list[str]:
    """Why cost was left unallocated, the largest amounts first."""
    reasons: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
    for c in result.allocation.contributions:
        if c.company == NO_COMPANY:
            reasons[(c.currency, c.reason)] += c.amount
    # At most six decimals, as explanations show them: an idle share is a long quotient.
    return [f"{currency} {_money(round(Decimal(amount.numerator) / Decimal(amount.denominator), 6).normalize())}: "
            f"{reason}"
            for (currency, reason), amount in sorted(reasons.items(),
                                                     key=lambda item: (item[0][0], -abs(item[1]), item[0][1]))]


def print_coverage(coverage: dict[str, float], *, threshold: float, console: Console) -> None:
    for cluster, fraction in sorted(coverage.items()):
        if fraction < threshold:
            console.print(f"[yellow]warning:[/] cluster {escape(cluster)}: usage data covers {fraction:.1%} of the "
                          f"period (threshold {threshold:.0%}); its usage shares may be skewed", highlight=False)
        else:
            console.print(f"cluster {escape(cluster)}: usage data covers {fraction:.1%} of the period", highlight=False)


def print_diff(run_a: StoredRun, run_b: StoredRun, *, console: Console) -> None:
    """Per company and service: the amounts in each run and the change, changed rows only."""
    amounts: dict[tuple[str, str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for side, stored in enumerate((run_a, run_b)):
        for row in stored.rows:
            amounts[(row.currency, row.company, row.service)][side] += row.amount
    a, b = run_a.summary, run_b.summary
    table = Table(title=f"run {a.id} ({a.period}) -> run {b.id} ({b.period})", title_justify="left")
    for heading in ["currency", "company", "service", f"run {a.id}", f"run {b.id}", "change"]:
        table.add_column(heading, justify="right" if heading.startswith(("run", "change")) else "left")
    for (currency, company, service), (before, after) in sorted(amounts.items()):
        if before != after:
            table.add_row(currency, Text(company or "(unallocated)"), Text(service or "(common pool)"), _money(before),
                          _money(after), f"{after - before:+,f}")
    if table.row_count:
        console.print(table)
    else:
        console.print(f"runs {a.id} and {b.id} allocate the same amounts")
    for currency in sorted({key[0] for key in amounts}):
        before = sum((v[0] for k, v in amounts.items() if k[0] == currency), Decimal(0))
        after = sum((v[1] for k, v in amounts.items() if k[0] == currency), Decimal(0))
        console.print(f"{currency} total: {_money(before)} -> {_money(after)} ({after - before:+,f})",
                      highlight=False)


def print_runs(found: list[RunSummary], *, console: Console) -> None:
    table = Table(title="Stored runs", title_justify="left")
    for heading in ["id", "period", "created", "bills", "rows in", "rejected", "report sha256"]:
        table.add_column(heading)
    for run in found:
        rows = run.manifest.rows
        table.add_row(str(run.id), run.period, run.created_at, str(len(run.manifest.bills)), str(rows.input),
                      str(rows.rejected), run.report_sha256[:12])
    console.print(table)


def print_forecast(forecast: PeriodForecast, *, dimension: str | None, console: Console) -> None:
    """The month-end forecast by company, service and category (or by `dimension` alone), and per currency."""
    console.print(f"[bold]forecast of {forecast.period}[/] from run {forecast.run_id}, as of {forecast.as_of} "
                  "(the last complete day of its bill)", highlight=False)
    shown = FORECAST_DIMENSIONS if dimension is None else (dimension,)
    rows = forecast.aggregated(dimension)
    table = Table(show_edge=False)
    for heading in [*shown, "currency", "expected", "lower", "upper"]:
        table.add_column(heading, justify="right" if heading in ("expected", "lower", "upper") else "left")
    for row in rows:
        names = {"company": row.company or "(unallocated)", "service": service_label(row),
                 "category": row.category}
        table.add_row(*(Text(names[name]) for name in shown), row.currency, _money(row.expected), _money(row.lower),
                      _money(row.upper))
    console.print(table)
    for currency in sorted({row.currency for row in rows}):
        expected = sum((row.expected for row in rows if row.currency == currency), Decimal(0))
        console.print(f"{currency} month-end total: {_money(expected)}", highlight=False)


def print_explanation(stored: StoredRun, *, company: str, service: str | None, console: Console) -> None:
    """Every piece behind the company's amount: tag values, clusters, namespaces, shares and bill rows."""
    try:
        explanation = select_explanation(stored, company=company, service=service)
    except NoCostError as e:
        raise AgentError(f"{e}; companies: {', '.join(e.companies)}") from e
    for row in explanation.rows:
        heading = (f"{row.company or '(unallocated)'} · {service_label(row)} · {row.category}"
                   f"{' · cluster ' + row.cluster if row.cluster else ''}: {row.amount} {row.currency}")
        console.print(Text("\n" + heading, style="bold"), highlight=False)
        table = Table(show_edge=False)
        for heading in ["tag value", "bill lines", "line total", "namespace", "share of line", "company share",
                        "exact amount", "reason or rule"]:
            table.add_column(heading)
        for c in explanation.contributions_to(row):
            line = explanation.line_of(c)
            table.add_row(Text(c.tag or "(untagged)"), str(line.line_count), str(line.amount), Text(c.namespace or "-"),
                          _share(c.target_share), _share(c.company_share), exact_amount_text(c.amount),
                          Text(c.reason or c.rule or "-"))
        console.print(table)
        for line in explanation.lines_behind(row):
            for source, rows in line.rows_by_source.items():
                console.print(f"  bill rows of {line.tag or line.rule or '(untagged)'}: {source} rows "
                              f"{_abbreviate(rows)}", highlight=False, markup=False)
    namespaces = [part for part in explanation.namespaces() if part.namespace]
    if namespaces:
        console.print(_namespace_table(namespaces))


def _namespace_table(parts: list[NamespaceRow]) -> Table:
    """The cluster cost by namespace, rounded so that a row's namespaces add up to the row."""
    table = Table(title="\nCluster cost by namespace", title_justify="left", show_edge=False)
    for heading in ["cluster", "namespace", "service", "category", "usage share", "amount", "currency"]:
        table.add_column(heading, justify="right" if heading in ("usage share", "amount") else "left")
    for part in parts:
        table.add_row(Text(part.cluster), Text(part.namespace), Text(service_label(part)), part.category,
                      "-" if part.memory_share is None else _share(part.memory_share), _money(part.amount),
                      part.currency)
    return table


def _share(share: Fraction) -> str:
    return f"{float(share):.4%}" if share != 1 else "100%"


def _abbreviate(rows: str, limit: int = 120) -> str:
    return rows if len(rows) <= limit else rows[:limit].rsplit(",", 1)[0] + ", ..."


def _money(amount: Decimal) -> str:
    return f"{amount:,f}"
