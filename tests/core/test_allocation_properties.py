"""Property tests: for random bills, weights and currencies the report adds up to the rounded bill."""

from collections import defaultdict
from decimal import Decimal
from fractions import Fraction

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.bills.taglines import allocate
from agent.core.allocation import report_precision
from agent.core.model import IDLE_NAMESPACE, NamespaceUsage
from agent.core.money import round_amount
from agent.core.rules import ClusterSource, Rules
from tests.support.factories import line_items

COMPANIES = ["alpha", "beta", "gamma", "delta"]
SERVICES = ["mobile", "mcmp", "search"]
TAGS = [None, "mobile", "mcmp", "search", "unknown-svc", "cz_common_all", "cz_common_nogroup", "cz_cluster_prod",
        "cz_cluster_empty", " mobile "]
CURRENCIES = ["USD", "KRW", "KWD", "JPY", "EUR"]

weights = st.integers(min_value=0, max_value=1000).map(Decimal)
# One resource, or a blend (its weights not all zero).
usage_bases = st.one_of(
    st.sampled_from(["memory", "cpu", "gpu"]),
    st.dictionaries(st.sampled_from(["memory", "cpu", "gpu"]), weights, min_size=1).filter(
        lambda blend: sum(blend.values()) > 0))
amounts = st.decimals(min_value=Decimal("-1000"), max_value=Decimal("100000"), places=6, allow_nan=False)


@st.composite
def rules_strategy(draw) -> Rules:
    company_weights = {c: draw(weights) for c in COMPANIES}
    company_weights[draw(st.sampled_from(COMPANIES))] += 1
    services = {}
    for service in SERVICES:
        users = draw(st.lists(st.sampled_from(COMPANIES), min_size=1, max_size=4, unique=True))
        services[service] = {c: draw(weights) + 1 for c in users}
    return Rules(
        companies=company_weights,
        services=services,
        common_groups={"all": SERVICES},
        unmapped_namespaces=draw(st.sampled_from(["common", "proportional"])),
        unattributable=draw(st.sampled_from(["unallocated", "common"])),
        idle=draw(st.sampled_from(["spread", "common", "unallocated"])),
        clusters={"prod": ClusterSource(usage_basis=draw(usage_bases))},
    )


@st.composite
def bill_strategy(draw) -> pd.DataFrame:
    frames = []
    for currency in draw(st.lists(st.sampled_from(CURRENCIES), min_size=1, max_size=3, unique=True)):
        lines = draw(st.lists(st.tuples(st.sampled_from(TAGS), amounts.map(str)), min_size=1, max_size=30))
        frames.append(line_items([(tag.strip() if tag else tag, cost) for tag, cost in lines], currency=currency))
    return pd.concat(frames, ignore_index=True)


measures = st.one_of(st.none(), st.integers(min_value=0, max_value=10**15).map(Decimal))
usage_strategy = st.lists(
    st.builds(NamespaceUsage, cluster=st.just("prod"),
              namespace=st.sampled_from(["a", "b", "c", "kube-system", IDLE_NAMESPACE]),
              memory_byte_seconds=measures, cpu_core_seconds=measures, gpu_device_seconds=measures,
              service=st.sampled_from([None, *SERVICES])),
    max_size=6,
    unique_by=lambda record: record.namespace,
).map(lambda records: [record if record.namespace != IDLE_NAMESPACE else
                       NamespaceUsage(record.cluster, record.namespace, record.memory_byte_seconds, None,
                                      record.cpu_core_seconds, record.gpu_device_seconds) for record in records])


@settings(max_examples=150, deadline=None)
@given(items=bill_strategy(), rules=rules_strategy(), usage=usage_strategy)
def test_report_adds_up_to_the_rounded_bill_and_no_row_is_lost(items, rules, usage):
    allocation = allocate(items, rules=rules, period="2026-10", usage=usage)

    bill = defaultdict(Decimal)
    for currency, cost in zip(items["currency"], items["cost"]):
        bill[currency] += cost
    for currency, total in bill.items():
        precision = report_precision(rules, currency)
        reported = sum((r.amount for r in allocation.rows if r.currency == currency), Decimal(0))
        assert reported == round_amount(total, precision)
        exact = sum((c.amount for c in allocation.contributions if c.currency == currency), Fraction(0))
        assert exact == Fraction(total)
    assert sum(line.line_count for line in allocation.tag_lines) == len(items)


@settings(max_examples=100, deadline=None)
@given(items=bill_strategy(), rules=rules_strategy(), usage=usage_strategy)
def test_each_row_is_within_one_minor_unit_of_its_exact_amount(items, rules, usage):
    allocation = allocate(items, rules=rules, period="2026-10", usage=usage)
    exact = defaultdict(Fraction)
    for c in allocation.contributions:
        exact[(c.company, c.service, c.category, c.cluster, c.currency)] += c.amount
    assert set(exact) == {row.key() for row in allocation.rows}
    for row in allocation.rows:
        unit = Fraction(1, 10 ** report_precision(rules, row.currency))
        assert abs(Fraction(row.amount) - exact[row.key()]) < unit
        assert row.amount.as_tuple().exponent == -report_precision(rules, row.currency)


@settings(max_examples=150, deadline=None)
@given(rules=rules_strategy(), usage=usage_strategy,
       amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2))
def test_a_cluster_line_goes_to_each_namespace_and_to_idle_capacity_by_the_blended_usage_shares(rules, usage, amount):
    allocation = allocate(line_items([("cz_cluster_prod", str(amount))]), rules=rules, period="2026-10", usage=usage)

    counted = [r for r in usage if r.namespace != IDLE_NAMESPACE or rules.idle != "spread"]
    expected: dict[str, Fraction] = defaultdict(Fraction)
    missing = Fraction(0)
    blend = rules.clusters["prod"].usage_basis
    blend = {blend: Decimal(1)} if isinstance(blend, str) else blend
    for resource, weight in blend.items():
        weight = Fraction(weight) / sum(Fraction(w) for w in blend.values())
        total = sum(Fraction(r.used(resource) or 0) for r in counted)
        if not total:
            missing += weight
        for record in counted:
            if total:
                expected[record.namespace] += weight * Fraction(record.used(resource) or 0) / total
    through = defaultdict(Fraction)
    for c in allocation.contributions:
        through[c.namespace] += c.amount
    if rules.unmapped_namespaces == "common" and missing < 1:
        for namespace, share in expected.items():
            assert through[namespace] == Fraction(amount) * share
    idle = sum((c.amount for c in allocation.contributions if c.category == "idle"), Fraction(0))
    assert idle == (0 if rules.idle == "spread" or missing == 1 else
                    through[IDLE_NAMESPACE] if rules.unmapped_namespaces == "proportional" else
                    Fraction(amount) * expected[IDLE_NAMESPACE])
    assert all((c.company == "") == (rules.idle == "unallocated")
               for c in allocation.contributions if c.category == "idle")
    assert sum((c.amount for c in allocation.contributions), Fraction(0)) == Fraction(amount)
