"""The Trino the push-down tests run against (tests/support/fixtures_trino.py): its Hive catalog reads CSV and Parquet
bills from a local directory and sums their costs exactly, a DECIMAL sum that overflows raises, and column names are
matched without regard to case."""

from __future__ import annotations

import csv
import gzip
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from trino.exceptions import TrinoUserError

from tests.support.fixtures_trino import TrinoServer

pytestmark = pytest.mark.integration

BILLS = Path(__file__).resolve().parents[1] / "data" / "bills"
# 1,000 rows; costs with up to 11 decimals, some negative; mixed-case FOCUS column names.
FOCUS = BILLS / "real" / "focus-1.0-sample.csv"
EXACT_SUM = "sum(CAST({column} AS DECIMAL(38, 12)))"


def costs(bill: Path, column: str) -> list[Decimal]:
    with (gzip.open if bill.suffix == ".gz" else open)(bill, "rt", newline="", encoding="utf-8-sig") as text:
        return [Decimal(row[column]) for row in csv.DictReader(text)]


def count_and_sum(trino: TrinoServer, table: str, column: str) -> list[list]:
    exact_sum = EXACT_SUM.format(column=f'"{column}"')
    return trino.execute(f"SELECT count(*), {exact_sum} FROM {table}")


@pytest.mark.parametrize(("name", "bill", "cost"), [("focus_csv", FOCUS, "BilledCost"),
                                                    ("native_csv_gz", BILLS / "native.csv.gz", "unblendedCost")])
def test_a_csv_table_sums_its_costs_exactly(trino: TrinoServer, name: str, bill: Path, cost: str) -> None:
    expected = costs(bill, cost)
    table = trino.table("bills", name, [bill], format="CSV")
    assert count_and_sum(trino, table, cost) == [[len(expected), sum(expected)]]


def test_a_parquet_table_takes_its_columns_from_the_file_and_sums_its_costs_exactly(trino: TrinoServer,
                                                                                      tmp_path: Path) -> None:
    # Costs as exact decimals; the other columns as pyarrow reads them (timestamps, doubles, integers, strings, and
    # all-null columns).
    parquet = tmp_path / "focus.parquet"
    types = pacsv.ConvertOptions(column_types={"BilledCost": pa.decimal128(38, 11)})
    pq.write_table(pacsv.read_csv(FOCUS, convert_options=types), parquet)
    expected = costs(FOCUS, "BilledCost")
    table = trino.table("bills", "focus_parquet", [parquet], format="PARQUET")
    assert count_and_sum(trino, table, "BilledCost") == [[len(expected), sum(expected)]]
    described = dict(trino.execute(f"SELECT column_name, data_type FROM {trino.catalog}.information_schema.columns "
                                   "WHERE table_schema = 'bills' AND table_name = 'focus_parquet'"))
    assert (described["billedcost"], described["chargeperiodstart"], described["chargeclass"]) == (
        "decimal(38,11)", "timestamp(3)", "varchar")


def test_a_decimal_sum_that_overflows_raises(trino: TrinoServer, tmp_path: Path) -> None:
    largest = "9" * 26 + "." + "9" * 12
    bill = tmp_path / "huge.csv"
    bill.write_text(f"cost\n{largest}\n{largest}\n", encoding="utf-8")
    table = trino.table("bills", "overflow_csv", [bill], format="CSV")
    assert trino.execute(f"SELECT max(CAST(cost AS DECIMAL(38, 12))) FROM {table}") == [[Decimal(largest)]]
    with pytest.raises(TrinoUserError, match="NUMERIC_VALUE_OUT_OF_RANGE"):
        count_and_sum(trino, table, "cost")


def test_column_names_are_lowercased_and_parquet_columns_matched_without_regard_to_case(trino: TrinoServer,
                                                                                       tmp_path: Path) -> None:
    # A file whose names differ only in case: Trino reads the first of them, silently. Whoever pushes a query down
    # must refuse such a file first.
    parquet = tmp_path / "twins.parquet"
    pq.write_table(pa.table({"Cost": ["1.5", "2.5"], "cost": ["10", "20"], "Currency": ["USD", "USD"]}), parquet)
    table = trino.table("bills", "case_twins", [parquet], format="PARQUET", columns=[("COST", "varchar"),
                                                                                     ("currency", "varchar")])
    with trino.connect() as connection:
        cursor = connection.cursor()
        cursor.execute(f'SELECT "Cost", currency FROM {table}')
        assert (cursor.fetchall(), [column[0] for column in cursor.description]) == (
            [["1.5", "USD"], ["2.5", "USD"]], ["Cost", "currency"])
    assert [row[0] for row in trino.execute(f"SHOW COLUMNS FROM {table}")] == ["cost", "currency"]
