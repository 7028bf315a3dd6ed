"""Cloud Z / Cloudsway native bills: one line per resource and day, camelCase headers."""

from __future__ import annotations

from agent.bills.spec import FormatSpec

SPEC = FormatSpec(
    name="native",
    markers=(("unblendedCost",),),
    cost=("unblendedCost",),
    currency=("currency",),
    sub_account=("loginName",),
    workspace=("workspaceName",),
    api_key=("apiKeyName", "apiKeyId", "apiKey"),
    # billingCycle is the month (YYYY-MM); older exports only carry the billing date.
    billing_period=("billingCycle", "billingDate"),
    resource_id=("resourceId", "instanceId"),
    service_name=("productName", "serviceName"),
)
