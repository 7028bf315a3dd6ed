from collections import defaultdict
from decimal import Decimal
from fractions import Fraction

import pytest

from agent.bills.taglines import allocate
from agent.bills.totals import compress_rows
from agent.core.model import NamespaceUsage
from agent.core.rules import parse_rules
from tests.support.factories import line_items

WORKED_RULES = """
companies: {alpha: 50, beta: 30, gamma: 20}
services:
  mobile: {alpha: 70, beta: 30}
  mcmp: {gamma: 100}
common_groups: {subcom: [mobile, mcmp]}
"""
WORKED_USAGE = [
    NamespaceUsage("prod", "mobile-api", 6, "mobile"),
    NamespaceUsage("prod", "mcmp", 3, "mcmp"),
    NamespaceUsage("prod", "kube-system", 1, None),
]
WORKED_BILL = [("cz_cluster_prod", "1000"), ("cz_common_subcom", "300"), ("mobile", "200"), (None, "100")]


def table(allocation):
    return {(r.company, r.service, r.category, r.cluster): str(r.amount) for r in allocation.rows}


def test_design_worked_example_to_the_cent():
    allocation = allocate(line_items(WORKED_BILL), rules=parse_rules(WORKED_RULES), period="2026-10",
                          usage=WORKED_USAGE)
    assert table(allocation) == {
        ("alpha", "mobile", "cluster", "prod"): "420.00",
        ("beta", "mobile", "cluster", "prod"): "180.00",
        ("gamma", "mcmp", "cluster", "prod"): "300.00",
        ("alpha", "mobile", "service_common", ""): "105.00",
        ("beta", "mobile", "service_common", ""): "45.00",
        ("gamma", "mcmp", "service_common", ""): "150.00",
        ("alpha", "mobile", "service_exclusive", ""): "140.00",
        ("beta", "mobile", "service_exclusive", ""): "60.00",
        ("alpha", "", "common", "prod"): "50.00",
        ("beta", "", "common", "prod"): "30.00",
        ("gamma", "", "common", "prod"): "20.00",
        ("alpha", "", "common", ""): "50.00",
        ("beta", "", "common", ""): "30.00",
        ("gamma", "", "common", ""): "20.00",
    }
    assert allocation.report_totals() == {"USD": Decimal("1600.00")}
    per_company = allocation.totals_by("company")
    assert per_company[("USD", "alpha")] == Decimal("765.00")


def test_unmapped_namespaces_proportional_spreads_over_mapped_namespaces():
    rules = parse_rules(WORKED_RULES + "unmapped_namespaces: proportional\n")
    allocation = allocate(line_items([("cz_cluster_prod", "900")]), rules=rules, period="2026-10",
                          usage=WORKED_USAGE)
    assert table(allocation) == {
        ("alpha", "mobile", "cluster", "prod"): "420.00",
        ("beta", "mobile", "cluster", "prod"): "180.00",
        ("gamma", "mcmp", "cluster", "prod"): "300.00",
    }


@pytest.mark.parametrize(
    ("tag", "key", "reason"),
    [
        ("cz_cluster_stage", ("", "", "unallocated", "stage"), "no memory usage for cluster 'stage'"),
        ("cz_common_nogroup", ("", "", "unallocated", ""), "unknown common group 'nogroup'"),
        ("legacy", ("", "legacy", "unallocated", ""), "unknown service 'legacy'"),
    ],
)
def test_unattributable_cost_is_reported_unallocated_with_its_reason(tag, key, reason):
    allocation = allocate(line_items([(tag, "10.005")]), rules=parse_rules(WORKED_RULES), period="2026-10",
                          usage=WORKED_USAGE)
    assert table(allocation) == {key: "10.01"}
    assert [c.reason for c in allocation.contributions] == [reason]


def test_unattributable_common_joins_the_common_pool_keeping_the_cluster():
    rules = parse_rules(WORKED_RULES + "unattributable: common\n")
    allocation = allocate(line_items([("cz_cluster_stage", "100")]), rules=rules, period="2026-10")
    assert table(allocation) == {
        ("alpha", "", "common", "stage"): "50.00",
        ("beta", "", "common", "stage"): "30.00",
        ("gamma", "", "common", "stage"): "20.00",
    }


def test_rules_namespace_map_overrides_the_usage_service():
    rules = parse_rules(WORKED_RULES + "namespaces: {kube-system: mcmp}\n")
    allocation = allocate(line_items([("cz_cluster_prod", "100")]), rules=rules, period="2026-10",
                          usage=WORKED_USAGE)
    assert table(allocation)[("gamma", "mcmp", "cluster", "prod")] == "40.00"
    assert allocation.namespace_map["prod"]["kube-system"] == "mcmp"


def test_thirds_round_with_largest_remainder_to_the_bill_total():
    rules = parse_rules("companies: {a: 1, b: 1, c: 1}\n")
    allocation = allocate(line_items([(None, "100")]), rules=rules, period="2026-10")
    assert sorted(str(r.amount) for r in allocation.rows) == ["33.33", "33.33", "33.34"]
    assert allocation.contributions[0].amount == Fraction(100, 3)


def test_currencies_are_allocated_separately_with_their_minor_unit():
    items = line_items([(None, "1001")], currency="KRW")
    rules = parse_rules("companies: {a: 1, b: 2}\n")
    allocation = allocate(items, rules=rules, period="2026-10")
    assert {(r.company, str(r.amount), r.currency) for r in allocation.rows} == {("a", "334", "KRW"),
                                                                                 ("b", "667", "KRW")}


def test_compress_rows_makes_ranges():
    assert compress_rows([7, 2, 3, 4, 9, 10]) == "2-4,7,9-10"
    assert compress_rows([]) == ""


ATTRIBUTION_RULES = WORKED_RULES + """
attribution:
  - match: {workspace: "ws-*"}
    service: mcmp
  - match: {workspace: ws-research}
    company: beta
  - match: {api_key: "key-chat*"}
    service: mobile
  - match: {sub_account: finops}
    company: gamma
  - match: {workspace: ws-prod, api_key: key-batch}
    company: alpha
"""


def attributed_items():
    items = line_items([(None, "10"), (None, "20"), (None, "30"), (None, "40"), (None, "50"), ("mobile", "60"),
                        (None, "70")])
    items["workspace"] = ["ws-prod", "ws-research", "ws-prod", None, "ws-prod", "ws-research", "other"]
    items["api_key"] = [None, None, "key-chatbot", None, "key-batch", None, None]
    items["sub_account"] = ["ops", "ops", "finops", "finops", "ops", "ops", "nobody"]
    return items


def test_attribution_rules_precedence_and_targets():
    allocation = allocate(attributed_items(), rules=parse_rules(ATTRIBUTION_RULES), period="2026-10")
    by_rule = {(c.rule, c.company, c.service): c.amount for c in allocation.contributions}
    assert by_rule == {
        # Glob on workspace: mcmp's exclusive cost.
        ("attribution[0] workspace=ws-* -> service mcmp", "gamma", "mcmp"): 10,
        # Exact beats glob on the same dimension.
        ("attribution[1] workspace=ws-research -> company beta", "beta", ""): 20,
        # API key beats workspace and sub-account.
        ("attribution[2] api_key=key-chat* -> service mobile", "alpha", "mobile"): 21,
        ("attribution[2] api_key=key-chat* -> service mobile", "beta", "mobile"): 9,
        ("attribution[3] sub_account=finops -> company gamma", "gamma", ""): 40,
        # Two dimensions beat one.
        ("attribution[4] api_key=key-batch workspace=ws-prod -> company alpha", "alpha", ""): 50,
        # A tagged line is never claimed by a rule.
        ("", "alpha", "mobile"): 42,
        ("", "beta", "mobile"): 18,
        # No rule matches: the common pool.
        ("", "alpha", ""): 35,
        ("", "beta", ""): 21,
        ("", "gamma", ""): 14,
    }
    assert {r.category for r in allocation.rows if r.service == "" and r.company == "beta"} == {
        "service_exclusive", "common"}
    assert allocation.report_totals() == {"USD": Decimal("280.00")}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("- match: {workspace: w}\n    service: nope", "attribution.0.service: unknown service 'nope'"),
        ("- match: {workspace: w}\n    company: nope", "attribution.0.company: unknown company 'nope'"),
        ("- match: {}\n    company: alpha", "give at least one of sub_account, workspace, api_key"),
        ("- match: {workspace: w}\n    company: alpha\n    service: mobile", "give exactly one of service, company"),
        ("- match: {team: w}\n    company: alpha", "attribution.0.match.team: unknown key"),
    ],
)
def test_bad_attribution_rules_name_the_rule(rule, message):
    from agent.errors import RulesError

    with pytest.raises(RulesError) as raised:
        parse_rules(WORKED_RULES + "attribution:\n  " + rule + "\n")
    assert message in str(raised.value)


@pytest.mark.parametrize("labels", [None, {"prod": {"mcmp": "ghost"}}])
def test_a_namespace_of_an_unknown_service_leaves_its_share_unallocated_and_the_rest_allocated(labels):
    usage = [NamespaceUsage("prod", "mobile-api", 6, "mobile"),
             NamespaceUsage("prod", "mcmp", 3, "ghost" if labels is None else None)]
    allocation = allocate(line_items([("cz_cluster_prod", "900")]), rules=parse_rules(WORKED_RULES),
                          period="2026-10", usage=usage, namespace_labels=labels)
    assert table(allocation) == {("alpha", "mobile", "cluster", "prod"): "420.00",
                                 ("beta", "mobile", "cluster", "prod"): "180.00",
                                 ("", "ghost", "unallocated", "prod"): "300.00"}
    [unallocated] = [c for c in allocation.contributions if c.category == "unallocated"]
    assert (unallocated.namespace, unallocated.reason) == ("mcmp", "unknown service 'ghost' of namespace 'mcmp'")


def test_a_namespace_of_an_unknown_service_joins_the_common_pool_when_the_rules_say_so():
    allocation = allocate(line_items([("cz_cluster_prod", "100")]), period="2026-10",
                          rules=parse_rules(WORKED_RULES + "unattributable: common\n"),
                          usage=[NamespaceUsage("prod", "web", 1, "ghost")])
    assert table(allocation) == {("alpha", "", "common", "prod"): "50.00", ("beta", "", "common", "prod"): "30.00",
                                 ("gamma", "", "common", "prod"): "20.00"}


BASIS_USAGE = [
    # memory 6:3:1, cpu 1:1:2, gpu 0:4:0, idle capacity 10 of memory, 4 of cpu, 4 of gpu
    NamespaceUsage("prod", "mobile-api", Decimal(6), "mobile", cpu_core_seconds=Decimal(1),
                   gpu_device_seconds=Decimal(0)),
    NamespaceUsage("prod", "mcmp", Decimal(3), "mcmp", cpu_core_seconds=Decimal(1), gpu_device_seconds=Decimal(4)),
    NamespaceUsage("prod", "kube-system", Decimal(1), None, cpu_core_seconds=Decimal(2), gpu_device_seconds=Decimal(0)),
    NamespaceUsage("prod", "__idle__", Decimal(10), None, cpu_core_seconds=Decimal(4), gpu_device_seconds=Decimal(4)),
]


def cluster_rules(basis: str, idle: str = "spread") -> str:
    return WORKED_RULES + f"idle: {idle}\nclusters: {{prod: {{usage_basis: {basis}}}}}\n"


@pytest.mark.parametrize(("basis", "idle", "expected"), [
    # cpu alone, idle spread: 1:1:2 of the namespaces, the idle row ignored
    ("cpu", "spread", {("mobile", "cluster"): Fraction(1, 4), ("mcmp", "cluster"): Fraction(1, 4),
                       ("", "common"): Fraction(1, 2)}),
    # a blend of the namespaces' shares: memory 6/10,3/10,1/10 and cpu 1/4,1/4,2/4, half each
    ("'{memory: 1, cpu: 1}'", "spread", {("mobile", "cluster"): Fraction(17, 40), ("mcmp", "cluster"): Fraction(11, 40),
                                         ("", "common"): Fraction(12, 40)}),
    # idle capacity as a namespace of its own: memory 6:3:1:10
    ("memory", "common", {("mobile", "cluster"): Fraction(6, 20), ("mcmp", "cluster"): Fraction(3, 20),
                          ("", "common"): Fraction(1, 20), ("", "idle"): Fraction(10, 20)}),
    # gpu: 0:4:0:4
    ("gpu", "unallocated", {("mcmp", "cluster"): Fraction(1, 2), ("", "idle"): Fraction(1, 2)}),
])
def test_cluster_cost_follows_the_usage_basis_and_the_idle_choice(basis, idle, expected):
    rules = parse_rules(cluster_rules(basis.strip("'"), idle))
    allocation = allocate(line_items([("cz_cluster_prod", "4000")]), rules=rules, period="2026-10",
                          usage=BASIS_USAGE)

    shares = defaultdict(Fraction)
    for c in allocation.contributions:
        shares[(c.service, c.category)] += c.amount / 4000
    assert dict(shares) == expected
    idle_companies = {c.company for c in allocation.contributions if c.category == "idle"}
    assert idle_companies == ({"alpha", "beta", "gamma"} if idle == "common" else
                              {""} if idle == "unallocated" else set())


def test_a_resource_of_the_blend_nothing_used_is_unattributable_and_the_rest_allocated():
    usage = [NamespaceUsage(r.cluster, r.namespace, r.memory_byte_seconds, r.service, r.cpu_core_seconds)
             for r in BASIS_USAGE if r.namespace != "__idle__"]
    rules = parse_rules(cluster_rules("{memory: 3, gpu: 1}"))
    allocation = allocate(line_items([("cz_cluster_prod", "1000")]), rules=rules, period="2026-10", usage=usage)

    unallocated = [c for c in allocation.contributions if c.category == "unallocated"]
    assert [(c.reason, c.amount) for c in unallocated] == [("no gpu usage for cluster 'prod'", 250)]
    assert table(allocation)[("gamma", "mcmp", "cluster", "prod")] == "225.00"  # 3/4 of 3/10 of 1000


def test_a_cluster_without_any_usage_of_its_basis_is_unattributable_naming_the_resources():
    rules = parse_rules(cluster_rules("{memory: 1, cpu: 1}"))
    usage = [NamespaceUsage("prod", "web", Decimal(0), "mobile", cpu_core_seconds=Decimal(0))]
    allocation = allocate(line_items([("cz_cluster_prod", "10")]), rules=rules, period="2026-10", usage=usage)

    assert [c.reason for c in allocation.contributions] == ["no memory or cpu usage for cluster 'prod'"]
