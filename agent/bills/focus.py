"""FinOps FOCUS 1.0 to 1.3 cost and usage datasets."""

from __future__ import annotations

from agent.bills.spec import FormatSpec

SPEC = FormatSpec(
    name="focus",
    markers=(("EffectiveCost", "BilledCost"), ("ChargePeriodStart",)),
    # EffectiveCost spreads commitment purchases over usage; BilledCost is reachable by override.
    cost=("EffectiveCost",),
    currency=("BillingCurrency",),
    sub_account=("SubAccountName", "SubAccountId"),
    billing_period=("BillingPeriodStart",),
    charge_period=("ChargePeriodStart",),
    resource_id=("ResourceId",),
    service_name=("ServiceName",),
    # ChargeFrequency (recommended since FOCUS 1.0) says whether a charge accrues with usage; else ChargeCategory.
    charge_kind=("ChargeFrequency", "ChargeCategory"),
    usage_kinds=("Usage-Based", "Usage"),
)
