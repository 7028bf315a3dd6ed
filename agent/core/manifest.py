"""The run manifest: the inputs, row counts and totals that explain a run and let it be repeated.

Built once per run as typed records and read as attributes; stored and served as JSON (`to_json`), and read
back from any earlier version (`from_json` migrates). Amounts are exact Decimals, shares exact Fractions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from agent.errors import StoreError

# A period whose bills give it at most this many lines, under STRAY_SHARE of their lines (the rest being in other
# periods), is likely made of stray rows: one September line in an October file.
STRAY_MAX_ROWS = 10
STRAY_SHARE = Fraction(1, 100)
# 1: unversioned manifests (before the version field); their `usage` may lack `coverage`.
# 2: the `version` field.
# 3: each bill's `cost_column` and the rules' `carrying`; None in manifests migrated from earlier versions.
MANIFEST_VERSION = 3


@dataclass(frozen=True)
class UsageInput:
    """The usage table behind the run's cluster cost."""

    digest: str
    namespaces: int
    source: str  # "file" or "prometheus"
    # Live runs: the fraction of the period each cluster's usage covers.
    coverage: dict[str, float] | None = None


@dataclass(frozen=True)
class BillInput:
    """One bill file of the run, as read."""

    path: str
    sha256: str
    format: str
    input_rows: int
    accepted_rows: int
    rejected_rows: int
    out_of_period_rows: int
    # The bill's column the costs were read from (FOCUS EffectiveCost or BilledCost, say): the cost basis.
    cost_column: str | None = None


@dataclass(frozen=True)
class CostCarrying:
    """Who the rules made carry what no service takes: unattributable cost (`unallocated`: no company;
    `common`: the common pool) and the clusters' idle capacity (`spread`, `common` or `unallocated`)."""

    unattributable: str
    idle: str


@dataclass(frozen=True)
class RowCounts:
    """input = accepted + rejected + out_of_period, over the run's bills."""

    input: int = 0
    accepted: int = 0
    rejected: int = 0
    out_of_period: int = 0

    def count(self, status: str) -> int:
        return int(getattr(self, status))


@dataclass(frozen=True)
class CurrencyTotals:
    """One currency's reconciliation: the accepted bill, exact and rounded, what was allocated and left
    unallocated (rounded), and the out-of-period amount set aside."""

    bill: Decimal
    bill_rounded: Decimal
    allocated: Decimal
    unallocated: Decimal
    out_of_period: Decimal

    def reconciles(self) -> bool:
        return self.allocated + self.unallocated == self.bill_rounded


@dataclass(frozen=True)
class ReportDigest:
    format: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class RunManifest:
    """Everything needed to explain and repeat a run; no clock, so equal inputs give equal manifests."""

    period: str
    tool_version: str
    rules_digest: str
    usage: UsageInput | None
    bills: tuple[BillInput, ...]
    rows: RowCounts
    totals: dict[str, CurrencyTotals]
    namespace_map: dict[str, dict[str, str | None]]
    namespace_shares: dict[str, dict[str, Fraction]]
    report: ReportDigest
    carrying: CostCarrying | None = None
    version: int = field(default=MANIFEST_VERSION)

    def to_json(self) -> dict[str, Any]:
        """The stored and served form: amounts and shares as exact strings."""
        return {
            "version": self.version,
            "period": self.period,
            "tool_version": self.tool_version,
            "rules_digest": self.rules_digest,
            "usage": None if self.usage is None else {
                "digest": self.usage.digest, "namespaces": self.usage.namespaces, "source": self.usage.source,
                "coverage": self.usage.coverage,
            },
            "bills": [dict(vars(bill)) for bill in self.bills],
            "rows": dict(vars(self.rows)),
            "totals": self.totals_json(),
            "namespace_map": self.namespace_map,
            "namespace_shares": {cluster: {namespace: str(share) for namespace, share in shares.items()}
                                 for cluster, shares in self.namespace_shares.items()},
            "report": dict(vars(self.report)),
            "carrying": None if self.carrying is None else dict(vars(self.carrying)),
        }

    def stray_rows(self) -> str | None:
        """Why the period looks made of stray rows of other periods' bills, or None."""
        accepted, elsewhere = self.rows.accepted, self.rows.out_of_period
        if 0 < accepted <= STRAY_MAX_ROWS and accepted < (accepted + elsewhere) * STRAY_SHARE:
            return (f"{self.period} holds only {accepted} of the {accepted + elsewhere} lines of its bill(s); the "
                    f"rest are in other periods: stray rows?")
        return None

    def totals_json(self) -> dict[str, dict[str, str]]:
        return {currency: {name: format(amount, "f") for name, amount in vars(totals).items()}
                for currency, totals in self.totals.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunManifest:
        """A stored manifest of any version up to MANIFEST_VERSION, migrated to the current one."""
        version = data.get("version", 1)
        if not isinstance(version, int) or version > MANIFEST_VERSION:
            raise StoreError(f"run manifest version {version!r} is newer than this agent's {MANIFEST_VERSION}: "
                             f"upgrade the agent")
        usage = data["usage"]
        return cls(
            period=data["period"],
            tool_version=data["tool_version"],
            rules_digest=data["rules_digest"],
            usage=None if usage is None else UsageInput(digest=usage["digest"], namespaces=usage["namespaces"],
                                                        source=usage["source"], coverage=usage.get("coverage")),
            bills=tuple(BillInput(**bill) for bill in data["bills"]),
            rows=RowCounts(**data["rows"]),
            totals={currency: CurrencyTotals(**{name: Decimal(amount) for name, amount in totals.items()})
                    for currency, totals in data["totals"].items()},
            namespace_map={cluster: dict(namespaces) for cluster, namespaces in data["namespace_map"].items()},
            namespace_shares={cluster: {namespace: Fraction(share) for namespace, share in shares.items()}
                              for cluster, shares in data["namespace_shares"].items()},
            report=ReportDigest(**data["report"]),
            carrying=None if data.get("carrying") is None else CostCarrying(**data["carrying"]),
        )
