"""Azure cost details exports (EA and MCA): the tags column may lack its outer braces."""

from __future__ import annotations

from agent.bills.spec import FormatSpec

SPEC = FormatSpec(
    name="azure",
    markers=(("CostInBillingCurrency",),),
    cost=("CostInBillingCurrency", "Cost"),
    currency=("BillingCurrencyCode", "BillingCurrency"),
    sub_account=("SubscriptionName", "SubscriptionId"),
    billing_period=("BillingPeriodStartDate",),
    # EA exports write Date as M/D/YYYY, MCA exports as ISO dates.
    charge_period=("Date",),
    resource_id=("ResourceId",),
    service_name=("MeterCategory",),
    # Frequency (UsageBased, Recurring, OneTime) counts a reservation's unused hours, charged daily, as usage; else
    # ChargeType (Usage, Purchase, Refund, UnusedReservation, ...).
    charge_kind=("Frequency", "ChargeType"),
    usage_kinds=("UsageBased", "Usage"),
)
