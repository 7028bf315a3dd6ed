"""Small hostile bill files that expand past the size limits (agent.core.bill_limits) are refused in one line,
naming the file and the limit, in bounded memory and time: each read runs in a child process that reports its
own peak memory (VmHWM: ru_maxrss would report the test run's peak, which Linux carries over into a child)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent.bills import ImportOptions, total_bill
from agent.core.bill_limits import BillLimits, setting_name
from agent.errors import BillFormatError
from agent.settings import Settings
from tests.support.bills import rows_of

MIB = 1 << 20
# The child's own peak: the interpreter with pandas, Arrow and openpyxl loaded takes about 150 MiB.
PEAK_MIB = 300
SECONDS = 60
HEADER = b"unblendedCost,currency,billingCycle\n"
# The CSV reader is Arrow's, or with "fallback" the row-by-row one total_bill falls back on (tests/bills/conftest.py).
CHILD = """
import sys
from pathlib import Path
from unittest import mock
from agent.bills import ImportOptions, reader, total_bill
from agent.errors import BillFormatError, FastReadError
from agent.settings import load_settings

def refuse(*_args, **_kwargs):
    raise FastReadError("refused by the test")

if sys.argv[2] == "fallback":
    mock.patch.object(reader, "_arrow_csv_batches", refuse).start()
try:
    total_bill(Path(sys.argv[1]), options=ImportOptions(untagged=True, default_currency="USD",
                                                        limits=load_settings().bill_limits()))
    print("read")
except BillFormatError as e:
    print(e)
print(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0])
"""


def read_in_child(path: Path, *, csv_reader: str = "arrow", env: dict[str, str] | None = None) -> tuple[str, float]:
    """The outcome of total_bill reading the bill in a child process (the error's message, or "read"), and its peak
    MiB."""
    started = time.monotonic()
    child = subprocess.run([sys.executable, "-c", CHILD, str(path), csv_reader], capture_output=True, text=True,
                           timeout=SECONDS, env={**os.environ, **(env or {})})
    assert child.returncode == 0, child.stdout + child.stderr
    assert time.monotonic() - started < SECONDS
    outcome, peak_kib = child.stdout.strip().splitlines()
    return outcome, int(peak_kib) / 1024


def assert_refused(path: Path, outcome: str, peak_mib: float, *, where: str, limit: str) -> None:
    assert outcome.startswith(f"{path}{where}: "), outcome
    assert f"(the limit bill_{limit}; raise CZ_AGENT_BILL_{limit.upper()} if the bill is genuine)" in outcome
    assert "\n" not in outcome and len(outcome) < 400
    assert peak_mib < PEAK_MIB, f"peak {peak_mib:.0f} MiB"


def write_gzip(path: Path, pieces: Iterable[bytes]) -> Path:
    with gzip.open(path, "wb", compresslevel=9) as file:
        for piece in pieces:
            file.write(piece)
    return path


def repeated(piece: bytes, size: int) -> Iterable[bytes]:
    block = piece * (MIB // len(piece))
    for _ in range(size // len(block)):
        yield block


# ------------------------------------------------------------------------------------------------------ CSV


@pytest.mark.slow
@pytest.mark.parametrize("csv_reader", ["arrow", "fallback"])
def test_a_gzip_of_one_64_mib_cell_is_refused_in_bounded_memory(tmp_path, csv_reader):
    path = write_gzip(tmp_path / "bill.csv.gz", [HEADER, b"1,USD,2024-09\n2,USD,", *repeated(b"x", 64 * MIB), b"\n"])
    assert path.stat().st_size < 100_000
    outcome, peak = read_in_child(path, csv_reader=csv_reader)
    assert_refused(path, outcome, peak, where=", row 3", limit="max_row_bytes")


@pytest.mark.slow
@pytest.mark.parametrize("csv_reader", ["arrow", "fallback"])
def test_a_gzip_of_one_quoted_cell_of_64_mib_of_line_breaks_is_refused_in_bounded_memory(tmp_path, csv_reader):
    path = write_gzip(tmp_path / "bill.csv.gz", [HEADER, b'1,USD,2024-09\n2,USD,"', *repeated(b"\n", 64 * MIB),
                                                 b'"\n'])
    outcome, peak = read_in_child(path, csv_reader=csv_reader)
    assert_refused(path, outcome, peak, where=", row 3", limit="max_row_bytes")
    assert "is a quote left open?" in outcome


@pytest.mark.slow
def test_a_gzip_expanding_past_the_decompressed_limit_is_refused_as_read(tmp_path):
    """Well-formed rows, but more of them than the limit set through the environment allows."""
    path = write_gzip(tmp_path / "bill.csv.gz", [HEADER, *repeated(b"1,USD,2024-09\n", 64 * MIB)])
    outcome, peak = read_in_child(path, env={"CZ_AGENT_BILL_MAX_DECOMPRESSED_BYTES": str(8 * MIB)})
    assert_refused(path, outcome, peak, where="", limit="max_decompressed_bytes")
    assert f"more than {8 * MIB} bytes" in outcome


def test_a_cell_past_the_cell_limit_names_its_row_and_column(tmp_path, csv_reader):
    path = tmp_path / "bill.csv"
    path.write_bytes(HEADER + b"1,USD,2024-09\n2,USD," + b"x" * 2000 + b"\n3,USD,2024-09\n")
    with pytest.raises(BillFormatError) as refused:
        total_bill(path, options=ImportOptions(untagged=True, limits=BillLimits(max_cell_chars=1000)))
    assert (refused.value.row, refused.value.column) == (3, "billingCycle")
    assert "the cell holds more than 1000 characters (the limit bill_max_cell_chars" in str(refused.value)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_a_record_past_the_row_limit_is_named_by_its_row_whatever_the_line_breaks(tmp_path, csv_reader, newline):
    rows = [b"1,USD,2024-09", b'2,USD,"2024-09\n"', b"", b"3,USD," + b"y" * 300, b"4,USD,2024-09"]
    path = tmp_path / "bill.csv"
    path.write_bytes(newline.join([HEADER.strip(), *rows]) + newline)
    with pytest.raises(BillFormatError) as refused:
        total_bill(path, options=ImportOptions(untagged=True, limits=BillLimits(max_row_bytes=100)))
    assert refused.value.row == 5
    limits = BillLimits(max_row_bytes=400)
    bill = total_bill(path, options=ImportOptions(untagged=True, period="2024-09", limits=limits))
    assert (bill.input_rows, sorted(rows_of(bill)), [(reject.row, reject.column) for reject in bill.rejected]) == (
        4, [2, 3, 6], [(5, "billingCycle")])


# ----------------------------------------------------------------------------------------------------- XLSX

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELATIONSHIPS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
CONTENT_TYPES = (
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    '<Override PartName="/xl/sharedStrings.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
ROOT_RELS = ('<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
             f'<Relationship Id="rId1" Type="{RELATIONSHIPS}/officeDocument" Target="xl/workbook.xml"/>'
             '</Relationships>')
WORKBOOK_RELS = ('<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                 f'<Relationship Id="rId1" Type="{RELATIONSHIPS}/worksheet" Target="worksheets/sheet1.xml"/>'
                 f'<Relationship Id="rId2" Type="{RELATIONSHIPS}/sharedStrings" Target="sharedStrings.xml"/>'
                 '</Relationships>')
# The header and a first good row, the header's names as shared strings 0 to 2.
FIRST_ROWS = ('<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="s"><v>2</v></c></row>'
              '<row r="2"><c r="A2"><v>1</v></c><c r="B2" t="inlineStr"><is><t>USD</t></is></c>'
              '<c r="C2" t="inlineStr"><is><t>2024-09</t></is></c></row>')


def write_xlsx(path: Path, *, rows: Iterable[str] = (), strings: Iterable[str] = (), sheets: int = 1) -> Path:
    """A minimal workbook: its first sheet holds FIRST_ROWS then `rows`; `strings` follow the header's in the
    shared strings. Parts are written piece by piece, so a hostile one never sits whole in the test's memory."""
    entries = ''.join(f'<sheet name="s{number}" sheetId="{number}" r:id="rId1"/>' for number in range(1, sheets + 1))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", ROOT_RELS)
        archive.writestr("xl/workbook.xml", f'<workbook xmlns="{MAIN}" xmlns:r="{RELATIONSHIPS}"><sheets>{entries}'
                                            '</sheets></workbook>')
        archive.writestr("xl/_rels/workbook.xml.rels", WORKBOOK_RELS)
        write_part(archive, "xl/sharedStrings.xml", [f'<sst xmlns="{MAIN}"><si><t>unblendedCost</t></si>'
                                                     '<si><t>currency</t></si><si><t>billingCycle</t></si>',
                                                     *strings, "</sst>"])
        write_part(archive, "xl/worksheets/sheet1.xml", [f'<worksheet xmlns="{MAIN}"><sheetData>', FIRST_ROWS, *rows,
                                                         "</sheetData></worksheet>"])
    return path


def write_part(archive: zipfile.ZipFile, name: str, pieces: Iterable[str]) -> None:
    with archive.open(name, "w", force_zip64=True) as part:
        for piece in pieces:
            part.write(piece.encode())


def huge_text(size: int) -> Iterable[str]:
    block = "x" * MIB
    for _ in range(size // MIB):
        yield block


def test_a_minimal_workbook_is_read(tmp_path):
    path = write_xlsx(tmp_path / "bill.xlsx", rows=['<row r="3"><c r="A3"><v>2</v></c>'
                                                    '<c r="B3" t="s"><v>3</v></c></row>'],
                      strings=["<si><t>EUR</t></si>"])
    bill = total_bill(path, options=ImportOptions(untagged=True, period="2024-09"))
    assert (bill.accepted_rows, bill.rejected) == (2, [])


@pytest.mark.slow
def test_an_xlsx_with_512_mib_of_shared_strings_is_refused_before_it_is_opened(tmp_path):
    strings = (f"<si><t>{text}</t></si>" for text in huge_text(512 * MIB))
    path = write_xlsx(tmp_path / "bill.xlsx", strings=strings,
                      rows=['<row r="3"><c r="A3"><v>2</v></c><c r="B3" t="s"><v>3</v></c></row>'])
    assert path.stat().st_size < 1_000_000
    outcome, peak = read_in_child(path)
    assert_refused(path, outcome, peak, where="", limit="max_xlsx_shared_strings_bytes")
    assert "the part xl/sharedStrings.xml holds, once decompressed, more than" in outcome


@pytest.mark.slow
@pytest.mark.parametrize("part", ["shared strings", "sheet"])
def test_an_xlsx_with_one_32_mib_text_is_refused_in_bounded_memory(tmp_path, part):
    """Under the shared strings' limit, or streamed in the sheet: one text is still held whole by the parser."""
    text = ["<si><t>", *huge_text(32 * MIB), "</t></si>"]
    cell = ['<row r="3"><c r="A3"><v>2</v></c><c r="B3" t="inlineStr"><is><t>', *huge_text(32 * MIB),
            "</t></is></c></row>"]
    path = write_xlsx(tmp_path / "bill.xlsx", **({"strings": text} if part == "shared strings" else {"rows": cell}))
    outcome, peak = read_in_child(path)
    assert_refused(path, outcome, peak, where="", limit="max_row_bytes")
    assert "holds a text or tag of more than" in outcome


@pytest.mark.slow
def test_an_xlsx_with_20_000_sheets_is_refused_before_it_is_opened(tmp_path):
    path = write_xlsx(tmp_path / "bill.xlsx", sheets=20_000)
    outcome, peak = read_in_child(path)
    assert_refused(path, outcome, peak, where="", limit="max_xlsx_sheets")


@pytest.mark.slow
def test_an_xlsx_row_numbered_past_the_row_limit_is_refused_at_the_limit(tmp_path):
    """The reader yields an empty row for every number skipped: a row numbered 10**9 would take minutes."""
    path = write_xlsx(tmp_path / "bill.xlsx", rows=['<row r="1000000000"><c r="A1000000000"><v>2</v></c></row>'])
    outcome, peak = read_in_child(path)
    assert_refused(path, outcome, peak, where=", row 1048577", limit="max_xlsx_rows")


def test_an_xlsx_row_reaching_past_the_column_limit_is_refused_naming_its_last_column(tmp_path):
    """Every row is padded up to its last cell: a cell at XFD on each row costs 16 384 cells a row."""
    path = write_xlsx(tmp_path / "bill.xlsx", rows=[f'<row r="{number}"><c r="XFD{number}"><v>2</v></c></row>'
                                                    for number in range(3, 1000)])
    with pytest.raises(BillFormatError, match=r", row 3, column 'XFD': the row reaches more than 1024 columns"):
        total_bill(path, options=ImportOptions(untagged=True))


def test_an_xlsx_part_read_whole_is_held_to_the_part_limit(tmp_path):
    path = write_xlsx(tmp_path / "bill.xlsx")
    refusal = r"the part \[Content_Types\].xml holds, once decompressed, more than 100 bytes"
    with pytest.raises(BillFormatError, match=refusal):
        total_bill(path, options=ImportOptions(untagged=True, limits=BillLimits(max_xlsx_part_bytes=100)))


# -------------------------------------------------------------------------------------------------- Parquet


def test_a_parquet_file_decompressing_past_the_limit_is_refused_from_its_metadata(tmp_path):
    path = tmp_path / "bill.parquet"
    pq.write_table(pa.table({"unblendedCost": ["1"] * 10_000, "currency": ["USD"] * 10_000,
                             "billingCycle": ["2024-09"] * 10_000}), path, use_dictionary=False)
    assert total_bill(path, options=ImportOptions(untagged=True)).accepted_rows == 10_000
    with pytest.raises(BillFormatError, match="the columns read hold, once decompressed, more than 1000 bytes"):
        total_bill(path, options=ImportOptions(untagged=True, limits=BillLimits(max_decompressed_bytes=1000)))


# ------------------------------------------------------------------------------------------------- settings


def test_every_limit_is_a_setting_with_the_same_default():
    assert Settings().bill_limits() == BillLimits()


def test_a_limit_set_in_the_environment_reaches_the_readers(monkeypatch):
    monkeypatch.setenv("CZ_AGENT_BILL_MAX_CELL_CHARS", "12")
    assert Settings().bill_limits() == BillLimits(max_cell_chars=12)


def test_the_readme_lists_every_limit():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for limit in fields(BillLimits):
        assert f"| `CZ_AGENT_{setting_name(limit.name).upper()}` |" in readme, limit.name
