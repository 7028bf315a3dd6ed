"""Write the demo bill, usage table and rules file next to this script (seeded: same bytes on every run)."""

from __future__ import annotations

import csv
import datetime
import random
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
SEED = 2026
PERIOD = "2026-10"
DAYS = 31
DAY_SECONDS = 24 * 3600
MIB = 1024 * 1024
CURRENCY = "USD"
WEEKDAY_PRODUCTS = {"Model API", "Network", "CDN"}  # usage that dips at weekends
BILL_COLUMNS = [
    "billingCycle", "billingDate", "loginName", "workspaceName", "apiKeyName",
    "productName", "resourceId", "cz_container_bill", "unblendedCost", "currency",
]

COMPANIES = {"acme": 40, "globex": 30, "initech": 20, "umbrella": 10}
SERVICES = {
    "mobile": {"acme": 60, "globex": 40},
    "mcmp": {"initech": 1},
    "payments": {"acme": 50, "globex": 30, "umbrella": 20},
    "search": {"acme": 1},
    "analytics": {"globex": 70, "initech": 30},
    "ai-chat": {"acme": 40, "globex": 40, "initech": 20},
    "iam": {"acme": 50, "initech": 30, "umbrella": 20},
    "edge": {"umbrella": 1},
}
COMMON_GROUPS = {"subcom": ["mobile", "mcmp"], "platform": list(SERVICES)}
NAMESPACE_OVERRIDES = {"payments-legacy": "payments"}
# The demo month leaves acme within its budget (24,586.74 USD) and search over its own (5,643.00 USD).
COMPANY_BUDGETS = {"acme": "25000"}
SERVICE_BUDGETS = {"search": "5000"}
PROMETHEUS_URL = "http://prometheus.monitoring:9090"

# cluster -> (namespace, service column, average GiB, first day, last day)
USAGE = {
    "prod": [
        ("mobile-api", "mobile", 96, 1, 31), ("mcmp", "mcmp", 40, 1, 31),
        ("payments-api", "payments", 64, 1, 31), ("payments-legacy", "", 24, 1, 20),
        ("search-indexer", "search", 48, 1, 31), ("iam", "iam", 16, 1, 31),
        ("edge-gateway", "edge", 32, 1, 31), ("kube-system", "", 12, 1, 31),
        ("ingress-nginx", "", 8, 1, 31),
    ],
    "stage": [
        ("mobile-api", "mobile", 24, 1, 31), ("mcmp", "mcmp", 12, 1, 31),
        ("payments-api", "payments", 16, 1, 31), ("iam", "iam", 6, 1, 31),
        ("kube-system", "", 6, 1, 31), ("monitoring", "", 10, 1, 31),
    ],
    "data": [
        ("analytics-etl", "analytics", 160, 1, 31), ("analytics-spark", "analytics", 120, 10, 31),
        ("ai-chat-inference", "ai-chat", 128, 1, 31), ("search-indexer", "search", 40, 1, 31),
        ("jupyter-sandbox", "", 48, 1, 31), ("kube-system", "", 10, 1, 31),
        ("monitoring", "", 24, 1, 31),
    ],
}


class Resource(NamedTuple):
    """One billed resource: `micro` is USD micro-units per hour (hourly) or the mean per day (usage)."""

    product: str
    tag: str
    login: str
    workspace: str
    api_key: str
    resource_id: str
    micro: int
    kind: str = "hourly"
    first: int = 1
    last: int = DAYS


def money(micro: int) -> str:
    """Micro-units of a currency as a plain decimal string with 6 decimals: -12500000 -> -12.500000."""
    return f"{Decimal(micro).scaleb(-6):f}"


def hex_id(rng: random.Random, prefix: str) -> str:
    return f"{prefix}{rng.getrandbits(48):012x}"


def day_date(day: int) -> str:
    return f"{PERIOD}-{day:02d}"


def cluster_resources(rng: random.Random, name: str, full: int, extra: int, rate: int) -> list[Resource]:
    """VM nodes (some autoscaled for part of the month), a load balancer and a disk pool of a cluster."""
    tag, login = f"cz_cluster_{name}", "team-data" if name == "data" else "ops-admin"
    ws = {"prod": "ws-prod", "stage": "ws-shared", "data": "ws-research"}[name]
    nodes = [Resource("ECS", tag, login, ws, "", hex_id(rng, "i-"), rate) for _ in range(full)]
    for _ in range(extra):
        first = rng.randint(2, 22)
        nodes.append(Resource("ECS", tag, login, ws, "", hex_id(rng, "i-"), rate, first=first,
                              last=min(DAYS, first + rng.randint(3, 9))))
    nodes.append(Resource("SLB", tag, login, ws, "", hex_id(rng, "lb-"), rate // 20))
    nodes.append(Resource("EBS", tag, login, ws, "", hex_id(rng, "d-"), full * rate // 12))
    return nodes


def cluster_costs(rng: random.Random) -> list[Resource]:
    return (cluster_resources(rng, "prod", 20, 5, 768_000) + cluster_resources(rng, "stage", 8, 2, 384_000)
            + cluster_resources(rng, "data", 12, 4, 1_008_000))


def shared_costs(rng: random.Random) -> list[Resource]:
    """Shared software: the subcom databases and the platform's monitoring VMs and stores."""
    sub, plat = "cz_common_subcom", "cz_common_platform"
    return [
        Resource("RDS", sub, "team-mobile", "ws-shared", "", hex_id(rng, "rm-"), 1_150_000),
        Resource("RDS", sub, "team-mobile", "ws-shared", "", hex_id(rng, "rm-"), 620_000),
        *[Resource("ECS", plat, "ops-admin", "ws-shared", "", hex_id(rng, "i-"), 540_000) for _ in range(3)],
        Resource("RDS", plat, "ops-admin", "ws-shared", "", hex_id(rng, "rm-"), 410_000),
        Resource("OSS", plat, "ops-admin", "ws-shared", "", "oss://platform-logs", 38_000_000, "usage"),
    ]


def model_api(tag: str, login: str, ws: str, key: str, model: str, daily: int) -> list[Resource]:
    """Input- and output-token lines of one model used through one API key."""
    return [Resource("Model API", tag, login, ws, key, f"model:{model}:{part}-tokens", share, "usage")
            for part, share in (("input", daily // 4), ("output", daily - daily // 4))]


def service_costs(rng: random.Random) -> list[Resource]:
    """Exclusive cost of services (iam and edge appear only through the clusters)."""
    return [
        Resource("OSS", "mobile", "team-mobile", "ws-prod", "", "oss://mobile-assets", 42_000_000, "usage"),
        Resource("OSS", "mobile", "team-mobile", "ws-prod", "", "oss://mobile-uploads", 27_500_000, "usage"),
        Resource("CDN", "mobile", "team-mobile", "ws-prod", "", hex_id(rng, "cdn-"), 96_000_000, "usage"),
        Resource("RDS", "mcmp", "team-mobile", "ws-prod", "", hex_id(rng, "rm-"), 880_000),
        Resource("OSS", "mcmp", "team-mobile", "ws-prod", "", "oss://mcmp-media", 11_000_000, "usage"),
        Resource("RDS", "payments", "ops-admin", "ws-prod", "", hex_id(rng, "rm-"), 1_840_000),
        Resource("RDS", "payments", "ops-admin", "ws-prod", "", hex_id(rng, "rm-"), 1_840_000),
        Resource("SLB", "payments", "ops-admin", "ws-prod", "", hex_id(rng, "lb-"), 95_000),
        *[Resource("ECS", "search", "team-data", "ws-prod", "", hex_id(rng, "i-"), 912_000) for _ in range(3)],
        *model_api("search", "team-data", "ws-prod", "key-search", "cz-embed-v3", 18_000_000),
        Resource("OSS", "analytics", "team-data", "ws-research", "", "oss://analytics-lake", 64_000_000, "usage"),
        Resource("OSS", "analytics", "team-data", "ws-research", "", "oss://analytics-exports", 9_000_000, "usage"),
        Resource("ECS", "analytics", "team-data", "ws-research", "", hex_id(rng, "i-"), 1_344_000),
        *model_api("ai-chat", "team-data", "ws-prod", "key-chatbot", "cz-chat-large", 210_000_000),
        *model_api("ai-chat", "team-data", "ws-prod", "key-chatbot", "cz-chat-mini", 36_000_000),
        *model_api("ai-chat", "team-data", "ws-prod", "key-chatbot", "cz-guard", 7_500_000),
        *model_api("ai-chat", "team-data", "ws-research", "key-batch", "cz-chat-large", 85_000_000),
        *model_api("ai-chat", "team-data", "ws-research", "key-batch", "cz-chat-mini", 14_000_000),
    ]


def untagged_costs(rng: random.Random) -> list[Resource]:
    """Cost nobody tagged: network, snapshots, dev boxes, experiments (goes to the common pool)."""
    network = [Resource("Network", "", "ops-admin", "ws-shared", "", f"egress:{region}", daily, "usage")
               for region, daily in (("cz-north-1", 58_000_000), ("cz-west-2", 31_000_000), ("cz-east-1", 12_000_000))]
    return [
        *network,
        *[Resource("NAT Gateway", "", "ops-admin", "ws-shared", "", hex_id(rng, "ngw-"), 65_000) for _ in range(2)],
        *[Resource("EBS", "", "ops-admin", "ws-shared", "", hex_id(rng, "s-"), 2_400_000, "usage") for _ in range(3)],
        Resource("CloudMonitor", "", "ops-admin", "ws-shared", "", "cm-enterprise", 4_200_000, "usage"),
        Resource("DNS", "", "ops-admin", "ws-shared", "", "dns:example-zones", 1_100_000, "usage"),
        *[Resource("ECS", "", "team-data", "ws-research", "", hex_id(rng, "i-"), 192_000) for _ in range(3)],
        Resource("Model API", "", "team-data", "ws-research", "key-batch", "model:cz-chat-large:input-tokens",
                 22_000_000, "usage"),
        Resource("OSS", "", "ops-admin", "ws-shared", "", "oss://backups", 17_000_000, "usage"),
    ]


def day_cost(rng: random.Random, res: Resource, day: int) -> int:
    """Micro-units billed for a resource on a day: hours run for VMs, a varying usage otherwise."""
    if res.kind == "hourly":
        hours = rng.randint(2, 23) if day in (res.first, res.last) and day not in (1, DAYS) else 24
        return res.micro * hours
    weekend = datetime.date(2026, 10, day).weekday() >= 5 and res.product in WEEKDAY_PRODUCTS
    return res.micro * rng.randint(700, 1300) * (6 if weekend else 10) // 10_000


def bill_row(res: Resource, day: int, cost: str, cycle: str = PERIOD, date: str = "") -> list[str]:
    return [cycle, date or day_date(day), res.login, res.workspace, res.api_key, res.product,
            res.resource_id, res.tag, cost, CURRENCY]


def daily_rows(rng: random.Random, resources: list[Resource]) -> list[list[str]]:
    return [bill_row(res, day, money(day_cost(rng, res, day)))
            for day in range(1, DAYS + 1) for res in resources if res.first <= day <= res.last]


CREDITS = [  # (day, product, tag, login, workspace, API key, resource id, micro-units)
    (15, "ECS", "cz_cluster_prod", "ops-admin", "ws-prod", "", "credit:reserved-instances", -412_350_000),
    (31, "Model API", "ai-chat", "team-data", "ws-prod", "key-chatbot", "credit:promo-2026q4", -150_000_000),
    (20, "Support", "", "finops", "ws-shared", "", "credit:sla-2026-09", -12_500_000),
    (10, "OSS", "mobile", "team-mobile", "ws-prod", "", "credit:storage-coupon", -25_000_000),
    (31, "RDS", "cz_common_subcom", "team-mobile", "ws-shared", "", "credit:rds-ri", -64_200_000),
]


def credit_rows() -> list[list[str]]:
    return [bill_row(Resource(*fields, micro), day, money(micro)) for day, *fields, micro in CREDITS]


def special_rows(rng: random.Random, usage_micro: int) -> list[list[str]]:
    """Support (3% of usage), credits, free-tier zeros and the unknown service `legacy-crm`."""
    support = Resource("Support", "", "finops", "ws-shared", "", "support:enterprise", 0)
    free = Resource("Model API", "search", "team-data", "ws-research", "key-search", "model:cz-embed-v3:free-tier", 0)
    crm = Resource("RDS", "legacy-crm", "ops-admin", "ws-prod", "", hex_id(rng, "rm-"), 0)
    rows = [bill_row(support, DAYS, money(usage_micro * 3 // 100 // 10_000 * 10_000))]
    rows += credit_rows() + [bill_row(free, day, money(0)) for day in (1, 2, 3, 4)]
    rows += [bill_row(crm, day, money(22_080_000 + rng.randint(0, 99) * 10_000)) for day in (1, 2, 3, 4)]
    return rows


def bad_rows(rng: random.Random) -> list[list[str]]:
    """Three rows whose cost cannot be read (rejected on import, with their row numbers)."""
    chat = Resource("Model API", "ai-chat", "team-data", "ws-prod", "key-chatbot", "model:cz-chat-mini:input-tokens", 0)
    bucket = Resource("OSS", "mobile", "team-mobile", "ws-prod", "", "oss://mobile-uploads", 0)
    node = Resource("ECS", "cz_cluster_stage", "ops-admin", "ws-shared", "", hex_id(rng, "i-"), 0)
    return [bill_row(chat, 12, "n/a"), bill_row(bucket, 18, ""), bill_row(node, 25, "12,5.0")]


def out_of_period_row(rng: random.Random) -> list[str]:
    """A late September line (billingCycle 2026-09): kept out of October and reported on its own."""
    node = Resource("ECS", "cz_cluster_prod", "ops-admin", "ws-prod", "", hex_id(rng, "i-"), 0)
    return bill_row(node, 30, money(18_432_000), cycle="2026-09", date="2026-09-30")


def bill_rows(rng: random.Random) -> list[list[str]]:
    """The month's rows sorted by date, product and resource; the late September row comes last."""
    resources = cluster_costs(rng) + shared_costs(rng) + service_costs(rng) + untagged_costs(rng)
    rows = daily_rows(rng, resources)
    usage_micro = sum(int(Decimal(row[8]).scaleb(6)) for row in rows)
    rows += special_rows(rng, usage_micro) + bad_rows(rng)
    rows.sort(key=lambda row: (row[1], row[5], row[6]))
    return rows + [out_of_period_row(rng)]


def usage_rows(rng: random.Random) -> list[list[str]]:
    """Memory byte-seconds per namespace: average MiB (GiB +/- 10%) x seconds the namespace ran."""
    rows = []
    for cluster, namespaces in USAGE.items():
        for namespace, service, gib, first, last in namespaces:
            mib = gib * 1024 * rng.randint(900, 1100) // 1000
            rows.append([cluster, namespace, service, str(mib * MIB * (last - first + 1) * DAY_SECONDS)])
    return rows


def flow(weights: dict[str, int]) -> str:
    return "{" + ", ".join(f"{name}: {weight}" for name, weight in weights.items()) + "}"


def rules_text() -> str:
    """The rules file, commented for a first-time reader (DESIGN section 4)."""
    width = max(len(name) for name in SERVICES) + 1
    services = "\n".join(f"  {name + ':':<{width}} {flow(w)}" for name, w in SERVICES.items())
    groups = "\n".join(f"  {group}: [{', '.join(members)}]" for group, members in COMMON_GROUPS.items())
    overrides = "\n".join(f"  {ns}: {service}" for ns, service in NAMESPACE_OVERRIDES.items())
    clusters = "\n".join(f"  {name}: {{prometheus_url: {PROMETHEUS_URL}, selector: 'cluster=\"{name}\"'}}"
                         for name in USAGE)
    company_budgets, service_budgets = ("\n".join(f'    {name}: {{amount: "{amount}", currency: {CURRENCY}}}'
                                                  for name, amount in budgets.items())
                                        for budgets in (COMPANY_BUDGETS, SERVICE_BUDGETS))
    return RULES_TEMPLATE.format(companies=flow(COMPANIES), services=services, groups=groups,
                                 overrides=overrides, clusters=clusters, currency=CURRENCY,
                                 company_budgets=company_budgets, service_budgets=service_budgets)


RULES_TEMPLATE = """\
# Allocation rules for the demo bill (written by demo/generate.py; see DESIGN.md sections 4-5).

# The bill column whose value says where a line's cost goes, and (live mode) the Namespace label
# that holds a namespace's service code.
tag_key: cz_container_bill
# A bill with no column for this key is refused (a typo would make the whole bill common cost). For bills
# untagged on purpose, add:  bill: {{untagged: true}}
namespace_label: cz_container_bill

# Currency to assume only when a bill has no currency column (this one has: USD on every row).
# Report amounts are rounded to the currency's minor unit (2 decimals for USD); `precision: N` overrides it.
currency: {currency}

# Companies and their weights for common cost (untagged lines, system namespaces). Weights are
# normalised, so 40/30/20/10 means 40%, 30%, 20%, 10%.
companies: {companies}

# Service code -> the companies that use the service, with weights. A service's cost (exclusive,
# its share of a cluster, its share of shared software) is split between them by these weights.
services:
{services}

# Shared software: a line tagged cz_common_<group> is split equally among the group's services.
common_groups:
{groups}

# Namespaces whose service is not in the usage table or their label: namespace -> service code.
namespaces:
{overrides}

# Cluster share of a namespace with no service: `common` (the common pool) or `proportional`
# (spread over the cluster's mapped namespaces).
unmapped_namespaces: common

# Cost that cannot be attributed (unknown service code, unknown group, cluster without usage):
# `unallocated` reports it on its own with the reason; `common` adds it to the common pool.
unattributable: unallocated

# A cluster's idle capacity (allocatable less what the namespaces used): `spread` over the namespaces
# by their usage, or the category `idle`, split by the company weights (`common`) or carried by no
# company (`unallocated`). The usage table then needs each cluster's `__idle__` row.
idle: spread

# cz_cluster_<name> -> where that cluster's usage is queried in live mode. With a usage file
# (demo/usage-2026-10.csv) these are not contacted. `usage_basis` weighs a cluster's cost by memory
# (default), cpu, gpu or a blend of the namespaces' shares, e.g. {{memory: 0.5, cpu: 0.5}}.
clusters:
{clusters}

# Monthly budgets (amount and currency) of a company or a service code. The agent exposes them as
# cz_budget_amount; the chart's alerts fire when the month-to-date cost of the open month, or its
# month-end forecast, goes over one. They move no money: changing one allocates nothing again.
budgets:
  companies:
{company_budgets}
  services:
{service_budgets}
"""


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    rng = random.Random(SEED)
    write_csv(HERE / f"bill-{PERIOD}.csv", BILL_COLUMNS, bill_rows(rng))
    write_csv(HERE / f"usage-{PERIOD}.csv", ["cluster", "namespace", "service", "memory_byte_seconds"],
              usage_rows(rng))
    (HERE / "rules.yaml").write_text(rules_text(), encoding="utf-8", newline="\n")


if __name__ == "__main__":
    main()
