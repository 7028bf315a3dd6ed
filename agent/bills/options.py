"""The settings of one bill import: format, period, tag key and column overrides."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImportOptions:
    """How to read a bill; column overrides are header names, matched case-insensitively."""

    tag_key: str = "cz_container_bill"
    # "YYYY-MM": rows of another month go to BillImport.out_of_period.
    period: str | None = None
    # auto | native | focus | cur | cur2 | azure
    bill_format: str = "auto"
    cost_column: str | None = None
    tag_column: str | None = None
    currency_column: str | None = None
    sub_account_column: str | None = None
    workspace_column: str | None = None
    api_key_column: str | None = None
    # Used when the bill has no currency column, or for its empty cells.
    default_currency: str | None = None
