"""The settings of one bill import: format, period, tag key, column overrides and size limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.core.bill_formats import AUTO_DETECT, COLUMN_OVERRIDES, column_option
from agent.core.bill_limits import BillLimits
from agent.core.rules import Rules


@dataclass(frozen=True)
class ImportOptions:
    """How to read a bill; column overrides are header names, matched case-insensitively."""

    tag_key: str = "cz_container_bill"
    # "YYYY-MM": rows of another month are set aside as out of period (BillTotals.outside).
    period: str | None = None
    # One of agent.core.bill_formats.BILL_FORMAT_CHOICES; the importer refuses any other.
    bill_format: str = AUTO_DETECT
    cost_column: str | None = None
    tag_column: str | None = None
    currency_column: str | None = None
    sub_account_column: str | None = None
    workspace_column: str | None = None
    api_key_column: str | None = None
    # Used when the bill has no currency column, or for its empty cells.
    default_currency: str | None = None
    # The bill may have no tag column (its lines are then common cost); otherwise that is a mistake.
    untagged: bool = False
    # The column holding a line's identity, for bills whose format has none (CUR and CUR 2.0 have theirs).
    line_id_column: str | None = None
    # "refuse": a line identity in two bill files of one period fails the run; "allow": providers that repeat
    # identities legitimately.
    duplicates: str = "refuse"
    # Past these sizes the file is refused (the settings' bill_max_*).
    limits: BillLimits = field(default_factory=BillLimits)


def import_options_for(rules: Rules, *, period: str | None, limits: BillLimits,
                       overrides: Mapping[str, str | None] | None = None) -> ImportOptions:
    """The rules' `bill:` settings, where set overridden by `overrides` (the command line's flags), and the
    settings' size limits."""
    bill = rules.bill
    columns = {"bill_format": bill.format, **{column_option(c): getattr(bill, c) for c in COLUMN_OVERRIDES}}
    columns.update({name: value for name, value in (overrides or {}).items() if value})
    return ImportOptions(tag_key=rules.tag_key, period=period, default_currency=rules.currency, limits=limits,
                         untagged=bill.untagged, line_id_column=bill.line_id, duplicates=bill.duplicates, **columns)
