"""AWS Cost and Usage Reports: legacy CUR (`lineItem/...` headers) and CUR 2.0 (snake_case headers)."""

from __future__ import annotations

from agent.bills.spec import FormatSpec

# Line item types that accrue hour by hour with usage: usage itself, and the Savings Plans negation and discounts
# written beside each usage line. Fees, RI and Savings Plans recurring fees, taxes, credits and refunds are fixed.
USAGE_LINE_TYPES = ("Usage", "DiscountedUsage", "SavingsPlanCoveredUsage", "SavingsPlanNegation", "BundledDiscount",
                    "EdpDiscount", "PrivateRateDiscount", "DistributorDiscount")

LEGACY_SPEC = FormatSpec(
    name="cur",
    markers=(("lineItem/UnblendedCost",),),
    cost=("lineItem/UnblendedCost",),
    currency=("lineItem/CurrencyCode",),
    sub_account=("lineItem/UsageAccountId",),
    billing_period=("bill/BillingPeriodStartDate",),
    charge_period=("lineItem/UsageStartDate",),
    resource_id=("lineItem/ResourceId",),
    service_name=("lineItem/ProductCode",),
    line_id=("identity/LineItemId",),
    line_interval=("identity/TimeInterval",),
    charge_kind=("lineItem/LineItemType",),
    usage_kinds=USAGE_LINE_TYPES,
)

CUR2_SPEC = FormatSpec(
    name="cur2",
    markers=(("line_item_unblended_cost",),),
    cost=("line_item_unblended_cost",),
    currency=("line_item_currency_code",),
    sub_account=("line_item_usage_account_id",),
    billing_period=("bill_billing_period_start_date",),
    charge_period=("line_item_usage_start_date",),
    resource_id=("line_item_resource_id",),
    service_name=("line_item_product_code",),
    line_id=("identity_line_item_id",),
    line_interval=("identity_time_interval",),
    charge_kind=("line_item_line_item_type",),
    usage_kinds=USAGE_LINE_TYPES,
)
