"""One allocation run: import the bills, read usage, allocate, reconcile, store, render the report."""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from agent import __version__
from agent.bills import ImportOptions
from agent.bills.options import import_options_for
from agent.bills.taglines import daily_costs_of, tag_lines_of
from agent.core.allocation import allocate_lines, report_precision, rounded_bill_totals
from agent.core.bill_formats import COLUMN_OVERRIDES, column_option
from agent.core.bill_limits import BillLimits
from agent.core.manifest import (BillInput, CostCarrying, CurrencyTotals, ReportDigest, RowCounts, RunManifest,
                                 UsageInput)
from agent.core.model import NO_COMPANY, Allocation, NamespaceUsage, RunResult, RunSummary, SplitTotal
from agent.core.rules import Rules, rules_digest
from agent.errors import PeriodError, RejectedRowsError, SettingsError
from agent.outputs.report import render_report
from agent.sources.usage import usage_digest
from agent.store.runs import save_run

if TYPE_CHECKING:
    from agent.bills.pushdown import TableQueries
    from agent.bills.totals import BillTotals
    from agent.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRequest:
    # Bill files; none where the rules read the bill from a query engine's table (`queries`).
    bills: list[Path]
    period: str
    rules: Rules
    usage: list[NamespaceUsage] | None
    import_options: ImportOptions
    report_format: str = "csv"
    strict: bool = False
    # Live runs: the fraction of the period each cluster's usage covers.
    coverage: dict[str, float] | None = None
    # The client of the query engine holding the bill table of rules with `bill: {engine: trino|athena}`.
    queries: TableQueries | None = None


# The bill, the rows of the chunk just read, and the bytes of the file read so far (None where unknown).
RowsProgress = Callable[[Path, int, int | None], None]
# One line per stage done (a bill read, the allocation, the store), with its counts and seconds.
StageProgress = Callable[[str], None]
SPLIT_COLUMNS = ("sub_account", "workspace", "api_key")
OVERRIDABLE_COLUMNS = ("bill_format", *map(column_option, COLUMN_OVERRIDES))


def import_bills(request: RunRequest, *, on_rows: RowsProgress | None = None,
                 on_stage: StageProgress | None = None) -> list[BillTotals]:
    # Imported here: the importer loads pandas and Arrow, which an idle `cz-agent serve` does without.
    from agent.bills import total_bill
    from agent.bills.identity import refuse_repeated_lines, refuse_same_lines

    def read(path: Path) -> BillTotals:
        started = time.monotonic()
        bill = total_bill(path, options=request.import_options,
                          on_rows=None if on_rows is None else functools.partial(on_rows, path))
        _read_stage(on_stage, bill, started=started)
        return bill

    if request.rules.bill.engine != "files":
        return [_total_table(request, on_stage=on_stage)]
    imports = read_distinct(request.bills, read)
    _refuse_other_periods(imports, period=request.period)
    refuse_same_lines(imports, period=request.period, options=request.import_options)
    refuse_repeated_lines([Path(bill.source) for bill in imports], options=request.import_options,
                          period=request.period)
    return imports


def _total_table(request: RunRequest, *, on_stage: StageProgress | None) -> BillTotals:
    """The rules' bill table, reduced to group sums by its query engine."""
    from agent.bills.pushdown import BillTable, total_table

    if request.queries is None:
        raise SettingsError(f"the rules read the bill from {request.rules.bill.engine} (bill: engine): the agent "
                            "has no client for it")
    started = time.monotonic()
    bill = total_table(request.queries, BillTable(engine=request.rules.bill.engine, table=request.rules.bill.table),
                       options=request.import_options)
    _read_stage(on_stage, bill, started=started)
    _refuse_other_periods([bill], period=request.period)
    return bill


def _read_stage(on_stage: StageProgress | None, bill: BillTotals, *, started: float) -> None:
    if on_stage is not None:
        on_stage(f"read {bill.source}: {bill.input_rows:,} rows ({bill.accepted_rows:,} accepted, "
                 f"{len(bill.rejected):,} rejected, {bill.out_of_period_rows:,} out of period) in "
                 f"{time.monotonic() - started:.1f} s")


def table_queries(rules: Rules, settings: Settings) -> TableQueries | None:
    """The client of the query engine the rules read the bill from, from the settings; None for bill files."""
    if rules.bill.engine == "trino":
        from agent.sources.trino import TrinoQueries

        if settings.trino_url is None:
            raise SettingsError("the rules read the bill from a Trino table (bill: engine: trino): set "
                                "CZ_AGENT_TRINO_URL to the server's http(s)://host:port")
        return TrinoQueries(settings.trino_url, user=settings.trino_user, password=settings.trino_password(),
                            timeout_seconds=settings.bill_query_timeout_seconds)
    if rules.bill.engine == "athena":
        from agent.sources.athena import AthenaQueries

        region = settings.effective_athena_region()
        if not region:
            raise SettingsError("the rules read the bill from an Athena table (bill: engine: athena): set "
                                "CZ_AGENT_ATHENA_REGION (or AWS_REGION) to the table's region")
        return AthenaQueries(region=region, workgroup=settings.athena_workgroup,
                             output_location=settings.athena_output_location,
                             endpoint_url=settings.athena_endpoint_url,
                             timeout_seconds=settings.bill_query_timeout_seconds)
    return None


def read_distinct(paths: list[Path], read: Callable[[Path], BillTotals]) -> list[BillTotals]:
    """Each bill once: a file given twice (or through a symlink) is read once, and a file with the same bytes as
    an earlier one (a copy) is left out; both with a warning naming the two."""
    imports: list[BillTotals] = []
    by_file: dict[Path, Path] = {}
    by_digest: dict[str, str] = {}
    for path in paths:
        first = by_file.setdefault(path.resolve(), path)
        if first is not path:
            log.warning("%s is the same file as %s: counted once", path, first)
            continue
        bill = read(path)
        copied = by_digest.setdefault(bill.sha256, bill.source)
        if copied != bill.source:
            log.warning("%s has the same bytes as %s: counted once", bill.source, copied)
            continue
        imports.append(bill)
    return imports


def _refuse_other_periods(imports: list[BillTotals], *, period: str) -> None:
    """A run of a period none of the bills' rows is in is a mistake (the wrong --period), not an empty month."""
    if any(bill.accepted_rows for bill in imports):
        return
    found: Counter[str] = Counter()
    for bill in imports:
        for (other, _), group in bill.outside.items():
            found[other] += group.lines
    if found:
        periods = ", ".join(f"{other} ({lines} rows)" for other, lines in sorted(found.items()))
        raise PeriodError(f"no bill row is in {period}: the rows are in {periods}; give one of these periods")


def run_allocation(request: RunRequest, *, engine: Engine, created_at: str,
                   unchanged_from: RunSummary | None = None, on_rows: RowsProgress | None = None,
                   on_stage: StageProgress | None = None) -> RunResult:
    """Allocate the period and store the run; nothing is stored when any input is invalid, or when the
    manifest (inputs, totals, report digest) equals that of `unchanged_from`. `on_stage` hears a line per
    stage done."""
    stage = on_stage or (lambda _line: None)
    imports = import_bills(request, on_rows=on_rows, on_stage=on_stage)
    rejected = [reject for bill in imports for reject in bill.rejected]
    if request.strict and rejected:
        raise RejectedRowsError(f"{len(rejected)} bill row(s) rejected (--strict); first: {rejected[0].message()}")
    started = time.monotonic()
    allocation = allocate_lines(tag_lines_of(imports, rules=request.rules), rules=request.rules, period=request.period,
                                usage=request.usage or ())
    report = render_report(allocation.rows, report_format=request.report_format)
    manifest = build_manifest(request, imports=imports, allocation=allocation, report=report)
    stage(f"allocated {request.period}: {len(allocation.rows):,} report rows in {time.monotonic() - started:.1f} s")
    if unchanged_from is not None and manifest.to_json() == unchanged_from.manifest.to_json():
        stage(f"not stored: the same as run {unchanged_from.id}")
        return RunResult(run_id=unchanged_from.id, stored=False, allocation=allocation, rejected=rejected,
                         manifest=manifest, report=report)
    started = time.monotonic()
    run_id = save_run(engine, allocation=allocation, rejected=rejected, splits=split_totals(imports),
                      daily=daily_costs_of(imports, tag_lines=allocation.tag_lines), manifest=manifest,
                      report_sha256=manifest.report.sha256, created_at=created_at, tool_version=__version__)
    stage(f"stored run {run_id} in {time.monotonic() - started:.1f} s")
    return RunResult(run_id=run_id, stored=True, allocation=allocation, rejected=rejected, manifest=manifest,
                     report=report)


def split_totals(imports: list[BillTotals]) -> list[SplitTotal]:
    """The accepted lines' exact cost per sub-account, workspace and API key, for the run's split views."""
    from agent.bills.grouping import bill_lines, split_bill

    split = split_bill(bill_lines(imports), columns=SPLIT_COLUMNS)
    return [SplitTotal(*row.values, currency=row.currency, amount=row.exact_amount, line_count=row.line_count)
            for row in split.rows]


def build_manifest(request: RunRequest, *, imports: list[BillTotals], allocation: Allocation,
                   report: bytes) -> RunManifest:
    """Everything needed to explain and repeat the run; no clock, so equal inputs give equal manifests."""
    return RunManifest(
        period=request.period,
        tool_version=__version__,
        rules_digest=rules_digest(request.rules),
        usage=None if request.usage is None else UsageInput(
            digest=usage_digest(request.usage), namespaces=len(request.usage),
            source="file" if request.coverage is None else "prometheus", coverage=request.coverage),
        bills=tuple(_bill_input(bill) for bill in imports),
        rows=RowCounts(input=sum(bill.input_rows for bill in imports),
                       accepted=sum(bill.accepted_rows for bill in imports),
                       rejected=sum(len(bill.rejected) for bill in imports),
                       out_of_period=sum(bill.out_of_period_rows for bill in imports)),
        totals=_totals(imports, allocation, request.rules),
        namespace_map=allocation.namespace_map,
        namespace_shares=allocation.namespace_shares,
        report=ReportDigest(format=request.report_format, sha256=hashlib.sha256(report).hexdigest(),
                            rows=len(allocation.rows)),
        carrying=CostCarrying(unattributable=request.rules.unattributable, idle=request.rules.idle),
    )


def _bill_input(bill: BillTotals) -> BillInput:
    return BillInput(path=bill.source, sha256=bill.sha256, format=bill.bill_format, input_rows=bill.input_rows,
                     accepted_rows=bill.accepted_rows, rejected_rows=len(bill.rejected),
                     out_of_period_rows=bill.out_of_period_rows, cost_column=bill.cost_column)


def _totals(imports: list[BillTotals], allocation: Allocation, rules: Rules) -> dict[str, CurrencyTotals]:
    """Per currency: the accepted bill (exact and rounded), what was allocated and left unallocated, and
    the out-of-period amount set aside."""
    rounded = rounded_bill_totals(allocation, rules)
    allocated: dict[str, Decimal] = defaultdict(Decimal)
    unallocated: dict[str, Decimal] = defaultdict(Decimal)
    for row in allocation.rows:
        (unallocated if row.company == NO_COMPANY else allocated)[row.currency] += row.amount
    out_of_period: dict[str, Decimal] = defaultdict(Decimal)
    for bill in imports:
        for currency, amount in bill.out_of_period_totals().items():
            out_of_period[currency] += amount
    currencies = sorted(set(allocation.bill_totals) | set(out_of_period))
    quantum = {currency: Decimal(1).scaleb(-report_precision(rules, currency)) for currency in currencies}
    return {
        currency: CurrencyTotals(
            bill=allocation.bill_totals.get(currency, Decimal(0)),
            bill_rounded=rounded.get(currency, Decimal(0)),
            allocated=allocated[currency].quantize(quantum[currency]),
            unallocated=unallocated[currency].quantize(quantum[currency]),
            out_of_period=out_of_period[currency],
        )
        for currency in currencies
    }
