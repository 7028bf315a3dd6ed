"""The namespace drill-down: report rows split by namespace, to the minor unit, adding up to each row."""

from collections import defaultdict
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.bills.taglines import allocate
from agent.core.allocation import report_precision
from agent.core.model import NamespaceUsage
from agent.core.namespaces import namespace_rows
from agent.core.rules import parse_rules
from tests.core.test_allocation import WORKED_BILL, WORKED_RULES, WORKED_USAGE
from tests.core.test_allocation_properties import bill_strategy, rules_strategy
from tests.support.factories import line_items

NAMESPACES = ["api", "web", "batch", "db", "cache", "kube-system", "monitoring"]


def table(rows):
    return {(r.company, r.service, r.category, r.cluster, r.namespace): (str(r.amount), r.memory_share)
            for r in rows}


def test_worked_example_by_namespace():
    allocation = allocate(line_items(WORKED_BILL), rules=parse_rules(WORKED_RULES), period="2026-10",
                          usage=WORKED_USAGE)
    rows = namespace_rows(allocation.rows, allocation.contributions)
    assert table(rows) == {
        ("alpha", "mobile", "cluster", "prod", "mobile-api"): ("420.00", Fraction(3, 5)),
        ("beta", "mobile", "cluster", "prod", "mobile-api"): ("180.00", Fraction(3, 5)),
        ("gamma", "mcmp", "cluster", "prod", "mcmp"): ("300.00", Fraction(3, 10)),
        ("alpha", "mobile", "service_common", "", ""): ("105.00", None),
        ("beta", "mobile", "service_common", "", ""): ("45.00", None),
        ("gamma", "mcmp", "service_common", "", ""): ("150.00", None),
        ("alpha", "mobile", "service_exclusive", "", ""): ("140.00", None),
        ("beta", "mobile", "service_exclusive", "", ""): ("60.00", None),
        # kube-system maps to no service: its share of the cluster joined the common pool.
        ("alpha", "", "common", "prod", "kube-system"): ("50.00", Fraction(1, 10)),
        ("beta", "", "common", "prod", "kube-system"): ("30.00", Fraction(1, 10)),
        ("gamma", "", "common", "prod", "kube-system"): ("20.00", Fraction(1, 10)),
        ("alpha", "", "common", "", ""): ("50.00", None),
        ("beta", "", "common", "", ""): ("30.00", None),
        ("gamma", "", "common", "", ""): ("20.00", None),
    }


def test_a_row_split_in_thirds_gives_its_odd_cent_to_the_first_namespace():
    rules = parse_rules("companies: {alpha: 1}\nservices: {web: {alpha: 1}}\n")
    usage = [NamespaceUsage("prod", name, Decimal(1), "web") for name in ("c", "a", "b")]
    allocation = allocate(line_items([("cz_cluster_prod", "100")]), rules=rules, period="2026-10", usage=usage)
    rows = namespace_rows(allocation.rows, allocation.contributions)
    assert [(r.namespace, str(r.amount), r.memory_share) for r in rows] == [
        ("a", "33.34", Fraction(1, 3)), ("b", "33.33", Fraction(1, 3)), ("c", "33.33", Fraction(1, 3))]


usage_strategy = st.lists(
    st.builds(NamespaceUsage, cluster=st.sampled_from(["prod", "empty"]), namespace=st.sampled_from(NAMESPACES),
              memory_byte_seconds=st.integers(min_value=0, max_value=10**12).map(Decimal),
              service=st.sampled_from([None, "mobile", "mcmp", "search", "unknown-svc"])),
    max_size=12, unique_by=lambda usage: (usage.cluster, usage.namespace),
)


@settings(max_examples=150, deadline=None)
@given(items=bill_strategy(), rules=rules_strategy(), usage=usage_strategy)
def test_namespace_rows_add_up_to_each_report_row_for_any_namespace_shares(items, rules, usage):
    allocation = allocate(items, rules=rules, period="2026-10", usage=usage)
    rows = namespace_rows(allocation.rows, allocation.contributions)
    exact: dict[tuple, Fraction] = defaultdict(Fraction)
    for c in allocation.contributions:
        exact[(c.company, c.service, c.category, c.cluster, c.currency, c.namespace)] += c.amount
    summed: dict[tuple, Decimal] = defaultdict(Decimal)
    for row in rows:
        key = (row.company, row.service, row.category, row.cluster, row.currency)
        summed[key] += row.amount
        unit = Fraction(1, 10 ** report_precision(rules, row.currency))
        # Each namespace's exact amount is floored, or given one unit more.
        assert abs(Fraction(row.amount) - exact[(*key, row.namespace)]) <= unit
        assert row.amount.as_tuple().exponent == -report_precision(rules, row.currency)
        assert (row.memory_share is None) == (row.namespace == "")
    assert summed == {row.key(): row.amount for row in allocation.rows}
    assert set(exact) == {(r.company, r.service, r.category, r.cluster, r.currency, r.namespace) for r in rows}
