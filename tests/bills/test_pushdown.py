"""The push-down of a bill table to a real Trino server gives what the embedded import gives for the same file:
the same group totals (amounts, decimals, line counts; per tag, per split, per charge day and kind), the same rows
out of the period, the same rejects (column, reason, raw cost) and, through `cz-agent allocate`, the same report
byte for byte."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.bills import ImportOptions, total_bill
from agent.bills.pushdown import DAY, GROUP, BillQuery, BillTable, total_table
from agent.bills.totals import BillTotals
from agent.core.sql import quote_literal as quote
from agent.errors import BillFormatError
from agent.sources.trino import TrinoQueries

pytestmark = pytest.mark.integration

SHARED_BILLS = Path(__file__).resolve().parents[1] / "data" / "bills" / "real"
DATA = Path(__file__).resolve().parents[1] / "data" / "bills"
DEMO = Path(__file__).resolve().parents[2] / "demo"
EXAMPLES = int(os.environ.get("CZ_AGENT_FUZZ_EXAMPLES", "15"))

# Real bills: the public samples (copied from the shared data) and the small test bills of every format.
REAL_BILLS = [
    (SHARED_BILLS / "focus-1.0-sample.csv", None),
    (SHARED_BILLS / "aws-cur-legacy-sample.csv", None),
    (SHARED_BILLS / "azure-ea-sample.csv", "2023-09"),
    (DATA / "focus.csv", "2024-09"),
    (DATA / "cur2.csv", None),
    (DATA / "native.csv", "2024-09"),
    (DATA / "azure.csv", None),
    (DATA / "bad.csv", "2024-09"),
]

# Cells no bill should hold, for every field the import judges.
HOSTILE_COSTS = ["1.5", "-0.25", "+1.5", "1.", ".5", "1E-5", "5.6E-05", "1.0000000000001", "12345678901234567",
                 "1" * 25, "NaN", "-Infinity", "", "NULL", " 2.50 ", "\u0661.5", "1_000", "0x10", "1,5", "-0.00",
                 "99999999999999.999999999999", "1.0E-5", "-2.5E-7", "1E-3", "1.2345678901E-2", "9.99E-13",
                 "1.0E-12", "4.0E-01", "1.0e-5", " 3.5E-4 ", "1.0E-100", "0.0E-5", "1.5E+2", "1.0E7", "1.25E1", "-1.0E0",
                 "1.5E-0", "1.0E15", "9.9E14", "1.2345E2", "-0.0E0", "1.E-5", "12.5E1", "1.0E+99",
                 "1.25" + "0" * 28, "0." + "0" * 29 + "1"]
HOSTILE_DATES = ["2024-09-01", "2024-09-30T23:00:00Z", "2024-10-01 00:00:00.000", "20240901", "9/1/2024",
                 "2024-13-01", "2024-09-01x", " 2024-09-02", "2024-09", "", "NULL", "\u0662024-09-01", "garbage",
                 "2024-09-31 10:00:00"]
HOSTILE_KINDS = ["Usage-Based", "usage-based", " One-Time ", "Recurring", "", "NULL", "x'y"]
HOSTILE_TEXT = ["USD", "usd", " EUR ", "US D", "", "NULL", "EURO", "\u00e9\u00e9\u00e9", "x'y", "a\"b", "\x00"]
HOSTILE_TAGS = ['{"cz_container_bill": "svc-a"}', '{"user:cz_container_bill": "cz_cluster_prod"}',
                '{"CZ_Container_Bill": " cz_common_db "}', '"cz_container_bill": "svc-b","x": "y"', "{", "[]",
                '{"cz_container_bill": null}', '{"cz_container_bill": 12}', "", "NULL", '{"other": "x"}']


def as_parquet(path: Path, rows: list[list[str]]) -> Path:
    header = rows[0]
    pq.write_table(pa.table({name: [row[i] for row in rows[1:]] for i, name in enumerate(header)},
                            schema=pa.schema([(name, pa.string()) for name in header])), path)
    return path


def csv_as_parquet(source: Path, target: Path) -> Path:
    """A CSV bill as Parquet with every column text, as an export to a data lake would hold it."""
    table = pacsv.read_csv(source, convert_options=pacsv.ConvertOptions(
        column_types={name: pa.string() for name in pacsv.read_csv(source).column_names}, strings_can_be_null=False))
    pq.write_table(table, target)
    return target


def outcome(bill: BillTotals) -> dict:
    """What a run takes from a bill, without where each row came from (a table has no line numbers)."""
    return {
        "format": bill.bill_format,
        # A table's column names are lower case in Trino's metastore.
        "cost_column": bill.cost_column.lower(),
        "input": bill.input_rows,
        "tags": {key: (group.exact(), group.lines) for key, group in bill.tag_groups.items()},
        "splits": {key: (group.exact(), group.lines) for key, group in bill.split_groups.items()},
        # The forecast's: per tag, charge day and charge kind.
        "days": {key: (group.exact(), group.lines) for key, group in bill.day_groups.items()},
        "outside": {key: (group.exact(), group.lines) for key, group in bill.outside.items()},
        "rejected": Counter((row.column.lower(), row.reason, row.raw_cost) for row in bill.rejected),
    }


def pushed_down(trino, table: str, options: ImportOptions) -> BillTotals:
    return total_table(TrinoQueries(trino.url, user="test"), BillTable(engine="trino", table=table),
                       options=options)


@pytest.mark.parametrize(("path", "period"), REAL_BILLS, ids=lambda value: getattr(value, "name", str(value)))
@pytest.mark.parametrize("table_format", ["CSV", "PARQUET"])
def test_a_real_bill_pushed_down_gives_what_the_file_gives(trino, tmp_path, path, period, table_format) -> None:
    options = ImportOptions(period=period, default_currency="USD", untagged=True)
    source = path if table_format == "CSV" else csv_as_parquet(path, tmp_path / f"{path.stem}.parquet")
    table = trino.table("pushdown", f"{path.stem}_{table_format}".replace("-", "_").replace(".", "_").lower(), [source],
                        format=table_format)

    expected = outcome(total_bill(source, options=options))
    got = outcome(pushed_down(trino, table, options))

    assert got == expected
    assert got["splits"], "the bill has accepted lines"


@settings(max_examples=EXAMPLES, deadline=None, derandomize="CZ_AGENT_FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), period=st.sampled_from([None, "2024-09"]))
def test_hostile_cells_get_the_same_verdict_pushed_down(trino, tmp_path_factory, data, period) -> None:
    header = ["BillingPeriodStart", "ChargePeriodStart", "EffectiveCost", "BillingCurrency", "SubAccountName",
              "Tags", "ChargeFrequency"]
    cells = [HOSTILE_DATES, HOSTILE_DATES, HOSTILE_COSTS, HOSTILE_TEXT, HOSTILE_TEXT, HOSTILE_TAGS, HOSTILE_KINDS]
    rows = data.draw(st.lists(st.tuples(*(st.sampled_from(values) for values in cells)), min_size=1, max_size=40))
    directory = tmp_path_factory.mktemp("hostile")
    bill = as_parquet(directory / "bill.parquet", [header, *map(list, rows)])
    options = ImportOptions(period=period)
    table = trino.table("fuzz", directory.name.replace("-", "_"), [bill], format="PARQUET")

    assert outcome(pushed_down(trino, table, options)) == outcome(total_bill(bill, options=options))


def test_allocate_from_a_table_writes_the_same_report_as_from_the_file(trino, tmp_path) -> None:
    table = trino.table("pushdown", "demo_allocate", [DEMO / "bill-2026-10.csv"], format="CSV")
    same_report_from_table(tmp_path, engine="trino", table=table, env={**os.environ, "CZ_AGENT_TRINO_URL": trino.url})


def same_report_from_table(tmp_path: Path, *, engine: str, table: str, env: dict[str, str]) -> None:
    """`cz-agent allocate` of the demo from the table (rules with `bill: {engine, table}`) writes the report it
    writes from the demo bill file, byte for byte."""
    table_rules = tmp_path / "rules.yaml"
    table_rules.write_text((DEMO / "rules.yaml").read_text() + f"\nbill:\n  engine: {engine}\n  table: {table}\n")
    common = [sys.executable, "-m", "agent.cli", "allocate", "--period", "2026-10", "--usage",
              str(DEMO / "usage-2026-10.csv")]

    from_file = subprocess.run([*common, "--rules", str(DEMO / "rules.yaml"), "--bill", str(DEMO / "bill-2026-10.csv"),
                                "--out", str(tmp_path / "file.csv")], capture_output=True, text=True,
                               env={**env, "CZ_AGENT_STORE_URL": f"sqlite:///{tmp_path / 'file.db'}"})
    from_table = subprocess.run([*common, "--rules", str(table_rules), "--out", str(tmp_path / "table.csv")],
                                capture_output=True, text=True,
                                env={**env, "CZ_AGENT_STORE_URL": f"sqlite:///{tmp_path / 'table.db'}"})

    assert from_file.returncode == 0, from_file.stderr
    assert from_table.returncode == 0, from_table.stderr
    assert (tmp_path / "table.csv").read_bytes() == (tmp_path / "file.csv").read_bytes()
    assert f"{engine}:{table}" in from_table.stdout + from_table.stderr


def test_allocate_refuses_a_bill_file_when_the_rules_read_a_table(tmp_path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text((DEMO / "rules.yaml").read_text() + "\nbill:\n  engine: trino\n  table: hive.bills.cur\n")
    run = subprocess.run([sys.executable, "-m", "agent.cli", "allocate", "--period", "2026-10", "--rules", str(rules),
                          "--bill", str(DEMO / "bill-2026-10.csv"), "--usage", str(DEMO / "usage-2026-10.csv"),
                          "--out", str(tmp_path / "out.csv")], capture_output=True, text=True,
                         env={**os.environ, "CZ_AGENT_STORE_URL": f"sqlite:///{tmp_path / 'runs.db'}"})
    assert run.returncode == 1
    assert "give no --bill" in run.stderr
    assert not (tmp_path / "out.csv").exists()


def test_a_missing_table_is_a_clear_error(trino) -> None:
    with pytest.raises(BillFormatError, match="no such table"):
        pushed_down(trino, "hive.bills.no_such_bill", ImportOptions())


def test_a_sum_past_the_decimal_range_is_an_error_not_a_wrapped_total(trino, tmp_path) -> None:
    # 10**15 - 1 is the largest cost summed in the engine; enough of them overflow DECIMAL(38, 12).
    big = "999999999999999.999999999999"
    bill = as_parquet(tmp_path / "big.parquet", [["EffectiveCost", "BillingCurrency", "ChargePeriodStart"],
                                                  *[[big, "USD", "2024-09-01"]] * 200_001])
    table = trino.table("pushdown", "overflow", [bill], format="PARQUET")
    with pytest.raises(BillFormatError, match="NUMERIC_VALUE_OUT_OF_RANGE|overflow|out of range"):
        pushed_down(trino, table, ImportOptions())


def test_the_query_names_every_column_once_quoted_and_reads_costs_as_text() -> None:
    from agent.bills.columns import resolve_columns
    from agent.bills.detect import SPECS

    header = ["EffectiveCost", "BillingCurrency", "ChargePeriodStart", "Tags", 'Sub"Account']
    options = ImportOptions(sub_account_column='Sub"Account')
    columns = resolve_columns(header, spec=SPECS["focus"], options=options, source="t")
    query = BillQuery(table=BillTable(engine="trino", table="hive.bills.focus"), columns=columns,
                      types={"EffectiveCost": "double", "BillingCurrency": "varchar", "ChargePeriodStart": "date",
                             "Tags": "map(varchar, varchar)", 'Sub"Account': "varchar(64)"})
    sql = query.reduce()
    assert 'FROM "hive"."bills"."focus"' in sql
    assert 'CAST("EffectiveCost" AS varchar)' in sql
    assert 'CAST("ChargePeriodStart" AS varchar)' in sql and '"Sub""Account" AS r_sub_account' in sql
    assert 'json_format(CAST("Tags" AS JSON))' in sql
    assert "DECIMAL(38, 12)" in sql and "regexp_extract" in sql


def test_a_table_name_must_name_catalog_schema_and_table() -> None:
    with pytest.raises(BillFormatError, match="catalog.schema.table"):
        BillTable(engine="trino", table="bills.focus").quoted()


def test_equal_answers_give_equal_digests(trino, tmp_path) -> None:
    first = pushed_down(trino, trino.table("pushdown", "digest_a", [DATA / "focus.csv"], format="CSV"), ImportOptions())
    again = pushed_down(trino, trino.table("pushdown", "digest_b", [DATA / "focus.csv"], format="CSV"), ImportOptions())
    other = pushed_down(trino, trino.table("pushdown", "digest_c", [DATA / "cur2.csv"], format="CSV"), ImportOptions())
    assert first.sha256 == again.sha256 != other.sha256


def test_typed_parquet_columns_give_what_the_file_gives(trino, tmp_path) -> None:
    # CUR 2.0 as Athena and Data Exports hold it: decimal costs, timestamps, and the tags as a map.
    directory = tmp_path / "typed"
    directory.mkdir()
    tags = pa.map_(pa.string(), pa.string())
    table = pa.table({
        "bill_billing_period_start_date": pa.array([1725148800000, 1725148800000, 1727740800000, None],
                                                   pa.timestamp("ms")),
        "line_item_usage_start_date": pa.array([1725152400000, 1727650800000, 1727740800000, 1725152400000],
                                               pa.timestamp("ms")),
        "line_item_unblended_cost": pa.array([Decimal("1.250000"), Decimal("-0.500000"), Decimal("2.000001"),
                                              Decimal("3.000000")], pa.decimal128(18, 6)),
        "line_item_currency_code": ["USD", "USD", "usd", "EUR"],
        "resource_tags": pa.array([[("user_cz_container_bill", "svc-a")], [("other", "x")], [],
                                   [("USER_CZ_CONTAINER_BILL", " cz_cluster_prod ")]], tags),
    })
    bill = directory / "cur2.parquet"
    pq.write_table(table, bill)
    name = trino.table("typed", "cur2", [bill], format="PARQUET", columns=[
        ("bill_billing_period_start_date", "timestamp(3)"), ("line_item_usage_start_date", "timestamp(3)"),
        ("line_item_unblended_cost", "decimal(18, 6)"), ("line_item_currency_code", "varchar"),
        ("resource_tags", "map(varchar, varchar)")])

    for period in (None, "2024-09"):
        options = ImportOptions(period=period)
        expected = outcome(total_bill(bill, options=options))
        assert outcome(pushed_down(trino, name, options)) == expected
        assert expected["splits"]


def test_small_double_costs_are_summed_in_the_engine_digit_for_digit(trino, tmp_path) -> None:
    # CUR 2.0 tables in Athena hold costs as doubles, which the engine writes in scientific notation (1.25E1).
    directory = tmp_path / "doubles"
    directory.mkdir()
    costs = [1e-05, 2.5e-07, -3.75e-06, 0.125, 1.0e-03, 9.87654321e-04, 12.5, 1e-11, 1.0, 12345678.25, -7e14]
    bill = directory / "cur2.parquet"
    pq.write_table(pa.table({"line_item_unblended_cost": pa.array(costs, pa.float64()),
                             "line_item_currency_code": ["USD"] * len(costs),
                             "line_item_usage_start_date": ["2024-09-01T00:00:00Z"] * len(costs),
                             "resource_tags_user_cz_container_bill": ["svc-a"] * len(costs)}), bill)
    name = trino.table("typed", "doubles", [bill], format="PARQUET", columns=[
        ("line_item_unblended_cost", "double"), ("line_item_currency_code", "varchar"),
        ("line_item_usage_start_date", "varchar"), ("resource_tags_user_cz_container_bill", "varchar")])
    written = {text for (text,) in trino.execute(f"SELECT CAST(line_item_unblended_cost AS varchar) FROM {name}")}
    assert {"1.0E-5", "1.25E1"} <= written, "the engine writes doubles in scientific notation"

    from agent.bills.columns import resolve_columns
    from agent.bills.detect import SPECS

    types = dict(TrinoQueries(trino.url, user="test").columns(name))
    query = BillQuery(table=BillTable(engine="trino", table=name), types=types,
                      columns=resolve_columns(list(types), spec=SPECS["cur2"], options=ImportOptions(), source=name))
    kinds = Counter(row[0] for row in trino.execute(query.reduce()))
    assert kinds == {GROUP: 1, DAY: 1}, "every line is summed in one group and its day, none sent as written"

    pushed = pushed_down(trino, name, ImportOptions())
    assert outcome(pushed) == outcome(total_bill(bill, options=ImportOptions()))
    assert sum(group.exact() for group in pushed.tag_groups.values()) == sum(Decimal(repr(cost)) for cost in costs)


def test_scientific_costs_are_written_out_to_the_same_decimal_with_the_same_places(trino) -> None:
    import random

    from agent.bills.pushdown import SCIENTIFIC, _written_out

    draw = random.Random(16)
    texts = ["1.0E-5", "1.25E1", "1.0E0", "-0.0E0", "5.6E-05", "1.5E+2", "9.99E14", "1.0e-99", "1E7", "-4E-1"]
    for _ in range(3000):
        fraction = "".join(draw.choices("0123456789", k=draw.randint(0, 16)))
        texts.append(f"{draw.choice(['', '-'])}{draw.randint(0, 9)}{'.' + fraction if fraction else ''}"
                     f"{draw.choice('eE')}{draw.choice(['', '+', '-'])}{draw.randint(0, 40):0{draw.randint(1, 2)}d}")
    rows = ", ".join(f"({quote(text)})" for text in texts)
    answer = trino.execute(f"SELECT c, {_written_out('c')} FROM (VALUES {rows}) AS t(c)")

    assert len(answer) == len(texts)
    for text, written in answer:
        assert re.fullmatch(SCIENTIFIC, text)
        exact = Decimal(text)
        assert Decimal(written) == exact and "E" not in written.upper(), (text, written)
        assert -Decimal(written).as_tuple().exponent == max(0, -exact.as_tuple().exponent), (text, written)


def test_a_query_running_past_the_timeout_is_ended_by_the_server(trino) -> None:
    # The client's own timeout bounds each request; the whole query is bounded by the server's query_max_run_time.
    numbers = "UNNEST(sequence(1, 10000))"
    slow = (f"SELECT count(*) FROM {numbers} AS a(x) CROSS JOIN {numbers} AS b(y) CROSS JOIN {numbers} AS c(z) "
            "WHERE (x * y + z) % 7 = 3")
    with pytest.raises(BillFormatError, match="EXCEEDED_TIME_LIMIT"):
        list(TrinoQueries(trino.url, user="test", timeout_seconds=1).batches(slow))
