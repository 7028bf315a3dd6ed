"""The cz-agent command line: allocate, explain, runs, report, usage, serve, close, diff, split, statement,
forecast."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from agent import __version__
from agent.core.bill_formats import AUTO_DETECT, BILL_FORMAT_CHOICES, COLUMN_OVERRIDES, column_option
from agent.core.periods import Period
from agent.core.split import parse_dimensions
from agent.errors import PeriodError, RulesError, SplitError
from agent.outputs.formats import FOCUS_FORMAT, FORECAST_DIMENSIONS, FORMATS

# Only the parser and the modules it needs are imported here: `cz-agent --help` answers at once. Each command
# imports what it runs (pandas, Arrow, SQLAlchemy, the web server, the Kubernetes client) when it runs.
if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy import Engine

    from agent.bills import ImportOptions
    from agent.core.bill_limits import BillLimits
    from agent.core.rules import Rules
    from agent.core.model import StoredRun
    from agent.core.split import BillSplit
    from agent.pipeline import RowsProgress, StageProgress
    from agent.settings import Settings
    from agent.sources.live import LiveUsage
    from agent.store.remote import RemoteRuns
    from agent.store.runs import LocalRuns

log = logging.getLogger(__name__)
# The commands that only read stored runs, and so can read them from an agent's API (--server).
REMOTE_COMMANDS = ("runs", "report", "explain", "statement", "diff", "split", "forecast")
_PIPED_WIDTH = 200
# The garbage collector's thresholds for a one-off command, as mypy sets its own: such a run keeps hundreds of
# thousands of small objects (imported modules, bill groups, daily costs, report rows) and makes few reference
# cycles, so collecting every 700 allocations mostly rescans live objects (a tenth of a 2 M-line allocation).
_COMMAND_GC_THRESHOLDS = (50_000, 20, 20)


def period_argument(text: str) -> str:
    """A `--period` value: the period's own text, `YYYY-MM`."""
    try:
        return str(Period.parse(text))
    except PeriodError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cz-agent", description="Exact chargeback of cloud bills to companies "
                                     "and services.")
    parser.add_argument("--version", action="version", version=f"cz-agent {__version__}")
    parser.add_argument("--store", metavar="URL", help="run store, a SQLAlchemy URL (default: CZ_AGENT_STORE_URL, "
                        "else SQLite under $XDG_DATA_HOME/cz-agent)")
    parser.add_argument("--server", dest="remote", metavar="URL",
                        help="read the runs of the agent serving at URL (its HTTP API; e.g. through kubectl "
                             "port-forward) instead of a local store: for " + ", ".join(REMOTE_COMMANDS))
    parser.add_argument("--token-file", dest="remote_token_file", type=Path, metavar="FILE",
                        help="with --server: a file holding the agent's API token")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_allocate(commands)
    _add_explain(commands)
    _add_runs(commands)
    _add_report(commands)
    _add_usage(commands)
    _add_service_commands(commands)
    _add_split(commands)
    _add_statement(commands)
    _add_forecast(commands)
    return parser


def _add_allocate(commands: argparse._SubParsersAction) -> None:
    allocate = commands.add_parser("allocate", help="allocate a month's bill and store the run")
    allocate.add_argument("--bill", action="append", default=[], type=Path, metavar="FILE",
                          help="bill file (CSV, CSV.gz, Parquet, XLSX); repeat for several (none where the rules "
                               "read the bill from a Trino or Athena table)")
    allocate.add_argument("--rules", required=True, type=Path, metavar="RULES.yaml")
    allocate.add_argument("--usage", type=Path, metavar="USAGE.csv",
                          help="namespace memory usage (cluster,namespace,service,memory_byte_seconds); without "
                          "it, usage comes from Prometheus and the namespace map from Kubernetes (rules' clusters:)")
    allocate.add_argument("--period", required=True, type=period_argument, metavar="YYYY-MM")
    allocate.add_argument("--out", required=True, type=Path, metavar="REPORT")
    allocate.add_argument("--format", choices=FORMATS, help="report format (default: from --out, else csv)")
    allocate.add_argument("--rejects", type=Path, metavar="FILE",
                          help="where to list rejected rows (default: REPORT.rejects.csv, when there are any)")
    allocate.add_argument("--strict", action="store_true", help="fail when any bill row is rejected")
    columns = allocate.add_argument_group("bill columns (each overrides the guess and the rules' bill: section)")
    columns.add_argument("--bill-format", choices=BILL_FORMAT_CHOICES)
    _add_column_flags(columns)


def _add_run_choice(command: argparse.ArgumentParser) -> None:
    choice = command.add_mutually_exclusive_group(required=True)
    choice.add_argument("--run", type=int, metavar="ID", help="a stored run's id")
    choice.add_argument("--period", type=period_argument, metavar="YYYY-MM", help="the period's latest run")


def _add_explain(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser("explain", help="why a company pays what it pays for a service")
    _add_run_choice(explain)
    explain.add_argument("--company", required=True, help="company (use '' for unallocated cost)")
    explain.add_argument("--service", help="service code (default: every service; '' for the common pool)")


def _add_runs(commands: argparse._SubParsersAction) -> None:
    runs = commands.add_parser("runs", help="list stored runs")
    runs.add_argument("--period", type=period_argument, metavar="YYYY-MM")


def _add_report(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser("report", help="export a stored run's report")
    _add_run_choice(report)
    report.add_argument("--out", required=True, type=Path, metavar="FILE")
    report.add_argument("--format", choices=(*FORMATS, FOCUS_FORMAT),
                        help=f"{FOCUS_FORMAT}: FOCUS 1.2 columns, as Parquet when FILE ends with .parquet, else CSV")


def _add_usage(commands: argparse._SubParsersAction) -> None:
    usage = commands.add_parser("usage", help="write the live usage table (Prometheus + Kubernetes) for offline "
                                "replay")
    usage.add_argument("--rules", required=True, type=Path, metavar="RULES.yaml")
    usage.add_argument("--period", required=True, type=period_argument, metavar="YYYY-MM")
    usage.add_argument("--out", required=True, type=Path, metavar="USAGE.csv")


def _add_service_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the agent: scheduled jobs, /metrics and the HTTP API")
    serve.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file (CZ_AGENT_* variables "
                       "override it; default: CZ_AGENT_CONFIG_FILE)")
    serve.add_argument("--once", action="store_true", help="run the import and allocation jobs once and exit")
    close = commands.add_parser("close", help="freeze a period at its latest run; later bills restate it")
    close.add_argument("--period", required=True, type=period_argument, metavar="YYYY-MM")
    push = commands.add_parser("push", help="put a bill downloaded by hand into the agent's inbox (checked first)")
    push.add_argument("file", type=Path, metavar="FILE")
    push.add_argument("--period", type=period_argument, metavar="YYYY-MM",
                      help="the bill's period: its folder in the inbox, and the period of rows without dates")
    push.add_argument("--name", help="file name in the inbox (default: FILE's name); a file of that name is replaced")
    where = push.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", metavar="URL", help="the agent's URL (POST /api/v1/bills)")
    where.add_argument("--inbox", type=Path, metavar="DIR", help="a local inbox directory")
    push.add_argument("--token-file", type=Path, metavar="FILE",
                      help="file holding the API token (default: CZ_AGENT_API_TOKEN)")
    push.add_argument("--rules", type=Path, metavar="RULES.yaml", help="with --inbox: the rules whose bill: section "
                      "says how to read the bill")
    diff = commands.add_parser("diff", help="what changed between two runs, per company and service")
    diff.add_argument("run_a", type=int, metavar="RUN_A")
    diff.add_argument("run_b", type=int, metavar="RUN_B")


def _dimensions_argument(text: str) -> tuple[str, ...]:
    try:
        return parse_dimensions(text)
    except SplitError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _precision_argument(text: str) -> int:
    if not text.isdigit() or int(text) > 12:
        raise argparse.ArgumentTypeError(f"expected a number of decimals from 0 to 12, got {text!r}")
    return int(text)


def _add_split(commands: argparse._SubParsersAction) -> None:
    split = commands.add_parser("split", help="split a bill (or a stored run's bill) by sub-account, workspace and "
                                "API key")
    split.add_argument("--bill", action="append", default=[], type=Path, metavar="FILE",
                       help="bill file (CSV, CSV.gz, Parquet, XLSX); repeat for several. Without --bill: the bill of "
                            "the period's latest stored run, or of --run")
    split.add_argument("--period", required=True, type=period_argument, metavar="YYYY-MM")
    split.add_argument("--run", type=int, metavar="ID", help="without --bill: a stored run of the period")
    split.add_argument("--by", required=True, type=_dimensions_argument, metavar="DIMS",
                       help="comma-separated, in grouping order: subaccount, workspace, apikey")
    split.add_argument("--out", required=True, type=Path, metavar="OUT.csv")
    split.add_argument("--precision", type=_precision_argument, metavar="N",
                       help="decimals of the amounts (default: each currency's minor unit)")
    split.add_argument("--strict", action="store_true", help="fail when any bill row is rejected")
    columns = split.add_argument_group("bill columns (each overrides the guess)")
    columns.add_argument("--bill-format", choices=BILL_FORMAT_CHOICES, default=AUTO_DETECT)
    _add_column_flags(columns, tag_help="ignored: a split does not read tags (accepted so that allocate's column "
                      "flags can be reused)")
    columns.add_argument("--currency", metavar="CODE", help="currency of rows without one")


def _add_column_flags(columns: argparse._ArgumentGroup, *, tag_help: str | None = None) -> None:
    helps = {"cost": "e.g. BilledCost for FOCUS", "tag": tag_help}
    for column in COLUMN_OVERRIDES:
        columns.add_argument(f"--{column.replace('_', '-')}-column", dest=column_option(column), metavar="NAME",
                             help=helps.get(column))


def _add_statement(commands: argparse._SubParsersAction) -> None:
    statement = commands.add_parser("statement", help="a company's chargeback statement (HTML and CSV)")
    statement.add_argument("--period", required=True, type=period_argument, metavar="YYYY-MM")
    statement.add_argument("--company", required=True)
    statement.add_argument("--out", required=True, type=Path, metavar="FILE.html")
    statement.add_argument("--csv", type=Path, metavar="FILE", help="the statement's rows (default: FILE.csv)")
    statement.add_argument("--run", type=int, metavar="ID", help="a stored run of the period (default: its latest)")
    statement.add_argument("--rules", type=Path, metavar="RULES.yaml", help="rules whose budgets: give the company's "
                           "monthly budget, shown beside its cost and the open month's forecast")


def _add_forecast(commands: argparse._SubParsersAction) -> None:
    forecast = commands.add_parser("forecast", help="the month-end cost of a period, from its bill so far, with a "
                                   "range")
    forecast.add_argument("--period", required=True, type=period_argument, metavar="YYYY-MM")
    forecast.add_argument("--aggregate", choices=FORECAST_DIMENSIONS,
                          help="sum by one dimension (default: company, service and category)")
    forecast.add_argument("--out", type=Path, metavar="FILE.csv", help="also write the rows as CSV, exact")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        gc.set_threshold(*_COMMAND_GC_THRESHOLDS)
    from rich.console import Console
    from rich.markup import escape

    from agent.core.text import one_line
    from agent.errors import AgentError
    from agent.settings import load_settings

    # No emoji codes: a name like `:fire:` from a bill is printed as written.
    console = Console(soft_wrap=True, emoji=False)
    if not console.is_terminal:
        # Piped or captured output is read by scripts and logs: do not truncate tables to 80 columns.
        console.width = _PIPED_WIDTH
    try:
        settings = load_settings(getattr(args, "config", None))
        if args.command == "serve":
            from agent.logs import configure_logging
            configure_logging(level=settings.log_level, log_format=settings.log_format)
        else:
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        if args.remote is not None and getattr(args, "bill", None):
            raise AgentError("--server reads an agent's stored runs: split without --bill splits the run's bill")
        if args.remote is not None and args.command not in REMOTE_COMMANDS:
            raise AgentError(f"--server reads an agent's stored runs: it serves {', '.join(REMOTE_COMMANDS)}, "
                             f"not {args.command}")
        return _COMMANDS[args.command](args, settings=settings, console=console)
    except AgentError as e:
        errors = Console(stderr=True, soft_wrap=True, emoji=False)
        errors.print(f"[bold red]error:[/] {escape(one_line(str(e)))}", highlight=False)
        return 1


def _store(args: argparse.Namespace, *, settings: Settings) -> Engine:
    from agent.store.runs import open_store
    return open_store(args.store or settings.effective_store_url())


def _stored_runs(args: argparse.Namespace, *, settings: Settings) -> LocalRuns | RemoteRuns:
    """The runs a reading command reads: an agent's over its API with --server, else the local store's."""
    if args.remote is None:
        from agent.store.runs import LocalRuns

        return LocalRuns(_store(args, settings=settings))
    from agent.store.remote import RemoteRuns

    return RemoteRuns(args.remote, token=_api_token(args.remote_token_file, settings=settings))


def _chosen_run(args: argparse.Namespace, *, settings: Settings) -> StoredRun:
    return _run_of(args, runs=_stored_runs(args, settings=settings))


def _run_of(args: argparse.Namespace, *, runs: LocalRuns | RemoteRuns) -> StoredRun:
    """The run a reading command reads: --run, else the latest of --period; a --run of another period than the
    --period also given is refused."""
    stored = runs.load_run(args.run if args.run is not None else runs.latest_run_id(period=args.period))
    if args.period is not None and stored.summary.period != args.period:
        raise PeriodError(f"run {stored.summary.id} is of period {stored.summary.period}, not {args.period}")
    return stored


def _api_token(token_file: Path | None, *, settings: Settings) -> str | None:
    """The agent's API token: from the file given, else the settings' (CZ_AGENT_API_TOKEN, _FILE)."""
    from agent.settings import Settings

    return settings.effective_api_token() if token_file is None else Settings(
        api_token_file=token_file).effective_api_token()


def _statement(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    from datetime import UTC, datetime

    from agent.core.rules import Budgets
    from agent.outputs.statement import statement_context, write_statement
    from agent.sources.rules_file import load_rules

    csv_path = args.csv or args.out.with_suffix(".csv")
    runs = _stored_runs(args, settings=settings)
    stored = _run_of(args, runs=runs)
    budgets = load_rules(args.rules).budgets if args.rules else Budgets()
    context = statement_context(stored, company=args.company, latest=runs.latest_run,
                                today=datetime.now(UTC).date(), budgets=budgets)
    statement = write_statement(stored, company=args.company, html_path=args.out, csv_path=csv_path,
                                context=context)
    console.print(f"statement of {args.company} for {args.period} (run {statement.run_id}) written to "
                  f"{args.out} and {csv_path}", highlight=False, markup=False)
    return 0


def _serve(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    import json

    from agent.service.serve import serve

    engine = _store(args, settings=settings)
    log.info("effective configuration: %s", json.dumps(settings.masked(), sort_keys=True))
    return serve(settings, engine=engine, once=args.once)


def _close(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    from datetime import UTC, datetime

    from agent.store.runs import close_period

    run_id = close_period(_store(args, settings=settings), period=args.period,
                          closed_at=datetime.now(UTC).isoformat(timespec="seconds"))
    console.print(f"period {args.period} closed at run {run_id}; later bills for it create new runs")
    return 0


def _diff(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    from agent.outputs import summary

    runs = _stored_runs(args, settings=settings)
    summary.print_diff(runs.load_run(args.run_a), runs.load_run(args.run_b), console=console)
    return 0


def _usage(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    from agent.core.model import IDLE_NAMESPACE
    from agent.outputs import summary
    from agent.outputs.report import write_atomically
    from agent.sources.rules_file import load_rules
    from agent.sources.usage import format_usage

    live = _live_usage(load_rules(args.rules), settings=settings, engine=_store(args, settings=settings),
                       period=args.period)
    write_atomically(args.out, format_usage(live.usage).encode())
    namespaces = sum(1 for record in live.usage if record.namespace != IDLE_NAMESPACE)
    console.print(f"usage of {namespaces} namespaces in {len(live.coverage)} cluster(s) written to "
                  f"{args.out}", markup=False)
    summary.print_coverage(live.coverage, threshold=settings.coverage_warning_threshold, console=console)
    return 0


def _runs(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    from agent.outputs import summary

    summary.print_runs(_stored_runs(args, settings=settings).list_runs(period=args.period), console=console)
    return 0


def _forecast(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    from datetime import UTC, datetime

    from agent.outputs import summary
    from agent.outputs.forecast import CSV_COLUMNS, forecast_records, period_forecast
    from agent.outputs.report import render_csv, write_atomically

    forecast = period_forecast(args.period, latest=_stored_runs(args, settings=settings).latest_run,
                               today=datetime.now(UTC).date())
    summary.print_forecast(forecast, dimension=args.aggregate, console=console)
    if args.out is not None:
        write_atomically(args.out, render_csv(CSV_COLUMNS, forecast_records(forecast.aggregated(args.aggregate))))
        console.print(f"forecast rows written to {args.out}", highlight=False, markup=False)
    return 0


def _explain(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    from agent.outputs import summary

    summary.print_explanation(_chosen_run(args, settings=settings), company=args.company, service=args.service,
                              console=console)
    return 0


def _report(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    from rich.markup import escape

    from agent.outputs.focus import render_focus
    from agent.outputs.report import format_for, render_report, write_atomically

    stored = _chosen_run(args, settings=settings)
    run_id = stored.summary.id
    report_format = format_for(args.out, args.format)
    if report_format == FOCUS_FORMAT:
        write_atomically(args.out, render_focus(stored, parquet=args.out.suffix.lower() == ".parquet"))
    else:
        write_atomically(args.out, render_report(stored.rows, report_format=report_format))
    console.print(f"run {run_id} ({stored.summary.period}): {len(stored.rows)} rows written to {escape(str(args.out))}")
    return 0


def _live_usage(rules: Rules, *, settings: Settings, engine: Engine, period: str) -> LiveUsage:
    from datetime import UTC, datetime

    from agent.sources.live import collect_live_usage  # the Kubernetes client loads only when live usage is read
    from agent.store.runs import seen_namespace_maps

    return collect_live_usage(rules=rules, settings=settings, period=period,
                              previous_maps=seen_namespace_maps(engine), now=datetime.now(UTC))


def _allocate(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    import time
    from datetime import UTC, datetime

    from agent.outputs import summary
    from agent.outputs.report import format_for, render_csv, write_atomically
    from agent.bills.options import import_options_for
    from agent.pipeline import OVERRIDABLE_COLUMNS, RunRequest, run_allocation, table_queries
    from agent.sources.rules_file import load_rules
    from agent.sources.usage import read_usage

    engine = _store(args, settings=settings)
    rules = load_rules(args.rules)
    if rules.bill.engine == "files" and not args.bill:
        raise RulesError(f"{args.rules}: give the bill with --bill FILE, or read it from a table (bill: engine: trino or "
                         "athena, table: catalog.schema.table)")
    if rules.bill.engine != "files" and args.bill:
        raise RulesError(f"{args.rules}: the rules read the bill from {rules.bill.engine} table {rules.bill.table}: "
                         "give no --bill")
    live = None if args.usage else _live_usage(rules, settings=settings, engine=engine, period=args.period)
    request = RunRequest(
        bills=args.bill,
        period=args.period,
        rules=rules,
        usage=read_usage(args.usage, rules=rules) if args.usage else live.usage,
        import_options=import_options_for(rules, period=args.period, limits=settings.bill_limits(), overrides={
            name: getattr(args, name) for name in OVERRIDABLE_COLUMNS}),
        report_format=format_for(args.out, args.format),
        strict=args.strict,
        coverage=None if live is None else live.coverage,
        queries=table_queries(rules, settings),
    )
    with import_progress(console) as (on_rows, on_stage):
        result = run_allocation(request, engine=engine, created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                                on_rows=on_rows, on_stage=on_stage)
        started = time.monotonic()
        write_atomically(args.out, result.report)
        on_stage(f"wrote {args.out} in {time.monotonic() - started:.1f} s")
    rejects_path = None
    if result.rejected:
        rejects_path = args.rejects or args.out.with_name(args.out.name + ".rejects.csv")
        write_atomically(rejects_path, render_csv(
            ("source", "row", "column", "reason", "raw_cost"),
            ((r.source, r.row, r.column, r.reason, r.raw_cost) for r in result.rejected),
        ))
    summary.print_run(result, rules=rules, out=args.out, rejects_path=rejects_path, console=console)
    if live is not None:
        summary.print_coverage(live.coverage, threshold=settings.coverage_warning_threshold, console=console)
    return 0


def _push(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    from agent.bills import ImportOptions
    from agent.bills.options import import_options_for
    from agent.service.upload import push_file, upload_file
    from agent.sources.rules_file import load_rules

    if args.inbox is not None:
        limits = settings.bill_limits()
        options = (import_options_for(load_rules(args.rules), period=None, limits=limits) if args.rules
                   else ImportOptions(limits=limits))
        placed = push_file(args.file, inbox_dir=args.inbox, name=args.name, period=args.period, options=options)
    else:
        placed = upload_file(args.file, server=args.server, token=_api_token(args.token_file, settings=settings),
                             name=args.name, period=args.period)
    for line in placed.describe():
        console.print(line, highlight=False, markup=False, emoji=False)
    return 0


def _split(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    import functools

    from agent.bills import total_bill
    from agent.bills.grouping import bill_lines, split_bill
    from agent.errors import RejectedRowsError
    from agent.outputs.split_summary import summary_lines
    from agent.pipeline import read_distinct

    if not args.bill:
        return _split_stored(args, settings=settings, console=console)
    if args.run is not None:
        raise SplitError("--run splits a stored run's bill: give it without --bill")
    limits = settings.bill_limits()
    with import_progress(console) as (on_rows, _):
        imports = read_distinct(args.bill, lambda path: total_bill(
            path, options=_split_import_options(args, path, limits=limits),
            on_rows=None if on_rows is None else functools.partial(on_rows, path)))
    rejected = [reject for bill in imports for reject in bill.rejected]
    if args.strict and rejected:
        raise RejectedRowsError(f"{len(rejected)} bill row(s) rejected (--strict); first: {rejected[0].message()}")
    result = split_bill(bill_lines(imports), columns=args.by, precision=args.precision)
    return _written_split(result, args=args, console=console,
                          lines=summary_lines(result, imports=imports, out=str(args.out)))


def _split_stored(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    from agent.bills.grouping import split_bill
    from agent.outputs.split_summary import split_items, stored_summary_lines

    stored = _chosen_run(args, settings=settings)
    result = split_bill(split_items(stored), columns=args.by, precision=args.precision)
    return _written_split(result, args=args, console=console,
                          lines=stored_summary_lines(result, stored=stored, out=str(args.out)))


def _written_split(result: BillSplit, *, args: argparse.Namespace, console: Console, lines: list[str]) -> int:
    """Write the split's rows to --out, then print its summary lines."""
    from agent.outputs.report import render_csv, write_atomically

    write_atomically(args.out, render_csv(result.header(), result.records()))
    for line in lines:
        console.print(line, highlight=False, markup=False, emoji=False)
    return 0


def _split_import_options(args: argparse.Namespace, path: Path, *, limits: BillLimits) -> ImportOptions:
    # The split does not use tags: reading the first column as a plain tag value keeps a malformed tag
    # object (say, broken JSON in Tags) from rejecting a row whose cost is valid.
    from agent.bills import ImportOptions
    from agent.bills.reader import read_header

    header = read_header(path, source=str(path), limits=limits) if path.is_file() else []
    return ImportOptions(period=args.period, bill_format=args.bill_format, cost_column=args.cost_column,
                         tag_column=header[0] if header else None, currency_column=args.currency_column,
                         sub_account_column=args.sub_account_column, workspace_column=args.workspace_column,
                         api_key_column=args.api_key_column, default_currency=args.currency, limits=limits)


_COMMANDS = {"allocate": _allocate, "explain": _explain, "runs": _runs, "report": _report, "usage": _usage,
             "serve": _serve, "close": _close, "push": _push, "diff": _diff, "split": _split,
             "statement": _statement, "forecast": _forecast}


@contextmanager
def import_progress(console: Console) -> Iterator[tuple[RowsProgress | None, StageProgress]]:
    """On a terminal, a bar per bill (bytes read of the file's size, rate, time left, rows) and a line per stage
    done; when the output is piped or captured, only the stage lines, on stderr, for logs."""
    if not console.is_terminal:
        yield None, lambda line: print(line, file=sys.stderr, flush=True)
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, SpinnerColumn, TaskID, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[rows]:,} rows"))
    with Progress(*columns, console=console, transient=True) as progress:
        tasks: dict[Path, TaskID] = {}

        def on_rows(path: Path, rows: int, done: int | None) -> None:
            if path not in tasks:
                tasks[path] = progress.add_task(f"reading {path}", total=path.stat().st_size, rows=0)
            task = tasks[path]
            progress.update(task, rows=progress.tasks[task].fields["rows"] + rows,
                            **({} if done is None else {"completed": done}))

        def on_stage(line: str) -> None:
            progress.console.print(line, style="dim", highlight=False, markup=False, emoji=False)

        yield on_rows, on_stage


if __name__ == "__main__":
    sys.exit(main())
