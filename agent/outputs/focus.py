"""The allocation as a FinOps FOCUS 1.2 dataset: one row per report row, the allocation in `x_` columns.

Choices where the report does not say what FOCUS asks for:
- The billed party of a chargeback is the company, so BillingAccountId and BillingAccountName are the company
  (`unallocated` for cost no company carries); the company is also in x_Company.
- ChargeCategory is "Usage": a report row is consumed cloud cost passed on to a company, which FOCUS tools
  count as usage. The bill's own categories (purchases, credits, taxes) are not kept per report row, and
  "Adjustment" would tell those tools it is an after-the-fact correction, which it is not. ChargeClass is
  null: a run restates a period as a whole, never as a correction row.
- Usage rows must carry a PricingQuantity: each row is one allocation (1 "Allocation"). Unit prices are
  not given, so no cost has to equal quantity times price.
- ServiceCategory is "Other": the report's services are internal services, not provider services.
- The charge period is the whole billing period: the report has no finer time grain.
Every cost column (BilledCost, EffectiveCost, ListCost, ContractedCost) is the report amount, so each sums
to the report total exactly.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from agent import __version__
from agent.core.model import ReportRow, StoredRun
from agent.core.periods import Period
from agent.outputs.report import render_csv

if TYPE_CHECKING:
    import pyarrow as pa

FOCUS_VERSION = "1.2"
ISSUER = "cz-allocation-agent"
UNALLOCATED = "unallocated"
COST_COLUMNS = ("BilledCost", "ContractedCost", "EffectiveCost", "ListCost")
DATE_COLUMNS = ("BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart")
# FOCUS columns in the specification's (alphabetical) order, then the allocation.
FOCUS_COLUMNS = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingQuantity",
    "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName", "SubAccountId",
    "SubAccountName",
)
ALLOCATION_COLUMNS = ("x_Company", "x_Service", "x_Category", "x_Cluster", "x_AllocationRunId")
COLUMNS = FOCUS_COLUMNS + ALLOCATION_COLUMNS
_DECIMAL_COLUMNS = (*COST_COLUMNS, "PricingQuantity")

Record = dict[str, str | Decimal | datetime | None]


def render_focus(stored: StoredRun, *, parquet: bool = False) -> bytes:
    """The run's report rows as FOCUS CSV (plain decimal amounts, ISO 8601 UTC dates) or Parquet."""
    period = Period.parse(stored.summary.period)
    records = [focus_record(row, start=period.start, end=period.end, run_id=stored.summary.id) for row in stored.rows]
    return _parquet(records) if parquet else render_csv(COLUMNS, (_csv_cells(record) for record in records))


def focus_record(row: ReportRow, *, start: datetime, end: datetime, run_id: int) -> Record:
    account = row.company or UNALLOCATED
    return {
        **dict.fromkeys(COST_COLUMNS, row.amount),
        "BillingAccountId": account,
        "BillingAccountName": account,
        "BillingCurrency": row.currency,
        "BillingPeriodStart": start,
        "BillingPeriodEnd": end,
        "ChargePeriodStart": start,
        "ChargePeriodEnd": end,
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ChargeDescription": charge_description(row),
        "ChargeFrequency": "Usage-Based",
        "InvoiceIssuerName": ISSUER,
        "PricingQuantity": Decimal(1),
        "PricingUnit": "Allocation",
        "ProviderName": ISSUER,
        "PublisherName": ISSUER,
        "ServiceCategory": "Other",
        "ServiceName": service_name(row),
        "SubAccountId": None,
        "SubAccountName": None,
        "x_Company": row.company,
        "x_Service": row.service,
        "x_Category": row.category,
        "x_Cluster": row.cluster,
        "x_AllocationRunId": str(run_id),
    }


def service_name(row: ReportRow) -> str:
    """FOCUS wants a service on every row; the report leaves it empty for the common pool and the like."""
    if row.service:
        return row.service
    if row.category == "common":
        return "Common pool"
    if row.category == "idle":
        return "Idle capacity"
    if row.category == "unallocated":
        return "Unallocated"
    return "Direct attribution"


def charge_description(row: ReportRow) -> str:
    cluster = f" in cluster {row.cluster}" if row.cluster else ""
    party = row.company or "no company (unallocated)"
    return f"{row.category} cost of {service_name(row)}{cluster}, allocated to {party}"


def _csv_cells(record: Record) -> list[str | None]:
    return [_csv_text(record[name]) for name in COLUMNS]


def _csv_text(value: str | Decimal | datetime | None) -> str | None:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return iso_utc(value)
    return value


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parquet(records: list[Record]) -> bytes:
    # Exact decimals with the widest scale of the rows, UTC timestamps, strings for the rest.
    import pyarrow as pa
    import pyarrow.parquet as pq

    scale = max((-record["BilledCost"].as_tuple().exponent for record in records), default=2)
    schema = pa.schema([(name, _arrow_type(name, scale)) for name in COLUMNS],
                       metadata={"FocusVersion": FOCUS_VERSION, "generator": f"{ISSUER} {__version__}"})
    columns = {name: [record[name] for record in records] for name in COLUMNS}
    sink = io.BytesIO()
    pq.write_table(pa.table(columns, schema=schema), sink)
    return sink.getvalue()


def _arrow_type(name: str, scale: int) -> pa.DataType:
    import pyarrow as pa

    if name in _DECIMAL_COLUMNS:
        return pa.decimal128(38, scale)
    if name in DATE_COLUMNS:
        # Parquet has no second unit: milliseconds, as it would store them anyway.
        return pa.timestamp("ms", tz="UTC")
    return pa.string()
