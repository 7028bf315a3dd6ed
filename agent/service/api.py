"""The HTTP API: stored allocations, runs, explanations and periods (JSON or CSV), companies' statements (HTML),
/metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import threading
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent import __version__
from agent.bills import ImportOptions
from agent.core.model import Contribution, NamespaceRow, ReportRow, RunSummary, StoredRun, TagLine
from agent.core.namespaces import namespace_rows
from agent.core.periods import PERIOD_PATTERN, Period
from agent.core.rules import Budgets
from agent.core.split import parse_dimensions as parse_split_dimensions
from agent.errors import AgentError, BodyTooLarge, NoCostError, PeriodError, SplitError, StatementError, StoreError
from agent.outputs.explain import exact_amount_text, select_explanation
from agent.outputs.forecast import CSV_COLUMNS as FORECAST_CSV_COLUMNS
from agent.outputs.forecast import forecast_records, period_forecast
from agent.outputs.formats import FORECAST_DIMENSIONS
from agent.outputs.report import render_csv
from agent.outputs.split_summary import split_items
from agent.outputs.statement import build_statement, render_html, statement_context
from agent.service.metrics import exposition, newest_by_period
from agent.service.upload import place, staging
from agent.store.runs import list_runs, load_run, run_document

log = logging.getLogger(__name__)
T = TypeVar("T")

REPORT_DIMENSIONS = ("company", "service", "category", "cluster")
DIMENSIONS = (*REPORT_DIMENSIONS, "namespace")
# A namespace is named within its cluster and belongs to one service: keeping it keeps them.
NAMESPACE_KEEPS = ("service", "cluster", "namespace")
_RATIO_PLACES = Decimal("1e-12")

# The pattern is published in the OpenAPI document (and gives FastAPI's usual 422 message); Period.parse then
# refuses what the pattern alone lets through (year 0000, digits of other scripts).
PeriodQuery = Annotated[str, Query(pattern=PERIOD_PATTERN, description="billing period, YYYY-MM"),
                        AfterValidator(lambda text: str(Period.parse(text)))]
# Every request the API answers but an upload is a GET with a short query: anything far larger is refused before
# routing. An upload's body has its own limit (Settings.upload_max_bytes).
MAX_QUERY_BYTES = 4 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
UPLOAD_PATH = "/api/v1/bills"
PUBLIC_PATHS = ("/healthz", "/readyz")


# ------------------------------------------------------------------------------------------ response models


class RunOut(BaseModel):
    id: int
    period: str
    created_at: str
    tool_version: str
    report_sha256: str
    totals: dict[str, dict[str, str]]
    warnings: list[str] = Field(description="what a reader of the run should know, e.g. a period made of stray "
                                            "rows of other periods' bills")


class PeriodLinesOut(BaseModel):
    lines: int
    totals: dict[str, str]


class BillOut(BaseModel):
    """An uploaded bill as the next run will see it."""

    path: str = Field(description="where it is in the inbox")
    sha256: str
    format: str
    replaced: bool = Field(description="a file of that name was there and is replaced")
    input_rows: int
    rejected_rows: int
    periods: dict[str, PeriodLinesOut] = Field(description="accepted lines and their totals per period")


class RunDetailOut(RunOut):
    manifest: dict[str, Any]


class RunListOut(BaseModel):
    runs: list[RunOut]


class PeriodOut(BaseModel):
    period: str
    latest_run_id: int
    runs: int
    totals: dict[str, dict[str, str]]


class PeriodListOut(BaseModel):
    periods: list[PeriodOut]


class RunRefOut(BaseModel):
    period: str
    run_id: int


class AllocationsOut(BaseModel):
    run_id: int | None = Field(description="the run the rows are of; null for a window of several months")
    period: str = Field(description="the month, or the window `FIRST..LAST`")
    accumulate: bool = Field(description="true: rows summed over the window's months (their period is the "
                                         "window); false: each month's rows with its period")
    runs: list[RunRefOut] = Field(description="the run read for each month of the window (its latest)")
    missing: list[str] = Field(description="months of the window with no stored run, left out of the rows")
    rows: list[dict[str, str]] = Field(description="period, the dimensions kept, amount and currency; with "
                                       "namespace, memory_share and memory_share_ratio too (\"\" where no namespace "
                                       "or a window's months disagree)")


class ForecastOut(BaseModel):
    period: str
    run_id: int = Field(description="the period's latest run, whose bill so far the forecast starts from")
    as_of: str = Field(description="the last complete day of that bill, YYYY-MM-DD")
    rows: list[dict[str, str]] = Field(description="period, the dimensions kept, currency, and the month-end expected "
                                       "cost with its lower and upper bounds (exact decimal text)")


class ShareOut(BaseModel):
    fraction: str
    ratio: str


class ContributionOut(BaseModel):
    company: str
    service: str
    category: str
    cluster: str
    namespace: str
    tag: str
    reason: str
    # The attribution rule that claimed untagged lines, "" if none.
    rule: str
    target_share: ShareOut
    company_share: ShareOut
    amount: str
    currency: str


class NamespaceOut(BaseModel):
    """The part of a report row that came through one namespace; its amounts add up to the row's."""

    service: str
    category: str
    cluster: str
    namespace: str = Field(description="\"\" for cost that came through no namespace")
    memory_share: ShareOut | None = Field(description="the namespace's share of its cluster's usage (memory, or "
                                                      "the cluster's usage_basis), applied to the cluster's bill "
                                                      "lines; null without a namespace")
    amount: str
    currency: str


class BillLinesOut(BaseModel):
    tag: str
    rule: str
    currency: str
    amount: str
    line_count: int
    rows_by_source: dict[str, str]


class SplitOut(BaseModel):
    run_id: int
    period: str
    columns: list[str]
    rows: list[dict[str, str]]


class ExplanationOut(BaseModel):
    run_id: int
    period: str
    company: str
    service: str | None
    rows: list[dict[str, str]]
    namespaces: list[NamespaceOut] = Field(description="the rows by namespace, rounded to add up to each row")
    contributions: list[ContributionOut]
    bill_lines: list[BillLinesOut]


# ------------------------------------------------------------------------------------------- the store


def not_found(detail: str) -> HTTPException:
    return HTTPException(status_code=404, detail=detail)


def bad_parameter(name: str, detail: str) -> RequestValidationError:
    """A 422 shaped like FastAPI's own (`detail`: a list of errors), as the OpenAPI document promises."""
    return RequestValidationError([{"loc": ("query", name), "msg": detail, "type": "value_error"}])


class RunReader:
    """Stored runs for the endpoints; loaded runs are cached by id since a stored run never changes."""

    def __init__(self, engine: Engine, *, cache_size: int = 16) -> None:
        self._engine = engine
        self._cache_size = cache_size
        self._cache: OrderedDict[int, StoredRun] = OrderedDict()
        self._namespaces: OrderedDict[int, list[NamespaceRow]] = OrderedDict()
        self._lock = threading.Lock()

    def summaries(self, period: str | None = None) -> list[RunSummary]:
        return list_runs(self._engine, period=period)

    def summary(self, run_id: int) -> RunSummary:
        for run in self.summaries():
            if run.id == run_id:
                return run
        raise not_found(f"no stored run with id {run_id}")

    def latest(self, period: str) -> RunSummary:
        found = self.summaries(period)
        if not found:
            raise not_found(f"no stored run for period {period}")
        return found[-1]

    def stored(self, run_id: int) -> StoredRun:
        def load() -> StoredRun:
            self.summary(run_id)
            return load_run(self._engine, run_id)

        return self._cached(self._cache, run_id, load)

    def latest_stored(self, period: str) -> StoredRun | None:
        """The period's latest run, None when it has none."""
        found = self.summaries(period)
        return self.stored(found[-1].id) if found else None

    def rows(self, run_id: int, *, by_namespace: bool) -> Sequence[ReportRow] | Sequence[NamespaceRow]:
        """The run's report rows, or each of them split by namespace."""
        stored = self.stored(run_id)
        if not by_namespace:
            return stored.rows
        return self._cached(self._namespaces, run_id, lambda: namespace_rows(stored.rows, stored.contributions))

    def _cached(self, cache: OrderedDict[int, T], run_id: int, make: Callable[[], T]) -> T:
        """The run's entry in `cache`, made once (outside the lock) and kept among the most recently used."""
        with self._lock:
            if run_id in cache:
                cache.move_to_end(run_id)
                return cache[run_id]
        value = make()
        with self._lock:
            cache[run_id] = value
            while len(cache) > self._cache_size:
                cache.popitem(last=False)
        return value


def chosen_run(reader: RunReader, *, period: str | None, run_id: int | None) -> RunSummary:
    if run_id is None:
        if period is None:
            raise bad_parameter("period", "give period=YYYY-MM (its latest run) or run=ID")
        return reader.latest(period)
    summary = reader.summary(run_id)
    if period is not None and summary.period != period:
        raise not_found(f"run {run_id} is of period {summary.period}, not {period}")
    return summary


@dataclass(frozen=True)
class Window:
    """The months a request asks for, first to last inclusive."""

    first: Period
    last: Period

    def months(self) -> list[str]:
        months, month = [], self.first
        while month <= self.last:
            months.append(str(month))
            month = month.next()
        return months

    def label(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}..{self.last}"


# Months one request may span: ten years of monthly runs.
MAX_WINDOW_MONTHS = 120


def parse_window(*, window: str | None, first: str | None, last: str | None, now: datetime) -> Window | None:
    """The months of `window=` (YYYY-MM, `month`, `lastmonth`, or FIRST,LAST as OpenCost writes a range) or of
    `from=`/`to=`; None when neither is given."""
    if window is not None and (first is not None or last is not None):
        raise bad_parameter("window", "give window= or from=/to=, not both")
    if window is not None:
        current = Period.of(now)
        words = {"month": current, "lastmonth": current.previous()}
        parts = [part.strip() for part in window.split(",")]
        try:
            if len(parts) > 2:
                raise PeriodError("more than two months")
            bounds = [words[part] if part in words else Period.parse(part) for part in parts]
        except PeriodError as e:
            raise bad_parameter("window", f"expected YYYY-MM, month, lastmonth or FIRST,LAST months, got "
                                f"{window!r}") from e
        return _window(bounds[0], bounds[-1], name="window")
    if first is None and last is None:
        return None
    if first is None or last is None:
        raise bad_parameter("from" if first is None else "to", "from= and to= come together")
    return _window(Period.parse(first), Period.parse(last), name="to")


def _window(first: Period, last: Period, *, name: str) -> Window:
    window = Window(first, last)
    if last < first:
        raise bad_parameter(name, f"the window ends ({last}) before it starts ({first})")
    if len(window.months()) > MAX_WINDOW_MONTHS:
        raise bad_parameter(name, f"a window spans at most {MAX_WINDOW_MONTHS} months")
    return window


def window_rows(reader: RunReader, window: Window, *, dimensions: tuple[str, ...],
                accumulate: bool) -> AllocationsOut:
    """The latest run of each month of the window, its rows aggregated; summed over the months if `accumulate`."""
    latest = {summary.period: summary for summary in reader.summaries()}
    months = window.months()
    runs = [latest[month] for month in months if month in latest]
    if not runs:
        raise not_found(f"no stored run in {window.label()}")
    rows = [row for run in runs for row in reader.rows(run.id, by_namespace="namespace" in dimensions)]
    if accumulate:
        rows = [replace(row, period=window.label()) for row in rows]
    return AllocationsOut(run_id=runs[0].id if len(months) == 1 else None, period=window.label(),
                          accumulate=accumulate, runs=[RunRefOut(period=run.period, run_id=run.id) for run in runs],
                          missing=[month for month in months if month not in latest],
                          rows=aggregate_rows(rows, dimensions))


# ----------------------------------------------------------------------------------------- allocations


def parse_dimensions(aggregate: str | None) -> tuple[str, ...]:
    """The dimensions to keep; None keeps the report's. `namespace` keeps its service and cluster too."""
    if aggregate is None:
        return REPORT_DIMENSIONS
    asked = {name.strip() for name in aggregate.split(",") if name.strip()}
    unknown = sorted(asked - set(DIMENSIONS))
    if unknown:
        raise bad_parameter("aggregate", f"unknown aggregate dimension(s) {', '.join(unknown)}; "
                            f"choose from {', '.join(DIMENSIONS)}")
    if "namespace" in asked:
        asked.update(NAMESPACE_KEEPS)
    return tuple(name for name in DIMENSIONS if name in asked)


def aggregate_rows(rows: Sequence[ReportRow] | Sequence[NamespaceRow],
                   dimensions: tuple[str, ...]) -> list[dict[str, str]]:
    """Exact sums of the rows over the dimensions not kept; period and currency are always kept. Namespace rows
    also carry the namespace's memory share, where the rows summed agree on one."""
    sums: dict[tuple[str, ...], Decimal] = {}
    shares: dict[tuple[str, ...], set[Fraction | None]] = defaultdict(set)
    for row in rows:
        key = (row.period, *(getattr(row, name) for name in dimensions), row.currency)
        sums[key] = sums[key] + row.amount if key in sums else row.amount
        if isinstance(row, NamespaceRow):
            shares[key].add(row.memory_share)
    names = ("period", *dimensions)
    return [{**dict(zip(names, key[:-1])), **(_memory_share(shares[key]) if key in shares else {}),
             "amount": format(amount, "f"), "currency": key[-1]}
            for key, amount in sums.items()]


def _memory_share(shares: set[Fraction | None]) -> dict[str, str]:
    """The namespace's memory share as ShareOut gives it; "" for cost that came through no namespace, and for a
    window's months summed, whose shares differ."""
    share = next(iter(shares)) if len(shares) == 1 else None
    if share is None:
        return {"memory_share": "", "memory_share_ratio": ""}
    shown = share_out(share)
    return {"memory_share": shown.fraction, "memory_share_ratio": shown.ratio}


def allocations_csv(rows: list[dict[str, str]], *, dimensions: tuple[str, ...], label: str,
                    run_id: int | None) -> Response:
    shares = ("memory_share", "memory_share_ratio") if "namespace" in dimensions else ()
    columns = ("period", *dimensions, *shares, "amount", "currency")
    body = render_csv(columns, ([row[name] for name in columns] for row in rows))
    name = f"allocations-{label}" + ("" if run_id is None else f"-run{run_id}")
    disposition = f'attachment; filename="{name}.csv"'
    return Response(body, media_type="text/csv", headers={"Content-Disposition": disposition})


# ------------------------------------------------------------------------------------------- statement

# The page's own policy, also sent as a header: nothing in it runs or loads.
STATEMENT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def statement_page(reader: RunReader, summary: RunSummary, *, company: str, budgets: Budgets) -> HTMLResponse:
    """The company's HTML statement of the run, beside the latest run of the month before, its budget and the open
    month's forecast, as `cz-agent statement` writes it."""
    stored = reader.stored(summary.id)
    context = statement_context(stored, company=company, latest=reader.latest_stored, today=datetime.now(UTC).date(),
                                budgets=budgets)
    try:
        statement = build_statement(stored, company=company, context=context)
    except StatementError as e:
        raise not_found(str(e)) from e
    return HTMLResponse(render_html(statement), headers={"Content-Security-Policy": STATEMENT_POLICY})


# --------------------------------------------------------------------------------------------- explain


def explanation(stored: StoredRun, *, company: str, service: str | None) -> ExplanationOut:
    """The contributions behind a company's amounts (optionally for one service) and their bill lines."""
    try:
        found = select_explanation(stored, company=company, service=service)
    except NoCostError as e:
        raise not_found(str(e)) from e
    return ExplanationOut(
        run_id=stored.summary.id, period=stored.summary.period, company=company, service=service,
        rows=aggregate_rows(found.rows, REPORT_DIMENSIONS),
        namespaces=[namespace_out(row) for row in found.namespaces()],
        contributions=[contribution_out(c) for c in found.contributions],
        bill_lines=[bill_lines_out(line) for line in found.bill_lines()],
    )


def contribution_out(c: Contribution) -> ContributionOut:
    return ContributionOut(company=c.company, service=c.service, category=c.category, cluster=c.cluster,
                           namespace=c.namespace, tag=c.tag, reason=c.reason, rule=c.rule, target_share=share_out(c.target_share),
                           company_share=share_out(c.company_share), amount=exact_amount_text(c.amount),
                           currency=c.currency)


def namespace_out(row: NamespaceRow) -> NamespaceOut:
    return NamespaceOut(service=row.service, category=row.category, cluster=row.cluster, namespace=row.namespace,
                        memory_share=None if row.memory_share is None else share_out(row.memory_share),
                        amount=format(row.amount, "f"), currency=row.currency)


def bill_lines_out(line: TagLine) -> BillLinesOut:
    return BillLinesOut(tag=line.tag, rule=line.rule, currency=line.currency, amount=format(line.amount, "f"),
                        line_count=line.line_count, rows_by_source=line.rows_by_source)


def share_out(share: Fraction) -> ShareOut:
    ratio = (Decimal(share.numerator) / Decimal(share.denominator)).quantize(_RATIO_PLACES).normalize()
    return ShareOut(fraction=str(share), ratio=format(ratio, "f"))


# ------------------------------------------------------------------------------------------ runs, periods


def run_out(run: RunSummary) -> RunOut:
    return RunOut(id=run.id, period=run.period, created_at=run.created_at, tool_version=run.tool_version,
                  report_sha256=run.report_sha256, totals=run.manifest.totals_json(),
                  warnings=[warning for warning in (run.manifest.stray_rows(),) if warning])


def periods_out(found: list[RunSummary]) -> list[PeriodOut]:
    """Each period with its latest run (the highest id) and that run's totals, newest period first."""
    newest = newest_by_period(found)
    runs = Counter(run.period for run in found)
    return [PeriodOut(period=period, latest_run_id=newest[period].id, runs=runs[period],
                      totals=newest[period].manifest.totals_json()) for period in sorted(newest, reverse=True)]


# ----------------------------------------------------------------------------------------------- routes


def api_router(reader: RunReader, *, budgets: Callable[[], Budgets] = Budgets) -> APIRouter:
    router = APIRouter(tags=["allocations"])

    @router.get("/allocations", response_model=AllocationsOut,
                responses={200: {"content": {"text/csv": {}}, "description": "the rows as JSON or CSV"}})
    def allocations(
        period: PeriodQuery | None = None,
        run: Annotated[int | None, Query(description="a stored run's id (default: the period's latest)")] = None,
        window: Annotated[str | None, Query(description="months as OpenCost names them: YYYY-MM, `month` (this "
                                            "one), `lastmonth`, or FIRST,LAST (YYYY-MM,YYYY-MM)")] = None,
        first: Annotated[str | None, Query(alias="from", pattern=PERIOD_PATTERN,
                                           description="first month of a window, YYYY-MM (with to=)")] = None,
        last: Annotated[str | None, Query(alias="to", pattern=PERIOD_PATTERN,
                                          description="last month of a window, YYYY-MM (with from=)")] = None,
        accumulate: Annotated[bool, Query(description="sum a window's months (true) or list each month's rows "
                                          "(false)")] = False,
        aggregate: Annotated[str | None, Query(description="dimensions to keep, comma-separated, from "
                                               + ",".join(DIMENSIONS) + " (default: every one but namespace). "
                                               "namespace splits each row by the Kubernetes namespaces whose "
                                               "memory share brought its cost (\"\" for cost that came through "
                                               "none), keeps the namespace's service and cluster, and adds its "
                                               "memory_share (exact fraction) and memory_share_ratio")] = None,
        report_format: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
    ) -> AllocationsOut | Response:
        dimensions = parse_dimensions(aggregate)
        months = parse_window(window=window, first=first, last=last, now=datetime.now(UTC))
        if months is not None and (period is not None or run is not None):
            raise bad_parameter("window", "give a window (window=, from=/to=) or period=/run=, not both")
        if months is None:
            summary = chosen_run(reader, period=period, run_id=run)
            found = AllocationsOut(run_id=summary.id, period=summary.period, accumulate=accumulate,
                                   runs=[RunRefOut(period=summary.period, run_id=summary.id)], missing=[],
                                   rows=aggregate_rows(reader.rows(summary.id, by_namespace="namespace" in dimensions),
                                                       dimensions))
        else:
            found = window_rows(reader, months, dimensions=dimensions, accumulate=accumulate)
        if report_format == "csv":
            return allocations_csv(found.rows, dimensions=dimensions, label=found.period, run_id=found.run_id)
        return found

    @router.get("/split", response_model=SplitOut,
                responses={200: {"content": {"text/csv": {}}, "description": "the rows as JSON or CSV"}})
    def split(
        period: PeriodQuery | None = None,
        run: Annotated[int | None, Query(description="a stored run's id (default: the period's latest)")] = None,
        by: Annotated[str, Query(description="subaccount, workspace, apikey: comma-separated, in order")]
        = "workspace,apikey",
        report_format: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
    ) -> SplitOut | Response:
        """The run's accepted bill split by sub-account, workspace and API key, as `cz-agent split` does."""
        # Imported here: pandas is by far the largest part of an idle agent's memory, and only a split needs it.
        from agent.bills.grouping import split_bill

        try:
            columns = parse_split_dimensions(by)
        except SplitError as e:
            raise bad_parameter("by", str(e)) from e
        summary = chosen_run(reader, period=period, run_id=run)
        result = split_bill(split_items(reader.stored(summary.id)), columns=columns)
        if report_format == "csv":
            return Response(render_csv(result.header(), result.records()), media_type="text/csv")
        return SplitOut(run_id=summary.id, period=summary.period, columns=list(result.header()),
                        rows=[dict(zip(result.header(), record)) for record in result.records()])

    @router.get("/forecast", response_model=ForecastOut,
                responses={200: {"content": {"text/csv": {}}, "description": "the rows as JSON or CSV"}})
    def forecast(
        period: PeriodQuery,
        aggregate: Annotated[Literal[FORECAST_DIMENSIONS] | None, Query(
            description="sum by one dimension (default: rows by company, service and category)")] = None,
        report_format: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
    ) -> ForecastOut | Response:
        """The period's month-end cost from its bill so far, with a range, as `cz-agent forecast` prints it."""
        # Each period's runs listed once: the forecast asks again for the period it was just checked for.
        latest = functools.cache(reader.latest_stored)
        if latest(period) is None:
            raise not_found(f"no stored run for period {period}: a forecast starts from the month's bill so far")
        found = period_forecast(period, latest=latest, today=datetime.now(UTC).date())
        records = forecast_records(found.aggregated(aggregate))
        if report_format == "csv":
            return Response(render_csv(FORECAST_CSV_COLUMNS, records), media_type="text/csv")
        return ForecastOut(period=found.period, run_id=found.run_id, as_of=found.as_of.isoformat(),
                           rows=[dict(zip(FORECAST_CSV_COLUMNS, record)) for record in records])

    @router.get("/runs")
    def runs(period: PeriodQuery | None = None) -> RunListOut:
        return RunListOut(runs=[run_out(run) for run in reader.summaries(period)])

    @router.get("/runs/{run_id}")
    def run_detail(run_id: int) -> RunDetailOut:
        summary = reader.summary(run_id)
        return RunDetailOut(**run_out(summary).model_dump(), manifest=summary.manifest.to_json())

    @router.get("/runs/{run_id}/document", response_model=dict[str, Any])
    def run_document_of(run_id: int) -> JSONResponse:
        """The whole stored run, exactly (amounts as decimal text, shares as fractions): what `cz-agent --server`
        reads to print runs, reports, explanations, statements and diffs as it would from a local store, and the daily
        costs it forecasts from."""
        return JSONResponse(run_document(reader.stored(run_id)))

    @router.get("/runs/{run_id}/explain")
    def explain(run_id: int, company: Annotated[str, Query(description="'' for unallocated cost")],
                service: Annotated[str | None, Query(description="'' for the common pool")] = None) -> ExplanationOut:
        return explanation(reader.stored(run_id), company=company, service=service)

    @router.get("/statement", response_class=HTMLResponse,
                responses={200: {"content": {"text/html": {}}, "description": "the statement page"}})
    def statement(
        company: Annotated[str, Query(description="the company")],
        period: PeriodQuery | None = None,
        run: Annotated[int | None, Query(description="a stored run's id (default: the period's latest)")] = None,
    ) -> HTMLResponse:
        """A company's chargeback statement (HTML) of a run, as `cz-agent statement` writes it."""
        return statement_page(reader, chosen_run(reader, period=period, run_id=run), company=company,
                              budgets=budgets())

    @router.get("/periods")
    def periods() -> PeriodListOut:
        return PeriodListOut(periods=periods_out(reader.summaries()))

    return router


def operations_router(registry: CollectorRegistry, *, ready: Callable[[], bool],
                      metrics_guard: list[Any]) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", responses={503: {"description": "not ready"}})
    def readyz() -> JSONResponse:
        is_ready = ready()
        return JSONResponse({"status": "ready" if is_ready else "not ready"}, status_code=200 if is_ready else 503)

    @router.get("/metrics", dependencies=metrics_guard, response_class=Response,
                responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus exposition"}})
    def metrics() -> Response:
        return Response(exposition(registry), media_type=CONTENT_TYPE_LATEST)

    return router


@dataclass(frozen=True)
class Uploads:
    """Where uploaded bills go and how they are read (the rules' bill: section, read at each upload)."""

    inbox_dir: Path
    import_options: Callable[[], ImportOptions]
    max_bytes: int
    # Without an API token anyone could change the bill: uploads are then refused.
    enabled: bool = True


def uploads_router(uploads: Uploads) -> APIRouter:
    router = APIRouter(tags=["bills"])
    # One upload is read at a time: reading a bill takes memory, as an allocation run does.
    reading = asyncio.Lock()

    @router.post("/bills", status_code=201, response_model=BillOut,
                 responses={413: {"description": "larger than the upload limit"},
                            422: {"description": "not a bill the inbox can take; nothing is kept"},
                            429: {"description": "another upload is being read"}},
                 openapi_extra={"requestBody": {"required": True, "description": "the bill file's bytes",
                                                "content": {"application/octet-stream": {}}}})
    async def upload_bill(
        request: Request,
        name: Annotated[str, Query(description="file name, with a .csv, .gz, .parquet or .xlsx suffix")],
        period: Annotated[str | None, Query(pattern=PERIOD_PATTERN, description="the billing period, YYYY-MM: "
                                            "the folder it goes to, and the period of rows without dates")] = None,
    ) -> BillOut:
        if not uploads.enabled:
            raise HTTPException(status_code=403, detail="bill uploads need an API token (CZ_AGENT_API_TOKEN): "
                                "without one, anyone could change the bill")
        if reading.locked():
            raise HTTPException(status_code=429, detail="another bill upload is being read; try again shortly",
                                headers={"Retry-After": "5"})
        async with reading:
            try:
                with staging(uploads.inbox_dir, name) as staged:
                    with staged.open("xb") as file:
                        async for chunk in request.stream():
                            file.write(chunk)
                    placed = await run_in_threadpool(place, staged, inbox_dir=uploads.inbox_dir, name=name,
                                                     period=period, options=uploads.import_options())
            except (BodyTooLarge, StoreError):
                raise
            except AgentError as e:
                raise HTTPException(status_code=422, detail=str(e)) from e
            except ClientDisconnect as e:
                log.warning("upload of %s: the client went away before the body ended; nothing kept", name)
                raise HTTPException(status_code=400, detail="the upload ended before its body did") from e
        log.info("upload: %s (%s) placed in the inbox", placed.path, placed.sha256[:12])
        return BillOut(**{**vars(placed), "periods": {p: PeriodLinesOut(**seen) for p, seen in placed.periods.items()}})

    return router


def known_parameters(request: Request) -> None:
    """A 400 naming the query parameters the endpoint does not take, and those it does: a misspelt or foreign
    parameter (`accumulate` where `aggregate` was meant) must not be ignored in silence."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    accepted = _query_names(dependant)
    unknown = sorted(set(request.query_params) - accepted)
    if unknown:
        raise HTTPException(status_code=400, detail=f"unknown query parameter(s) {', '.join(unknown)}; "
                                                    f"{request.url.path} takes {', '.join(sorted(accepted)) or 'none'}")


def _query_names(dependant: Any) -> set[str]:
    return {field.alias for field in dependant.query_params}.union(
        *(_query_names(inner) for inner in dependant.dependencies))


def bearer_guard(api_token: str) -> Callable[..., None]:
    """A dependency requiring `Authorization: Bearer <api_token>`, declared as an OpenAPI security scheme."""
    scheme = HTTPBearer(auto_error=False, scheme_name="bearerToken", description="the agent's API token")
    expected = api_token.encode()

    # A default, not Annotated: the closure's `scheme` is invisible to the postponed annotation's evaluation.
    def require_token(credentials: HTTPAuthorizationCredentials | None = Security(scheme)) -> None:
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), expected):
            raise HTTPException(status_code=401, detail="a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})

    return require_token


async def store_unavailable(_request: Request, error: Exception) -> JSONResponse:
    log.warning("API request failed on the run store: %s", error)
    return JSONResponse({"detail": str(error)}, status_code=503)


class RequestLimits:
    """Refuses oversized query strings (414), header sets (431) and bodies (413) before the app reads them.

    uvicorn's h11 parser already drops a request line plus headers over its own 16 KiB buffer; these limits
    hold whatever server runs the app, and cover bodies, which the server streams without a limit. A bill upload's
    body may be as large as `upload_max_bytes`.
    """

    def __init__(self, app: ASGIApp, *, upload_max_bytes: int = MAX_BODY_BYTES) -> None:
        self._app = app
        self._upload_max_bytes = upload_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and scope["path"] == UPLOAD_PATH
        max_body = self._upload_max_bytes if upload else MAX_BODY_BYTES
        refusal = _oversize(scope, max_body=max_body)
        if refusal is not None:
            await JSONResponse({"detail": refusal[1]}, status_code=refusal[0])(scope, receive, send)
            return
        await self._app(scope, _bounded_body(receive, max_body=max_body), send)


def _oversize(scope: Scope, *, max_body: int) -> tuple[int, str] | None:
    headers = scope["headers"]
    if len(scope["query_string"]) > MAX_QUERY_BYTES:
        return 414, f"the query string is longer than {MAX_QUERY_BYTES} bytes"
    if sum(len(name) + len(value) for name, value in headers) > MAX_HEADER_BYTES:
        return 431, f"the request headers are larger than {MAX_HEADER_BYTES} bytes"
    length = dict(headers).get(b"content-length", b"0")
    if not length.isdigit() or int(length) > max_body:
        return 413, f"the request body is larger than {max_body} bytes"
    return None


def _bounded_body(receive: Receive, *, max_body: int) -> Receive:
    """`receive`, counting body bytes: a chunked upload has no Content-Length to check up front."""
    received = 0

    async def bounded() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > max_body:
            raise BodyTooLarge(f"the request body is larger than {max_body} bytes")
        return message

    return bounded


async def body_too_large(_request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=413)


def docs_router(app: FastAPI) -> APIRouter:
    """The OpenAPI document behind the token: with auth on, only the health checks are public."""
    router = APIRouter(include_in_schema=False)

    @router.get("/openapi.json")
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    return router


def create_app(
    *,
    engine: Engine,
    registry: CollectorRegistry,
    api_token: str | None = None,
    metrics_token_required: bool = False,
    ready: Callable[[], bool] = lambda: True,
    uploads: Uploads | None = None,
    budgets: Callable[[], Budgets] = Budgets,
) -> FastAPI:
    """The API over the run store; with a token set, everything but /healthz and /readyz requires it (and
    /metrics only if asked, since Prometheus scrapes it). Bill uploads are taken only with a token set."""
    if metrics_token_required and not api_token:
        raise ValueError("metrics_token_required needs an api_token")
    guard = [Depends(bearer_guard(api_token))] if api_token else []
    # With a token, the interactive docs go (a browser cannot send it) and the document is guarded.
    docs: dict[str, Any] = {"openapi_url": None, "docs_url": None, "redoc_url": None} if api_token else {}
    app = FastAPI(title="cz-allocation-agent", version=__version__,
                  description="Exact chargeback of cloud bills to companies and services: the stored runs.", **docs)
    checked = [*guard, Depends(known_parameters)]
    app.include_router(api_router(RunReader(engine), budgets=budgets), prefix="/api/v1", dependencies=checked,
                       responses={400: {"description": "a query parameter the endpoint does not take"}})
    if uploads is not None:
        enabled = uploads if api_token else Uploads(**{**vars(uploads), "enabled": False})
        app.include_router(uploads_router(enabled), prefix="/api/v1", dependencies=checked,
                           responses={400: {"description": "a query parameter the endpoint does not take"}})
    app.include_router(operations_router(registry, ready=ready, metrics_guard=guard if metrics_token_required
                                         else []))
    if api_token:
        app.include_router(docs_router(app), dependencies=guard)
    app.add_exception_handler(StoreError, store_unavailable)
    app.add_exception_handler(BodyTooLarge, body_too_large)
    app.add_middleware(RequestLimits, upload_max_bytes=uploads.max_bytes if uploads else MAX_BODY_BYTES)
    return app
