"""The long-running agent (cz-agent serve): scheduled import and allocation jobs, metrics and the HTTP API."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from agent.bills import ImportOptions
from agent.bills.options import import_options_for
from agent.core.model import RunSummary
from agent.core.periods import Period
from agent.core.rules import Budgets, Rules, rules_digest
from agent.errors import AgentError, PeriodError, SettingsError
from agent.service.api import Uploads, create_app
from agent.service.inbox import Inbox, InboxScan
from agent.service.leader import LeaderCollector, Leadership, SoleReplica, leadership_for
from agent.service.listen import listening_socket
from agent.service.metrics import AllocationCollector, JobStats
from agent.settings import Settings
from agent.sources.objectstore import Mirror, SyncResult, parse_sources
from agent.sources.rules_file import load_rules
from agent.store.runs import closed, list_runs, seen_namespace_maps, store_answers

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class PeriodPlan:
    period: str
    reason: str
    # The period's latest run when planned: a new run equal to it is not stored again.
    latest: RunSummary | None = None


class AgentService:
    """The jobs of the agent. Each job records its outcome; a failure never stops the service, and the last
    good run of every period stays in the store, so it stays served."""

    def __init__(self, *, settings: Settings, engine: Engine, job_stats: JobStats,
                 clock: Clock = lambda: datetime.now(UTC), leadership: Leadership | None = None) -> None:
        if settings.rules_file is None:
            raise SettingsError("the service needs the rules file: set CZ_AGENT_RULES_FILE or rules_file")
        self._settings = settings
        self._engine = engine
        self._stats = job_stats
        self._clock = clock
        self._leadership = leadership or SoleReplica("agent")
        self._inbox: Inbox | None = None
        self._mirror = Mirror(parse_sources(settings.bill_sources), inbox_dir=settings.inbox_dir,
                              settings=settings) if settings.bill_sources else None
        self._scan: InboxScan | None = None
        self._budgets = Budgets()
        self.on_new_bills: Callable[[], None] = lambda: None

    def import_job(self) -> bool:
        return self._timed("import", self._import)

    def allocate_job(self) -> bool:
        return self._timed("allocate", self._allocate)

    def _timed(self, job: str, work: Callable[[], None]) -> bool:
        # Only the leader writes; a follower skips the job (it is not a failure) and keeps serving the store.
        if not self._leadership.is_leading():
            log.debug("job %s skipped: %s is not the leader", job, self._leadership.identity)
            return True
        started = time.monotonic()
        # Start and end name the writer and its lease term, so overlapping writers would show in the logs.
        log.info("job %s started by %s (term %d)", job, self._leadership.identity, self._leadership.term())
        try:
            work()
            outcome = "success"
        except AgentError as e:
            # An expected failure (a source down, a bad bill, the store locked): its reason, no traceback.
            log.error("job %s failed; the last good results stay served: %s", job, e)
            outcome = "failure"
        except Exception:  # noqa: BLE001 - one job's failure must never stop the service
            log.exception("job %s failed; the last good results stay served", job)
            outcome = "failure"
        self._stats.record(job, outcome=outcome, duration_seconds=time.monotonic() - started,
                           finished_at=self._clock().timestamp())
        log.info("job %s ended by %s: %s", job, self._leadership.identity, outcome)
        return outcome == "success"

    def inbox_options(self) -> ImportOptions:
        """How the inbox reads its bills (and an upload is checked): the rules' `bill:` section, the size limits,
        no period (each bill's periods come from its rows and its path)."""
        return import_options_for(self._rules(), period=None, limits=self._settings.bill_limits())

    def _import(self) -> None:
        options = self.inbox_options()
        # Kept between scans, so that unchanged files are not read again; new import options read them anew.
        if self._inbox is None or self._inbox.options != options:
            self._inbox = Inbox(self._settings.inbox_dir, engine=self._engine, options=options)
        # Object storage first: its copies are then read as any bill of the inbox.
        mirrored = self._mirror.sync() if self._mirror is not None else SyncResult()
        previous = self._scan
        self._scan = self._inbox.scan()
        if (previous is None or set(previous.bills) != set(self._scan.bills)
                or previous.incomplete != self._scan.incomplete):
            self.on_new_bills()
        counts = [(len(mirrored.failures), "bill source(s) or object(s) could not be copied (their copies stay)"),
                  (len(self._scan.failures), "bill(s) in the inbox could not be imported"),
                  (len(self._scan.incomplete), "period(s) are incomplete")]
        problems = [*mirrored.failures.values(), *self._scan.failures.values(), *self._scan.incomplete.values()]
        if problems:
            raise AgentError(", ".join(f"{count} {what}" for count, what in counts if count) + ": "
                             + "; ".join(problems))

    def _allocate(self) -> None:
        if self._scan is None:
            self._import()
        rules = self._rules()
        # A period whose delivery is not wholly synced fails, rather than be allocated a partial bill.
        failures = [f"{period}: {reason}" for period, reason in sorted(self._scan.incomplete.items())]
        for failure in failures:
            log.error("allocation of %s", failure)
        plans = self.plan(rules, scan=self._scan) if rules.bill.engine == "files" else self.table_plan()
        for plan in plans:
            # Leadership can end mid-job: no further period is written once the lease is lost.
            if not self._leadership.is_leading():
                raise AgentError(f"lost the lease before allocating {plan.period}; the new leader takes over")
            try:
                self._allocate_period(plan, rules=rules)
            except AgentError as e:
                if isinstance(e, PeriodError) and rules.bill.engine != "files":
                    # A table holds a month only once its first lines are delivered.
                    log.info("period %s: nothing to allocate yet: %s", plan.period, e)
                    continue
                log.error("allocation of %s failed: %s", plan.period, e)
                failures.append(f"{plan.period}: {e}")
        if failures:
            raise AgentError("; ".join(failures))

    def plan(self, rules: Rules, *, scan: InboxScan) -> list[PeriodPlan]:
        """The periods to allocate now: the open month and the previous one unless closed (usage still
        moves), and any period whose bills or rules differ from its latest run (closed ones: only bills,
        a restatement). A period whose delivery is incomplete waits for it."""
        current = Period.of(self._clock())
        month_to_date = str(current)
        recent = {month_to_date, str(current.previous())}
        frozen = closed(self._engine)
        latest = _latest_by_period(list_runs(self._engine))
        plans = []
        for period, failing in sorted(scan.blocked.items()):
            log.warning("period %s waits for %s, which cannot be imported now", period,
                        ", ".join(map(str, failing)))
        waiting = set(scan.blocked) | set(scan.incomplete)
        for period in sorted(scan.periods() - waiting):
            bills = {bill.sha256 for bill in scan.for_period(period)}
            run = latest.get(period)
            if run is None:
                plans.append(PeriodPlan(period, "first run"))
            elif _bill_digests(run) != bills:
                plans.append(PeriodPlan(period, "restatement" if period in frozen else "bills changed", run))
            elif period in frozen:
                continue
            elif run.manifest.rules_digest != rules_digest(rules):
                plans.append(PeriodPlan(period, "rules changed", run))
            elif period in recent:
                plans.append(PeriodPlan(period, "month to date" if period == month_to_date else "previous month", run))
        # A period whose inbox files were all removed is restated without them. An inbox with no bill at all is
        # more likely a volume not mounted than a decision, so it changes nothing.
        for period in sorted(set(latest) - scan.periods() - waiting) if scan.bills else ():
            run = latest[period]
            if run.manifest.bills and self._from_inbox(run):
                plans.append(PeriodPlan(period, "restatement" if period in frozen else "bills removed", run))
        return plans

    def table_plan(self) -> list[PeriodPlan]:
        """With the bill in a query engine's table: the open month and the previous one unless closed, each
        stored only when the table's answer (or the usage, the rules) changed."""
        current = Period.of(self._clock())
        frozen = closed(self._engine)
        latest = _latest_by_period(list_runs(self._engine))
        return [PeriodPlan(str(period), reason, latest.get(str(period)))
                for period, reason in ((current.previous(), "previous month"), (current, "month to date"))
                if str(period) not in frozen]

    def _from_inbox(self, run: RunSummary) -> bool:
        """Whether the run's bills were the inbox's (not files a user allocated by hand into the same store)."""
        inbox = self._settings.inbox_dir.resolve()
        return all(Path(bill.path).resolve().is_relative_to(inbox) for bill in run.manifest.bills)

    def _allocate_period(self, plan: PeriodPlan, *, rules: Rules) -> None:
        # Imported here: the import and allocation load pandas and Arrow, which an idle agent does without.
        from agent.pipeline import RunRequest, run_allocation, table_queries

        now = self._clock()
        live = None
        if rules.clusters:
            # Imported here: the Kubernetes and HTTP clients stay out of an agent that reads no cluster.
            from agent.sources.live import collect_live_usage
            live = collect_live_usage(rules=rules, settings=self._settings, period=plan.period,
                                      previous_maps=seen_namespace_maps(self._engine), now=now)
        request = RunRequest(
            bills=[bill.path for bill in self._scan.for_period(plan.period)] if rules.bill.engine == "files" else [],
            period=plan.period,
            rules=rules,
            usage=None if live is None else live.usage,
            import_options=import_options_for(rules, period=plan.period, limits=self._settings.bill_limits()),
            coverage=None if live is None else live.coverage,
            queries=table_queries(rules, self._settings),
        )
        result = run_allocation(request, engine=self._engine, created_at=now.isoformat(timespec="seconds"),
                                unchanged_from=plan.latest,
                                on_stage=lambda line: log.info("period %s: %s", plan.period, line))
        if stray := result.manifest.stray_rows():
            log.warning("period %s: %s", plan.period, stray)
        if result.stored:
            log.info("period %s (%s): stored run %d, %d rows", plan.period, plan.reason, result.run_id,
                     len(result.allocation.rows))
        else:
            log.info("period %s (%s): unchanged since run %d", plan.period, plan.reason, result.run_id)

    def _rules(self) -> Rules:
        rules = load_rules(self._settings.rules_file)
        self._budgets = rules.budgets
        return rules

    def budgets(self) -> Budgets:
        """The budgets of the rules the jobs last read (none before the first read; rules that fail to load keep
        the last good ones): what /metrics exposes."""
        return self._budgets

    def ready(self) -> bool:
        """Ready once the store answers: the last good runs can be served even while a source is down."""
        return store_answers(self._engine)


def _latest_by_period(runs: list[RunSummary]) -> dict[str, RunSummary]:
    return {run.period: run for run in runs}


def _bill_digests(run: RunSummary) -> set[str]:
    return {bill.sha256 for bill in run.manifest.bills}


def serve(settings: Settings, *, engine: Engine, once: bool) -> int:
    """Run the agent until SIGTERM/SIGINT (or, with `once`, run each job once and exit: 0 if all succeeded).

    With leader election on, every replica serves the API and /metrics but only the lease holder runs the jobs;
    `once` ignores leader election (a one-off run is started by hand, not by a Deployment)."""
    stats = JobStats()
    if once:
        service = AgentService(settings=settings, engine=engine, job_stats=stats)
        imported = service.import_job()
        allocated = service.allocate_job()
        return 0 if imported and allocated else 1
    leadership = leadership_for(settings)
    service = AgentService(settings=settings, engine=engine, job_stats=stats, leadership=leadership)
    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=engine, job_stats=stats, periods=settings.exposed_periods,
                                          max_series_per_family=settings.max_series_per_family,
                                          max_namespace_series=settings.max_namespace_series,
                                          split_top=settings.split_top, exposes_runs=leadership.is_leading,
                                          budgets=service.budgets))
    registry.register(LeaderCollector(leadership))
    scheduler = _scheduler(settings, service)
    # A new leader runs both jobs at once instead of waiting for the next interval.
    leadership.on_started_leading = lambda: _run_jobs_now(scheduler)
    uploads = Uploads(inbox_dir=settings.inbox_dir, max_bytes=settings.upload_max_bytes,
                      import_options=service.inbox_options)
    app = create_app(engine=engine, registry=registry, api_token=settings.effective_api_token(),
                     metrics_token_required=settings.metrics_require_token, ready=service.ready, uploads=uploads,
                     budgets=service.budgets)
    listener = listening_socket(settings.host, settings.port)
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False))
    scheduler.start()
    leadership.start()
    try:
        server.run(sockets=[listener])
    finally:
        log.info("shutting down: waiting for the running job to finish")
        scheduler.shutdown(wait=True)
        # After the last job: the lease is kept renewed while it runs, then handed back to a follower.
        leadership.stop(release=True)
    return 0


def _run_jobs_now(scheduler: BackgroundScheduler) -> None:
    now = datetime.now(UTC)
    for job_id in ("import", "allocate"):
        scheduler.modify_job(job_id, next_run_time=now)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, which would kill the process before the
    scheduler's running job finishes; here the signal only asks the server to stop, and run() returns."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _scheduler(settings: Settings, service: AgentService) -> BackgroundScheduler:
    # One worker thread: the import and allocation jobs never run at the same time, so they share state
    # without locks; coalescing turns a backlog of missed runs into one.
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": settings.misfire_grace_seconds},
        timezone=UTC,
    )
    now = datetime.now(UTC)
    scheduler.add_job(service.import_job, "interval", seconds=settings.inbox_poll_seconds, id="import",
                      next_run_time=now)
    allocate = scheduler.add_job(service.allocate_job, "interval", seconds=settings.allocation_interval_seconds,
                                 id="allocate", next_run_time=now + timedelta(seconds=1))
    # A new or changed bill is allocated at once rather than at the next interval.
    service.on_new_bills = lambda: allocate.modify(next_run_time=datetime.now(UTC))
    return scheduler
