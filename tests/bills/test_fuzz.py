"""Property-based fuzzing of the bill import (total_bill, the entry production runs) in every container: random
bytes, mutated real bills and well-formed bills with hostile values give totals or the project's own errors naming
file, row and column; never a traceback of another type, never a hang. Whatever it gives, every row judged by
convert.py, the exact judge, gives the same.

CZ_AGENT_FUZZ_EXAMPLES raises the number of examples per property (the default keeps `make test` short).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.bills import ImportOptions, total_bill
from agent.bills.totals import BillTotals
from agent.core.bill_limits import BillLimits
from agent.errors import AgentError, BillFormatError
from tests.support.bills import judged_row_by_row, same_lines, view
from tests.support.fuzz import EXAMPLE_SECONDS, time_limit

DATA = Path(__file__).resolve().parents[1] / "data" / "bills"
EXAMPLES = int(os.environ.get("CZ_AGENT_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="CZ_AGENT_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SUFFIXES = (".csv", ".csv.gz", ".parquet", ".xlsx")
PERIODS = (None, "2024-09", "2023-11")
# The small samples, and the head of each real export: mutations of every format the importer detects.
SAMPLES = {path.name: path.read_bytes() for path in sorted(DATA.glob("*.csv"))}
SAMPLES |= {f"real-{path.name}": b"".join(path.read_bytes().splitlines(keepends=True)[:30])
            for path in sorted((DATA / "real").glob("*.csv"))}
HEADERS = {
    "native": ["billingCycle", "loginName", "workspaceName", "apiKeyName", "unblendedCost", "currency",
               "tag:cz_container_bill"],
    "focus": ["BilledCost", "EffectiveCost", "BillingCurrency", "BillingPeriodStart", "ChargePeriodStart",
              "SubAccountName", "Tags", "ChargeFrequency"],
    "cur": ["bill/BillingPeriodStartDate", "lineItem/UsageStartDate", "lineItem/UnblendedCost",
            "lineItem/CurrencyCode", "resourceTags/user:cz_container_bill", "lineItem/LineItemType"],
    "cur2": ["bill_billing_period_start_date", "line_item_unblended_cost", "line_item_currency_code",
             "resource_tags"],
    "azure": ["SubscriptionName", "Date", "CostInBillingCurrency", "BillingCurrencyCode", "Tags",
              "BillingPeriodStartDate", "ChargeType"],
}


def import_outcome(content: bytes, *, suffix: str, period: str | None = None,
                   limits: BillLimits = BillLimits()) -> BillTotals | BillFormatError:
    """Read `content` as a bill file: the import, or the BillFormatError it raised (any other error fails)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"bill{suffix}"
        path.write_bytes(content)
        options = ImportOptions(period=period, limits=limits)
        try:
            with time_limit(EXAMPLE_SECONDS):
                bill = total_bill(path, options=options)
        except AgentError as e:
            assert isinstance(e, BillFormatError), f"{type(e).__name__}: {e}"
            assert e.source == str(path) and str(e).startswith(str(path))
            assert "\n" not in str(e), f"the message is not one line: {e!r}"
            return e
        check_import(bill, source=str(path))
        with time_limit(EXAMPLE_SECONDS):
            assert view(bill) == view(judged_row_by_row(path, options))
    return bill


def check_import(bill: BillTotals, *, source: str) -> None:
    """Every row is accounted for, and each rejected one names its file, row and column."""
    assert bill.source == source
    assert bill.input_rows == bill.accepted_rows + bill.out_of_period_rows + len(bill.rejected)
    for rejected in bill.rejected:
        assert rejected.source == source and rejected.row >= 1 and rejected.column and rejected.reason
        assert rejected.message().startswith(f"{source}, row {rejected.row}, column ")
    assert all(bill.tag_rows[key].count == group.lines and bill.tag_rows[key].low >= 1
               for key, group in bill.tag_groups.items())
    assert all(row >= 1 for row, _ in bill.outside_rows)


# --------------------------------------------------------------------------------------------- encodings


def as_file(rows: list[list[str]], *, suffix: str) -> bytes:
    """Rows (the first is the header) as a bill file of the given type, every cell written as text."""
    if suffix == ".parquet":
        return parquet_bytes(rows)
    if suffix == ".xlsx":
        return xlsx_bytes(rows)
    text = csv_bytes(rows)
    return gzip.compress(text, mtime=0) if suffix == ".csv.gz" else text


def csv_bytes(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8", errors="surrogatepass")


def parquet_bytes(rows: list[list[str]]) -> bytes:
    header = unique_names(rows[0])
    body = [row + [""] * (len(header) - len(row)) for row in rows[1:]]
    table = pa.table({name: [row[i] for row in body] for i, name in enumerate(header)})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def xlsx_bytes(rows: list[list[str]]) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append([xlsx_safe(cell) for cell in row])
    sink = io.BytesIO()
    workbook.save(sink)
    return sink.getvalue()


def xlsx_safe(cell: str) -> str:
    # openpyxl refuses control characters and cells over 32767 characters: a spreadsheet cannot hold them.
    cleaned = "".join(ch for ch in cell if ch in "\t\n\r" or (ord(ch) >= 32 and not 0xD800 <= ord(ch) <= 0xDFFF))
    return cleaned[:32767]


def unique_names(header: list[str]) -> list[str]:
    # Parquet columns are unique by construction; duplicated CSV headers are fuzzed through the CSV path.
    seen: dict[str, int] = {}
    names = []
    for name in header:
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}.{seen[name]}")
    return names


# ------------------------------------------------------------------------------------------- strategies

hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "NULL", "null", "NaN", "-Infinity", "1e999999", "1e-999999", "-12.50", "0x10", "1,5",
                     "=1+2", "@SUM(A1)", "\x00", "\ufeff", "9/31/2023", "2024-13-01", "2024-09-01T25:00",
                     "{", "[]", '"a": ', "{\"cz_container_bill\": {\"a\": [1]}}", "{\"cz_container_bill\": null}",
                     "../../etc/passwd", "<script>alert(1)</script>", " " * 1000]),
    st.from_regex(r"-?\d{1,30}(\.\d{0,20})?([eE][+-]?\d{1,4})?", fullmatch=True),
    st.builds(lambda depth, open_: open_ * depth, st.integers(1, 5000), st.sampled_from(["[", "{\"a\":", "\"a\":{"])),
)


@st.composite
def hostile_bills(draw: st.DrawFn) -> list[list[str]]:
    """A header of one format (columns shuffled), then rows whose cells are hostile text."""
    header = draw(st.permutations(HEADERS[draw(st.sampled_from(sorted(HEADERS)))]))
    rows = draw(st.lists(st.lists(hostile_text, min_size=len(header), max_size=len(header)), max_size=8))
    return [list(header), *rows]


@st.composite
def mutated_samples(draw: st.DrawFn) -> bytes:
    """A real bill with one to three byte-level mutations."""
    content = SAMPLES[draw(st.sampled_from(sorted(SAMPLES)))]
    for _ in range(draw(st.integers(1, 3))):
        content = draw(st.sampled_from(MUTATIONS))(content, draw)
    return content


def truncate(content: bytes, draw: st.DrawFn) -> bytes:
    return content[:draw(st.integers(0, len(content)))]


def insert_bytes(content: bytes, draw: st.DrawFn) -> bytes:
    at = draw(st.integers(0, len(content)))
    junk = draw(st.one_of(st.binary(max_size=16), st.sampled_from([b"\x00", b"\xff\xfe", b'"', b"\r", b"\n\n",
                                                                     b",,,,", b"\xe9", b"\x1f\x8b"])))
    return content[:at] + junk + content[at:]


def swap_delimiter(content: bytes, draw: st.DrawFn) -> bytes:
    return content.replace(b",", draw(st.sampled_from([b";", b"\t", b"|", b" ", b"\x00"])))


def reencode(content: bytes, draw: st.DrawFn) -> bytes:
    text = content.decode("utf-8", errors="replace")
    return text.encode(draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252", "utf-8-sig"])),
                       errors="replace")


def huge_field(content: bytes, draw: st.DrawFn) -> bytes:
    lines = content.split(b"\n")
    at = draw(st.integers(0, len(lines) - 1))
    lines[at] += b"," + draw(st.sampled_from([b"x", b"[", b"9", b'"'])) * draw(st.integers(1, 200_000))
    return b"\n".join(lines)


def shuffle_columns(content: bytes, draw: st.DrawFn) -> bytes:
    try:
        rows = list(csv.reader(io.StringIO(content.decode("utf-8", errors="replace"), newline="")))
    except csv.Error:
        return content  # an earlier mutation broke the quoting: nothing to shuffle
    width = max((len(row) for row in rows), default=0)
    order = draw(st.permutations(range(width)))
    return csv_bytes([[row[i] for i in order if i < len(row)] for row in rows])


def drop_lines(content: bytes, draw: st.DrawFn) -> bytes:
    lines = content.split(b"\n")
    keep = draw(st.lists(st.booleans(), min_size=len(lines), max_size=len(lines)))
    return b"\n".join(line for line, kept in zip(lines, keep) if kept)


MUTATIONS = (truncate, insert_bytes, swap_delimiter, reencode, huge_field, shuffle_columns, drop_lines)


# ------------------------------------------------------------------------------------------- properties


@FUZZ
@given(content=st.binary(max_size=4096), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_give_a_bill_format_error_or_totals(content: bytes, suffix: str) -> None:
    import_outcome(content, suffix=suffix)


@FUZZ
@given(content=st.binary(max_size=2048), magic=st.sampled_from([b"PAR1", b"PK\x03\x04", b"\x1f\x8b\x08"]),
       suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_behind_a_file_signature_are_refused_cleanly(content: bytes, magic: bytes, suffix: str) -> None:
    import_outcome(magic + content + (magic if magic == b"PAR1" else b""), suffix=suffix)


@FUZZ
@given(content=mutated_samples(), suffix=st.sampled_from((".csv", ".csv.gz")), period=st.sampled_from(PERIODS))
def test_mutated_real_bills_are_read_or_refused_cleanly(content: bytes, suffix: str, period: str | None) -> None:
    import_outcome(gzip.compress(content, mtime=0) if suffix == ".csv.gz" else content, suffix=suffix,
                   period=period)


@FUZZ
@given(rows=hostile_bills(), suffix=st.sampled_from(SUFFIXES), period=st.sampled_from(PERIODS))
def test_well_formed_bills_with_hostile_values_reject_rows_with_row_and_column(rows: list[list[str]], suffix: str,
                                                                               period: str | None) -> None:
    import_outcome(as_file(rows, suffix=suffix), suffix=suffix, period=period)


@FUZZ
@given(rows=hostile_bills())
def test_a_bill_reads_the_same_whatever_its_file_type(rows: list[list[str]]) -> None:
    """CSV and Parquet carry text unchanged, so the same rows give the same totals and rejections, row for row."""
    from_csv = import_outcome(as_file(rows, suffix=".csv"), suffix=".csv", period="2024-09")
    from_parquet = import_outcome(as_file(rows, suffix=".parquet"), suffix=".parquet", period="2024-09")
    plain = not any("\n" in cell or "\r" in cell or "\x00" in cell for row in rows for cell in row)
    no_blank_rows = all(any(cell.strip() for cell in row) for row in rows)
    if isinstance(from_csv, BillTotals) and isinstance(from_parquet, BillTotals) and plain and no_blank_rows:
        assert same_lines(from_csv, first_row=2) == same_lines(from_parquet, first_row=1)


# ----------------------------------------------------------------------------------- oversize and nesting


def focus_bill(tags_cell: bytes) -> bytes:
    header = b"BilledCost,EffectiveCost,BillingCurrency,BillingPeriodStart,ChargePeriodStart,Tags\n"
    return header + b"1,1,USD,2024-09-01,2024-09-01,ok\n".replace(b"ok", b'"{}"') + \
        b'2,2,USD,2024-09-01,2024-09-01,"' + tags_cell.replace(b'"', b'""') + b'"\n'


def test_tags_nested_100k_levels_are_rejected_with_row_and_column() -> None:
    for cell in (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                 b'{"a":' + b"[" * 30_000 + b"]" * 30_000 + b"}"):
        bill = import_outcome(focus_bill(cell), suffix=".csv")
        assert isinstance(bill, BillTotals) and bill.accepted_rows == 1
        [rejected] = bill.rejected
        assert (rejected.row, rejected.column) == (3, "Tags")
        assert "nested too deeply" in rejected.reason or "characters long" in rejected.reason


# Above the default limits, which refuse the whole file (tests/bills/test_limits.py): a user who raised them still
# gets the tag reader's own bound.
RAISED = BillLimits(max_cell_chars=64 << 20, max_row_bytes=64 << 20)


def test_a_50_mb_tags_cell_is_rejected_in_bounded_time_and_memory(tmp_path: Path) -> None:
    """Measured in a child process, from its own VmHWM: ru_maxrss would report the test run's peak, which
    Linux carries over into a child across fork and exec."""
    bill = tmp_path / "big.csv"
    bill.write_bytes(focus_bill(b'{"cz_container_bill": "' + b"x" * 50_000_000 + b'"}'))
    script = ("import sys; from pathlib import Path; from agent.bills import ImportOptions, total_bill; "
              "from agent.core.bill_limits import BillLimits; "
              f"b = total_bill(Path(sys.argv[1]), options=ImportOptions(limits={RAISED!r})); "
              "print(b.accepted_rows, [(r.row, r.column, r.reason[:40]) for r in b.rejected]); "
              "print(Path('/proc/self/status').read_text().split('VmHWM:')[1].split()[0])")
    started = time.monotonic()
    child = subprocess.run([sys.executable, "-c", script, str(bill)], capture_output=True, text=True)
    assert child.returncode == 0, child.stdout + child.stderr
    result, peak_kib = child.stdout.strip().splitlines()
    assert result.startswith("1 [(3, 'Tags', 'tags are 50000025 characters long, more")
    assert time.monotonic() - started < 120
    peak_mb = int(peak_kib) / 1024
    # The file itself is 50 MB; the readers hold it a few times over while parsing, never unboundedly.
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB"


def test_a_50_mb_tags_cell_names_row_and_column() -> None:
    bill = import_outcome(focus_bill(b'{"cz_container_bill": "' + b"x" * 50_000_000 + b'"}'), suffix=".csv",
                          limits=RAISED)
    assert isinstance(bill, BillTotals)
    [rejected] = bill.rejected
    assert (rejected.row, rejected.column) == (3, "Tags") and "characters long, more than" in rejected.reason
    assert len(rejected.message()) < 500, "the message quotes an excerpt, not the cell"
