"""total_bill takes well-formed rows through Arrow (agent.bills.fast) and leaves the others to convert.py, row by
row. Whichever way a row goes, whichever reader reads it (Arrow's CSV parser, the row-by-row CSV reader it falls
back on, Parquet) and however Parquet stores its cost (text, decimal, double), it must get the verdict convert.py,
the exact judge, gives it: the same totals, line counts, rejected rows and row samples."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.bills import ImportOptions, fast, reader, total_bill, totals
from agent.bills.totals import BillTotals
from agent.errors import FastReadError
from tests.bills.test_fuzz import EXAMPLES, FUZZ
from tests.support.bills import judged_row_by_row, rejects, rows_of, same_lines, view

DATA = Path(__file__).resolve().parents[1] / "data" / "bills"
COSTS = ["12.5", "-0.50", "0", "-0", "+3", ".25", "7.", "1e3", "5.64902E-05", "1_000", "NaN", "", "NULL", " 4.2 ",
         "0.1234567890123", "99999999999999999999999.5", "1" * 25, "12,5", "\u0663", "0.000001"]
CURRENCIES = ["USD", "usd", " EUR", "", "NULL", "US", "ＵＳＤ", "KRW"]
TAGS = ["", "web", " web ", "cz_cluster_prod", "cz_common_db", "NULL", "\x1cweb", "web\u00a0"]
DATES = ["2026-10", "2026-10-03", "2026-11-01", "20261005", "10/5/2026", "", "not a date"]
NAMES = ["", "team-a", " team-a", "NULL", "team-b"]
SMALL = [(reader, "CSV_BLOCK_BYTES", 1024), (reader, "CHUNK_ROWS", 7), (fast, "KNOWN_TEXTS", 3), (totals, "SUM_ROWS", 20)]
SAMPLES = ["native.csv", "native.csv.gz", "focus.csv", "cur-legacy.csv", "cur2.csv", "azure.csv", "bad.csv",
           "real/focus-1.0-sample.csv", "real/aws-cur-legacy-sample.csv", "real/azure-ea-sample.csv"]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    text = io.StringIO()
    # Records end in CRLF, so that the writer quotes every cell holding a CR or an LF.
    csv.writer(text, lineterminator="\r\n").writerows([header, *rows])
    path.write_bytes(text.getvalue().encode())
    return path


def write_parquet(path: Path, header: list[str], rows: list[list[object]], *, cost: pa.DataType = pa.string()) -> Path:
    """The rows as Parquet columns of text, the first (the cost) of type `cost`."""
    types = [cost] + [pa.string()] * (len(header) - 1)
    pq.write_table(pa.table({name: pa.array([row[i] for row in rows], kind)
                             for i, (name, kind) in enumerate(zip(header, types))}), path)
    return path


def as_parquet(path: Path, target: Path) -> Path:
    """A CSV bill's cells, unchanged, as Parquet text columns."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        header, *rows = list(csv.reader(file))
    return write_parquet(target, header, rows)


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("period", [None, "2023-11", "2024-09"])
def test_streamed_totals_equal_the_exact_judges_on_every_sample(tmp_path, name, period):
    options = ImportOptions(period=period, default_currency="USD", untagged=True)
    streamed = total_bill(DATA / name, options=options)
    assert view(streamed) == view(judged_row_by_row(DATA / name, options))
    if not name.endswith(".gz"):
        parquet = as_parquet(DATA / name, tmp_path / "bill.parquet")
        from_parquet = total_bill(parquet, options=options)
        assert view(from_parquet) == view(judged_row_by_row(parquet, options))
        assert same_lines(from_parquet, first_row=1) == same_lines(streamed, first_row=2)


HOSTILE_ROWS = st.lists(st.tuples(st.sampled_from(COSTS), st.sampled_from(CURRENCIES), st.sampled_from(TAGS),
                                   st.sampled_from(DATES), st.sampled_from(NAMES), st.sampled_from(NAMES)).map(list),
                         min_size=1, max_size=300)


# 60 examples of up to 300 rows in two containers: about 10 s, 16 s on a loaded 2-core machine.
@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=HOSTILE_ROWS, period=st.sampled_from([None, "2026-10"]), default=st.sampled_from([None, "USD"]),
       small=st.booleans())
def test_streamed_totals_equal_the_exact_judges_on_hostile_rows_in_csv_and_parquet(tmp_path, monkeypatch, rows,
                                                                                  period, default, small):
    header = ["unblendedCost", "currency", "cz_container_bill", "billingDate", "loginName", "workspaceName"]
    from_csv = write_csv(tmp_path / "bill.csv", header, rows)
    from_parquet = write_parquet(tmp_path / "bill.parquet", header, rows)
    options = ImportOptions(period=period, default_currency=default)
    # Small chunks share values, a judge that remembers only a few texts starts afresh between them, and the
    # Arrow sums are settled every few chunks.
    with monkeypatch.context() as patch:
        for module, name, value in SMALL if small else []:
            patch.setattr(module, name, value)
        streamed = {path: total_bill(path, options=options) for path in (from_csv, from_parquet)}
        for path, bill in streamed.items():
            assert view(bill) == view(judged_row_by_row(path, options)), path.name
    if all(any(cell.strip() for cell in row) for row in rows):  # CSV skips blank lines, Parquet has no such thing
        assert same_lines(streamed[from_csv], first_row=2) == same_lines(streamed[from_parquet], first_row=1)


# ----------------------------------------------------------------------------------------- cell by cell

# Bill layouts: the cost, currency, tag, billing date, charge date (where the format has one), sub-account columns.
LAYOUTS = {
    "native": ["unblendedCost", "currency", "cz_container_bill", "billingCycle", "loginName"],
    "focus": ["EffectiveCost", "BillingCurrency", "Tags", "BillingPeriodStart", "ChargePeriodStart", "SubAccountName"],
}
# Where the rows are read from: CSV by Arrow or by the row-by-row fallback reader; Parquet with costs as text or
# typed, in the types bills use.
CONTAINERS = ["csv", "csv read by the fallback", "parquet text", "parquet decimal128", "parquet decimal256",
              "parquet double", "parquet float"]
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
cost_texts = st.one_of(
    st.sampled_from([*COSTS, "-Infinity", "inf", "sNaN", "nan123", "1e999999", "1E-999999", "9" * 18 + ".5",
                     "9" * 19, "-" + "9" * 24, "0." + "0" * 23 + "1", "0." + "0" * 24 + "1", "1." + "0" * 30,
                     "0x10", "1 000", "\u00a012.5\u2003", "１２", "\u0661.\u0662", "4.2\x00", "+.5e-3"]),
    st.from_regex(r"[+-]?\d{0,30}(\.\d{0,30})?([eE][+-]?\d{1,3})?", fullmatch=True),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
    st.text("0123456789.+-eE _,\u0663\u00a0\t", max_size=14),
    any_text,
)
currencies = st.one_of(st.sampled_from([*CURRENCIES, "eur ", "\tkrw", "ß", "ßa", "ǆa", "\u00a0USD"]),
                       st.from_regex(r"\s?[A-Za-z]{2,4}\s?", fullmatch=True), any_text)
dates = st.one_of(
    st.sampled_from([*DATES, "2026-10-01T00:00:00Z", "2026-10-31 23:59:59", " 2026-10-02 ", "2026-13-01",
                     "2026-10-32", "10/31/2026", "13/1/2026", "2026-1", "202610", "20261032", "NULL", "null",
                     "２０２６-10", "\u0662\u0660\u0662\u0666-10-01"]),
    st.from_regex(r"\d{4}-\d{1,2}(-\d{1,2}([T ]\d\d:\d\d(:\d\d)?Z?)?)?", fullmatch=True),
    st.from_regex(r"\d{1,2}/\d{1,2}/\d{4}( \d\d:\d\d)?", fullmatch=True),
    st.from_regex(r"\d{8}", fullmatch=True),
    any_text,
)
plain_tags = st.one_of(st.sampled_from(TAGS), any_text)
tag_values = st.one_of(st.none(), any_text, st.integers(), st.floats(), st.booleans(),
                       st.sampled_from(["NULL", "null", "", " web ", "web"]),
                       st.lists(st.integers(), max_size=2), st.dictionaries(any_text, st.integers(), max_size=2))
tag_objects = st.dictionaries(st.sampled_from(["cz_container_bill", "user:cz_container_bill", "user_cz_container_bill",
                                               " cz_container_bill", "CZ_Container_Bill", "env"]),
                              tag_values, max_size=3).map(json.dumps)
json_tags = st.one_of(tag_objects, tag_objects.map(lambda tags: tags[1:-1]),
                      st.sampled_from(["", "NULL", "null", "{", "[]", "[1, 2]", "42", '"a": ', "{}", '"x"']), any_text)


@st.composite
def typed_costs(draw: st.DrawFn, container: str) -> tuple[pa.DataType, st.SearchStrategy]:
    """A Parquet cost type, and the values it holds (None for a null)."""
    if container.startswith("parquet decimal"):
        digits = 38 if container.endswith("128") else 76
        scale = draw(st.integers(0, digits))
        kind = pa.decimal128(digits, scale) if digits == 38 else pa.decimal256(digits, scale)
        # Built from their digits: Decimal arithmetic would round them to 28 digits.
        unscaled = st.integers(-(10**digits) + 1, 10**digits - 1) | st.integers(-(10**15), 10**15)
        return kind, st.none() | unscaled.map(lambda number: Decimal(f"{number}E-{scale}"))
    if container == "parquet double":
        return pa.float64(), st.none() | st.floats()
    return pa.float32(), st.none() | st.floats(width=32)


@st.composite
def hostile_cells(draw: st.DrawFn) -> tuple[str, str, list[str], list[list[object]], pa.DataType]:
    """A bill of one layout in one container, whose rows hold hostile cells; each row's sub-account is its own
    (`r` and its index), so that its split group shows its cost."""
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    container = draw(st.sampled_from(CONTAINERS))
    typed = container.startswith("parquet") and container != "parquet text"
    cost_type, costs = draw(typed_costs(container)) if typed else (pa.string(), cost_texts)
    header = LAYOUTS[layout]
    cells = [costs, currencies, json_tags if layout == "focus" else plain_tags, *[dates] * (len(header) - 4)]
    rows = draw(st.lists(st.tuples(*cells), min_size=1, max_size=40))
    return layout, container, header, [[*row, f"r{index}"] for index, row in enumerate(rows)], cost_type


def verdicts(bill: BillTotals, *, first_row: int) -> dict[int, tuple]:
    """Each record's verdict, by its index: rejected (column, reason, cost as written), outside the period (its
    period), or accepted (period, currency, tag, and the exact cost as its own split group holds it)."""
    found: dict[int, tuple] = {row - first_row: ("rejected", *rest) for row, *rest in rejects(bill)}
    found |= {row - first_row: ("outside", period) for row, period in bill.outside_rows}
    tags = rows_of(bill)
    for (period, currency, account, _, _), group in bill.split_groups.items():
        index = int(account.removeprefix("r"))
        assert group.lines == 1 and index not in found
        found[index] = ("accepted", period, currency, tags[index + first_row][2], str(group.exact()))
    return found


# 100 examples of up to 40 rows (CZ_AGENT_FUZZ_EXAMPLES raises it, as for the other fuzz tests): about 10 s.
@pytest.mark.slow
@settings(FUZZ, max_examples=EXAMPLES * 5 // 2,
          suppress_health_check=[HealthCheck.function_scoped_fixture, *FUZZ.suppress_health_check])
@given(bill=hostile_cells(), period=st.sampled_from([None, "2026-10"]), default=st.sampled_from([None, "USD"]),
       small=st.booleans())
def test_every_cell_gets_the_verdict_of_the_exact_judge_whichever_path_reads_it(tmp_path, monkeypatch, bill, period,
                                                                                default, small):
    """Costs with exponents, more than 12 decimals, non-ASCII digits, NaN, blanks, NULL, huge values; dates,
    currencies and tags of every kind: total_bill's verdict on each record is the one convert.py gives it when it
    judges every row (agent.bills.convert.convert_chunk), down to the decimals of the cost."""
    layout, container, header, rows, cost_type = bill
    if container.startswith("csv"):
        path, first_row = write_csv(tmp_path / "bill.csv", header, rows), 2
    else:
        path, first_row = write_parquet(tmp_path / "bill.parquet", header, rows, cost=cost_type), 1
    options = ImportOptions(period=period, default_currency=default)
    with monkeypatch.context() as patch:
        for module, name, value in SMALL if small else []:
            patch.setattr(module, name, value)
        if container == "csv read by the fallback":
            patch.setattr(reader, "_arrow_csv_batches", refused)
        streamed = total_bill(path, options=options)
        exact = judged_row_by_row(path, options)
    assert verdicts(streamed, first_row=first_row) == verdicts(exact, first_row=first_row)
    assert view(streamed) == view(exact)
    assert len(verdicts(streamed, first_row=first_row)) == streamed.input_rows == len(rows)


def refused(*_args: object, **_kwargs: object) -> None:
    raise FastReadError("refused by the test")


# --------------------------------------------------------------------------------------------- examples


def test_a_record_holding_only_a_resource_id_is_rejected_not_taken_for_a_blank_line(tmp_path):
    path = tmp_path / "bill.csv"
    path.write_text("unblendedCost,currency,cz_container_bill,resourceId,productName\n"
                    "1.5,USD,web,i-1,ec2\n"
                    ",,,i-2,\n"
                    ",,,,\n"
                    ",,,,rds\n", encoding="utf-8")
    options = ImportOptions(period="2026-10")
    streamed = total_bill(path, options=options)
    assert [(reject.row, reject.reason) for reject in streamed.rejected] == [(3, "missing cost"), (5, "missing cost")]
    assert view(streamed) == view(judged_row_by_row(path, options))


def test_sums_past_the_range_of_arrow_decimals_stay_exact(tmp_path):
    # 200 costs of 9e23 add up to 1.8e26, past decimal128(38, 12): Arrow would wrap around without a word.
    path = tmp_path / "bill.csv"
    path.write_text("unblendedCost,currency,cz_container_bill\n" + "900000000000000000000000.5,USD,web\n" * 200
                    + "0.25,USD,web\n" * 3, encoding="utf-8")
    streamed = total_bill(path, options=ImportOptions(period="2026-10"))
    assert [group.exact() for group in streamed.split_groups.values()] == [Decimal("180000000000000000000000100.75")]
    assert view(streamed) == view(judged_row_by_row(path, ImportOptions(period="2026-10")))


def test_a_parquet_decimal_wider_than_24_places_is_read_exactly(tmp_path):
    # decimal(38, 30) prints 30 places; zeros past the 24th are dropped, a digit there refuses only its row.
    costs = [Decimal("1.25"), Decimal("-0.000000000000000000000001"), Decimal("3." + "0" * 29 + "1"), Decimal(7)]
    path = tmp_path / "bill.parquet"
    pq.write_table(pa.table({"EffectiveCost": pa.array(costs, pa.decimal128(38, 30)),
                             "BillingCurrency": ["USD"] * 4, "ChargePeriodStart": ["2024-09-01"] * 4,
                             "Tags": ['{"cz_container_bill": "web"}'] * 4}), path)
    streamed = total_bill(path, options=ImportOptions())
    assert [group.exact() for group in streamed.split_groups.values()] == [Decimal("8.249999999999999999999999")]
    assert [(reject.row, reject.column) for reject in streamed.rejected] == [(3, "EffectiveCost")]
    assert "out of range" in streamed.rejected[0].reason
    assert view(streamed) == view(judged_row_by_row(path, ImportOptions()))


@st.composite
def written_costs(draw) -> str:
    """Plain decimals of any length: up to 30 digits on each side of the point, trailing zeros included,
    around the 12 decimals the Arrow path takes and the 24 digits an amount may have."""
    sign = draw(st.sampled_from(["", "-", "+"]))
    whole = draw(st.text("0123456789", max_size=30))
    decimals = draw(st.text("0123456789", max_size=30)) + "0" * draw(st.integers(0, 20))
    point = draw(st.booleans()) or not whole
    return sign + (whole or ("" if decimals else "0")) + ("." + decimals if point else "")


NEIGHBOURS = {"alone": [], "all plain": ["1.5", "-0.25"], "one the Arrow cast refuses": ["1.5", "abc"]}


# 80 examples of three small bills each: about 5 s.
@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cost=written_costs(), first=st.booleans())
def test_a_cost_gets_the_same_verdict_and_total_whatever_its_neighbours(tmp_path, cost, first):
    """Arrow casts a chunk's costs at once, or, when one cell does not cast, picks the plain ones by pattern:
    a cost must not be accepted by one way and rejected by the other."""
    outcomes = set()
    for name, neighbours in NEIGHBOURS.items():
        costs = [cost, *neighbours] if first else [*neighbours, cost]
        path = tmp_path / f"{name}.csv"
        path.write_text("unblendedCost,currency,cz_container_bill\n" + "".join(f"{text},USD,web\n" for text in costs),
                        encoding="utf-8")
        options = ImportOptions(period="2026-10")
        streamed = total_bill(path, options=options)
        assert view(streamed) == view(judged_row_by_row(path, options)), name
        row = 2 + costs.index(cost)
        outcomes.add(next((reject.reason for reject in streamed.rejected if reject.row == row), "accepted"))
    assert len(outcomes) == 1, f"{cost!r}: {outcomes}"


def test_chunk_groups_are_found_when_the_product_of_sizes_overflows():
    # Sizes whose product passes 2**62: the combined numbers are renumbered on the way, the groups stay the same.
    sizes = [2**40, 3, 2**30, 2**20]
    numbers = [[2**40 - 1, 0, 2**40 - 1, 5, 0], [1, 2, 1, 0, 2], [7, 7, 7, 2**30 - 1, 7], [0, 1, 0, 2**20 - 1, 1]]
    local, first = totals._local_groups([np.array(column, dtype=np.int64) for column in numbers], sizes)
    assert local.tolist() == [0, 1, 0, 2, 1]
    assert first.tolist() == [0, 1, 3]
