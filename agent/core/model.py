"""The domain types every layer shares: usage, bill lines summed per tag, contributions, report rows,
the allocation, and rejected bill rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from fractions import Fraction

from agent.core.manifest import RunManifest
from agent.core.money import exact_arithmetic

CATEGORIES = ("cluster", "service_common", "service_exclusive", "common", "idle", "unallocated")
# The company of cost no company carries: unallocated cost, and idle capacity under `idle: unallocated`.
NO_COMPANY = ""
# What each namespace's usage is measured in, per resource a cluster's cost may be weighed by.
RESOURCE_UNITS = {"memory": "memory_byte_seconds", "cpu": "cpu_core_seconds", "gpu": "gpu_device_seconds"}
# The usage row of a cluster's idle capacity: its allocatable capacity less what the namespaces used. Kubernetes
# names namespaces as DNS labels, so no namespace can be called this.
IDLE_NAMESPACE = "__idle__"


@dataclass(frozen=True)
class NamespaceUsage:
    """What one namespace of one cluster used over the period: memory byte-seconds, CPU core-seconds and GPU
    device-seconds, each None where it was not measured."""

    cluster: str
    namespace: str
    memory_byte_seconds: Decimal | None
    service: str | None = None
    cpu_core_seconds: Decimal | None = None
    gpu_device_seconds: Decimal | None = None

    def used(self, resource: str) -> Decimal | None:
        return getattr(self, RESOURCE_UNITS[resource])


@dataclass(frozen=True)
class Contribution:
    """An exact piece of a report row: one tag value's cost, through one target, to one company."""

    currency: str
    tag: str
    category: str
    company: str
    service: str
    cluster: str
    namespace: str
    reason: str
    target_share: Fraction
    company_share: Fraction
    amount: Fraction
    # The attribution rule that claimed these untagged lines, "" if none.
    rule: str = ""


@dataclass(frozen=True)
class ReportRow:
    period: str
    company: str
    service: str
    category: str
    cluster: str
    amount: Decimal
    currency: str

    def key(self) -> tuple[str, str, str, str, str]:
        return (self.company, self.service, self.category, self.cluster, self.currency)


@dataclass(frozen=True)
class NamespaceRow:
    """The part of a report row that one Kubernetes namespace's memory share brought: a report row's namespace
    rows add up to its amount. Cost that came through no namespace has namespace "" and no memory share."""

    period: str
    company: str
    service: str
    category: str
    cluster: str
    namespace: str
    amount: Decimal
    currency: str
    # The namespace's share of its cluster's memory that was applied (None for namespace "").
    memory_share: Fraction | None


@dataclass(frozen=True)
class TagLine:
    """The bill lines of one (currency, tag value): their total and where they came from."""

    currency: str
    tag: str
    amount: Decimal
    line_count: int
    rows_by_source: dict[str, str]
    rule: str = ""


CHARGE_KINDS = ("usage", "fixed")  # usage accrues by day; fixed = one-off and monthly fees, taxes, credits...


@dataclass(frozen=True, slots=True)
class DailyCost:
    """The accepted bill lines of one (currency, tag value, charge day, charge kind), summed exactly."""
    currency: str
    tag: str            # the tag value exactly as TagLine.tag holds it
    day: date | None    # the literal date of the line's charge period start; None where the bill has no charge date
    kind: str           # one of CHARGE_KINDS
    amount: Decimal
    line_count: int


def totals_per_tag(lines: Iterable[TagLine | DailyCost]) -> dict[tuple[str, str], tuple[Decimal, int]]:
    """Amount and line count per (currency, tag value) of tag lines (summed over their rules) or daily costs."""
    totals: dict[tuple[str, str], tuple[Decimal, int]] = {}
    # Exact: the default context would round past 28 digits, and a month split into days rounds otherwise than whole.
    with exact_arithmetic():
        for line in lines:
            amount, count = totals.get((line.currency, line.tag), (Decimal(0), 0))
            totals[(line.currency, line.tag)] = (amount + line.amount, count + line.line_count)
    return totals


@dataclass
class Allocation:
    period: str
    rows: list[ReportRow]
    contributions: list[Contribution]
    tag_lines: list[TagLine]
    namespace_map: dict[str, dict[str, str | None]]
    namespace_shares: dict[str, dict[str, Fraction]]
    bill_totals: dict[str, Decimal] = field(default_factory=dict)

    def totals_by(self, attribute: str) -> dict[tuple[str, str], Decimal]:
        """Rounded report amounts summed per (currency, attribute value)."""
        totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for row in self.rows:
            totals[(row.currency, getattr(row, attribute))] += row.amount
        return dict(totals)

    def report_totals(self) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for row in self.rows:
            totals[row.currency] += row.amount
        return dict(totals)


@dataclass(frozen=True)
class RejectedRow:
    """A bill row that was not imported, and why."""

    source: str
    row: int
    column: str
    reason: str
    raw_cost: str = ""

    def message(self) -> str:
        return f"{self.source}, row {self.row}, column {self.column!r}: {self.reason}"


@dataclass(frozen=True)
class RunSummary:
    id: int
    period: str
    created_at: str
    tool_version: str
    report_sha256: str
    manifest: RunManifest


@dataclass(frozen=True)
class SplitTotal:
    """Exact cost of one (sub-account, workspace, API key) of a run's bill; "(none)" where a line had none."""

    sub_account: str
    workspace: str
    api_key: str
    currency: str
    amount: Decimal
    line_count: int


@dataclass(frozen=True)
class StoredRun:
    summary: RunSummary
    rows: list[ReportRow]
    contributions: list[Contribution]
    tag_lines: list[TagLine]
    rejected: list[RejectedRow]
    splits: list[SplitTotal]
    # The bill per charge day and kind (agent.store.runs.load_daily_costs), for the forecast.
    daily_costs: list[DailyCost] = field(default_factory=list)


@dataclass(frozen=True)
class RunResult:
    run_id: int
    # False when the inputs and results equal the `unchanged_from` run: nothing new was stored.
    stored: bool
    allocation: Allocation
    rejected: list[RejectedRow]
    manifest: RunManifest
    report: bytes
