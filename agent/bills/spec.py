"""The declarative description of a bill format: which header names hold which line-item field."""

from __future__ import annotations

from dataclasses import dataclass

# Candidate header names, in order of preference; the first one present in the bill is used.
Candidates = tuple[str, ...]


@dataclass(frozen=True)
class FormatSpec:
    """One bill format. `markers` identify it: every group must have one of its names in the header."""

    name: str
    markers: tuple[Candidates, ...]
    cost: Candidates
    currency: Candidates = ()
    sub_account: Candidates = ()
    workspace: Candidates = ()
    api_key: Candidates = ()
    billing_period: Candidates = ()
    charge_period: Candidates = ()
    resource_id: Candidates = ()
    service_name: Candidates = ()
    # A line's identity where the format has one: its ID, and the interval that tells its hourly lines apart.
    line_id: Candidates = ()
    line_interval: Candidates = ()
    # A line's charge kind (agent.core.model.CHARGE_KINDS) for the forecast: the column that tells it, and its
    # values (compared ignoring case) that mean usage, which accrues by day. Any other value is a fixed charge
    # (one-off and monthly fees, taxes, credits); a line with none, or of a bill without the column, is usage.
    charge_kind: Candidates = ()
    usage_kinds: tuple[str, ...] = ()

    def describe_markers(self) -> str:
        return " with ".join(" or ".join(group) for group in self.markers)
