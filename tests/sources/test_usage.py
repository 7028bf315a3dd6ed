import operator
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import UsageError
from agent.core.model import IDLE_NAMESPACE, NamespaceUsage
from agent.core.rules import parse_rules
from agent.sources.usage import format_usage, parse_usage, read_usage, usage_digest


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


def test_cpu_and_gpu_columns_are_read_where_given_and_written_back_only_then():
    text = ("cluster,namespace,service,memory_byte_seconds,cpu_core_seconds,gpu_device_seconds\n"
            "prod,web,mobile,10,2.5,\nprod,__idle__,,30,7,0\n")
    usage = parse_usage(text, source="u.csv")
    assert [(u.namespace, u.memory_byte_seconds, u.cpu_core_seconds, u.gpu_device_seconds) for u in usage] == [
        ("web", Decimal(10), Decimal("2.5"), None), ("__idle__", Decimal(30), Decimal(7), Decimal(0))]
    assert format_usage(usage) == ("cluster,namespace,service,memory_byte_seconds,cpu_core_seconds,gpu_device_seconds\n"
                                   "prod,__idle__,,30,7,0\nprod,web,mobile,10,2.5,\n")
    memory_only = "cluster,namespace,service,memory_byte_seconds\nprod,web,mobile,10\n"
    assert format_usage(parse_usage(memory_only, source="u.csv")) == memory_only


@pytest.mark.parametrize(("text", "message"), [
    ("cluster,namespace,service,memory_byte_seconds,cpu_core_seconds\nprod,web,,,\n",
     "u.csv, row 2, column 'memory_byte_seconds': empty; give the namespace's usage"),
    ("cluster,namespace,service,memory_byte_seconds,cpu_core_seconds\nprod,web,,1,-2\n",
     "u.csv, row 2, column 'cpu_core_seconds': must be >= 0"),
    ("cluster,namespace,service,memory_byte_seconds,gpu_device_seconds\nprod,web,,1,two\n",
     "u.csv, row 2, column 'gpu_device_seconds'"),
    ("cluster,namespace,service,memory_byte_seconds\nprod,__idle__,mobile,1\n",
     "u.csv, row 2, column 'service': the idle capacity row (__idle__) belongs to no service"),
])
def test_bad_measures_name_file_row_and_column(text, message):
    with pytest.raises(UsageError) as refused:
        parse_usage(text, source="u.csv")
    assert message in str(refused.value)


RULES = "companies: {a: 1}\nservices: {mobile: {a: 1}}\n"


@pytest.mark.parametrize(("rules", "text", "message"), [
    (RULES + "clusters: {prod: {usage_basis: {memory: 1, cpu: 1}}}\n",
     "cluster,namespace,service,memory_byte_seconds\nprod,web,mobile,10\n",
     "u.csv: cluster 'prod' is split by cpu usage (its usage_basis), but the table has no cpu_core_seconds for it"),
    (RULES + "idle: common\n", "cluster,namespace,service,memory_byte_seconds\nprod,web,mobile,10\n",
     "u.csv: idle: common needs cluster 'prod''s idle capacity: a row with namespace __idle__ and its "
     "memory_byte_seconds"),
    (RULES + "idle: unallocated\nclusters: {prod: {usage_basis: gpu}}\n",
     "cluster,namespace,service,memory_byte_seconds,gpu_device_seconds\nprod,web,mobile,10,1\nprod,__idle__,,5,\n",
     "needs cluster 'prod''s idle capacity: a row with namespace __idle__ and its gpu_device_seconds"),
])
def test_a_table_without_what_the_rules_split_a_cluster_by_is_refused(tmp_path, rules, text, message):
    path = tmp_path / "u.csv"
    path.write_text(text)
    with pytest.raises(UsageError) as refused:
        read_usage(path, rules=parse_rules(rules))
    assert str(refused.value).startswith(f"{tmp_path}/u.csv: ")
    assert message in str(refused.value)


names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1,
                max_size=12).filter(lambda name: name != IDLE_NAMESPACE)
figures = st.one_of(st.none(), st.decimals(min_value=0, max_value=Decimal(10) ** 20, places=6))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(names, names, st.one_of(st.none(), names), figures, figures, figures), max_size=8,
                unique_by=lambda row: (row[0], row[1])))
def test_a_table_written_out_reads_back_the_same(rows):
    usage = [NamespaceUsage(cluster, namespace, memory, service, cpu, gpu)
             for cluster, namespace, service, memory, cpu, gpu in rows
             if any(figure is not None for figure in (memory, cpu, gpu))]
    # A table where no row measures memory has no memory figure at all to write: its cells are empty.
    read = parse_usage(format_usage(usage), source="u.csv")
    key = operator.attrgetter("cluster", "namespace")
    assert sorted(read, key=key) == sorted(usage, key=key)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_reads_as_a_table_or_fails_with_a_usage_error(text):
    header = "cluster,namespace,service,memory_byte_seconds,cpu_core_seconds,gpu_device_seconds\n"
    try:
        parse_usage(header + text, source="u.csv")
    except UsageError as e:
        assert str(e).startswith("u.csv, row ")
