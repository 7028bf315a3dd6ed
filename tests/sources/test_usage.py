from decimal import Decimal

import pytest

from agent.errors import UsageError
from agent.sources.usage import parse_usage, usage_digest


def test_usage_rows_parse_with_optional_service():
    usage = parse_usage("cluster,namespace,service,memory_byte_seconds\nprod,web,mobile,10\nprod,kube-system,,2.5\n",
                        source="u.csv")
    assert [(u.cluster, u.namespace, u.service, u.memory_byte_seconds) for u in usage] == [
        ("prod", "web", "mobile", Decimal(10)), ("prod", "kube-system", None, Decimal("2.5"))]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cluster,namespace,memory_byte_seconds\n", "u.csv, row 1: missing column(s) service"),
        ("cluster,namespace,service,memory_byte_seconds\nprod,web,,lots\n", "u.csv, row 2, column 'memory_byte_seconds'"),
        ("cluster,namespace,service,memory_byte_seconds\nprod,web,,1\nprod,db,,-1\n", "row 3, column 'memory_byte_seconds': must be >= 0"),
        ("cluster,namespace,service,memory_byte_seconds\n,web,,1\n", "row 2, column 'cluster': empty"),
    ],
)
def test_bad_usage_names_file_row_and_column(text, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_usage(text, source="u.csv")


def test_usage_digest_ignores_row_order():
    header = "cluster,namespace,service,memory_byte_seconds\n"
    first = parse_usage(header + "prod,a,,1\nprod,b,,2\n", source="u.csv")
    second = parse_usage(header + "prod,b,,2\nprod,a,,1\n", source="u.csv")
    assert usage_digest(first) == usage_digest(second)


@pytest.mark.parametrize(("rows", "message"), [
    ("prod,web,mobile,6\nprod,web,mcmp,3\n",
     "u.csv, row 3: namespace 'web' of cluster 'prod' is already given on row 2 with another service (mobile then mcmp)"),
    ("prod,web,mobile,6\nprod,db,,1\nprod,web,mobile,6\n",
     "u.csv, row 4: namespace 'web' of cluster 'prod' is already given on row 2; give each namespace once"),
    ("prod,web,,6\nprod,web,mobile,6\n", "row 3: namespace 'web' of cluster 'prod' is already given on row 2 with another "
                                          "service (none then mobile)"),
])
def test_a_namespace_given_twice_is_refused_with_both_rows(rows, message):
    with pytest.raises(UsageError) as refused:
        parse_usage("cluster,namespace,service,memory_byte_seconds\n" + rows, source="u.csv")
    assert message in str(refused.value)


def test_the_same_namespace_in_two_clusters_is_two_namespaces():
    usage = parse_usage("cluster,namespace,service,memory_byte_seconds\nprod,web,mobile,6\nstage,web,mobile,3\n",
                        source="u.csv")
    assert [(u.cluster, u.memory_byte_seconds) for u in usage] == [("prod", Decimal(6)), ("stage", Decimal(3))]
