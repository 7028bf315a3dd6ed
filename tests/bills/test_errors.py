"""Whole-file failures raise BillFormatError; row failures become RejectedRows and the rest is imported."""

from __future__ import annotations

import gzip
import re
import zipfile
from decimal import Decimal
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent.bills import ImportOptions, detect_format, total_bill
from agent.errors import BillFormatError
from tests.support.bills import rejects, rows_of, split_groups, tag_groups
from tests.support.fuzz import EXAMPLE_SECONDS, time_limit

DATA = Path(__file__).resolve().parents[1] / "data" / "bills"


def test_each_bad_row_is_rejected_with_its_row_column_and_first_problem(csv_reader):
    path = DATA / "bad.csv"
    bill = total_bill(path, options=ImportOptions(period="2024-09"))
    assert bill.input_rows == 9
    assert rejects(bill) == [
        (3, "EffectiveCost", "cost is not a number: 'abc'", "abc"),
        (4, "BillingCurrency", "missing currency, and no default currency was given", "2.00"),
        (5, "Tags", """tags are not valid JSON: '{"cz_container_bill": "mobile"'""", "3.00"),
        (6, "ChargePeriodStart", "not a date: 'someday'", "4.00"),
        (7, "EffectiveCost", "missing cost", "NULL"),  # cost comes before the broken tags of the same row
        (8, "BillingCurrency", "not a 3-letter currency code: 'US'", "5.00"),
        (9, "Tags", "tags are not a JSON object: '[1, 2]'", "6.00"),
    ]
    assert tag_groups(bill) == {("2024-09", "USD", "mobile", None, None, None): (Decimal("1.00"), 1, "2"),
                                ("2024-09", "USD", "42", None, None, None): (Decimal("7.00"), 1, "10")}
    assert bill.accepted_rows == 2


def test_default_currency_fills_empty_currency_cells():
    bill = total_bill(DATA / "bad.csv", options=ImportOptions(period="2024-09", default_currency="EUR"))
    assert {row: key[1] for row, key in rows_of(bill).items()} == {2: "USD", 4: "EUR", 10: "USD"}
    assert split_groups(bill)[("2024-09", "EUR", "no-currency", None, None)] == (Decimal("2.00"), 1)


def test_unknown_format_names_the_file_and_the_columns_looked_for():
    path = DATA / "unknown.csv"
    with pytest.raises(BillFormatError) as caught:
        total_bill(path, options=ImportOptions())
    assert caught.value.source == str(path)
    assert str(path) in str(caught.value)
    for column in ("lineItem/UnblendedCost", "line_item_unblended_cost", "EffectiveCost", "CostInBillingCurrency",
                   "unblendedCost"):
        assert column in str(caught.value)


def test_detect_format_alone_raises_on_unknown_columns():
    with pytest.raises(BillFormatError, match="ChargePeriodStart"):
        detect_format(["EffectiveCost", "Tags"])


def test_missing_file(tmp_path):
    path = tmp_path / "absent.csv"
    with pytest.raises(BillFormatError, match="no such file") as caught:
        total_bill(path, options=ImportOptions())
    assert caught.value.source == str(path)


@pytest.mark.parametrize(("name", "content"), [
    ("empty.csv", b""),
    ("broken.csv.gz", b"not gzip at all"),
    # A gzip header, then a stored block whose lengths disagree: zlib's own error, not an OSError.
    ("corrupt.csv.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x00\x05\x00\x00\x00hello"),
    ("broken.parquet", b"PAR1 but no parquet"),
    ("broken.xlsx", b"not a zip"),
    ("latin1.csv", "unblendedCost,currency,billingCycle\n1,USD,2024-09 caf\xe9\n".encode("latin-1")),
])
def test_unreadable_files_raise_bill_format_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BillFormatError, match="cannot read the file") as caught:
        total_bill(path, options=ImportOptions(period="2024-09"))
    assert caught.value.source == str(path)


def test_cost_column_override_not_found():
    with pytest.raises(BillFormatError, match="'AmortizedCost'") as caught:
        total_bill(DATA / "focus.csv", options=ImportOptions(cost_column="AmortizedCost"))
    assert caught.value.column == "AmortizedCost"


def test_required_cost_column_missing_when_format_forced():
    with pytest.raises(BillFormatError, match="unblendedCost") as caught:
        total_bill(DATA / "unknown.csv", options=ImportOptions(bill_format="native"))
    assert caught.value.column == "unblendedCost"


def test_no_currency_column_and_no_default(tmp_path):
    path = tmp_path / "bill.csv"
    path.write_text("unblendedCost,billingCycle\n1,2024-09\n")
    with pytest.raises(BillFormatError, match="no currency column"):
        total_bill(path, options=ImportOptions())


def test_no_period_column_needs_a_requested_period(tmp_path):
    path = tmp_path / "bill.csv"
    path.write_text("unblendedCost,currency\n1,USD\n")
    with pytest.raises(BillFormatError, match="no period column"):
        total_bill(path, options=ImportOptions(untagged=True))
    bill = total_bill(path, options=ImportOptions(period="2024-09", untagged=True))
    assert split_groups(bill) == {("2024-09", "USD", None, None, None): (Decimal(1), 1)}


def test_row_without_any_date_uses_the_requested_period_or_is_rejected(tmp_path):
    path = tmp_path / "bill.csv"
    path.write_text("unblendedCost,currency,billingCycle\n1,USD,2024-09\n2,USD,\n")
    requested = total_bill(path, options=ImportOptions(period="2024-09", untagged=True))
    assert split_groups(requested) == {("2024-09", "USD", None, None, None): (Decimal(3), 2)}
    bill = total_bill(path, options=ImportOptions(untagged=True))
    assert rejects(bill) == [(3, "billingCycle", "no billing or charge date, and no period was requested", "2")]
    assert split_groups(bill) == {("2024-09", "USD", None, None, None): (Decimal(1), 1)}


@pytest.mark.parametrize("options", [
    ImportOptions(bill_format="sap"),
    ImportOptions(period="2024-9"),
    ImportOptions(default_currency="dollars"),
])
def test_invalid_options(options):
    with pytest.raises(BillFormatError):
        total_bill(DATA / "native.csv", options=options)


NATIVE_HEADER = ["billingCycle", "loginName", "workspaceName", "apiKeyName", "cz_container_bill", "unblendedCost",
                 "currency"]


@pytest.mark.parametrize("repeated", ["unblendedCost", "billingCycle", "cz_container_bill"])
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".xlsx", ".parquet"])
def test_a_used_column_named_twice_is_refused_in_every_container(tmp_path, repeated, suffix):
    header = [*NATIVE_HEADER, repeated]
    row = ["2026-10", "ops", "ws", "", "mobile", "10", "USD", {"unblendedCost": "99", "billingCycle": "2026-09",
                                                               "cz_container_bill": "mcmp"}[repeated]]
    path = write_table(tmp_path / f"bill{suffix}", header, [row])
    with pytest.raises(BillFormatError) as refused:
        total_bill(path, options=ImportOptions(period="2026-10"))
    assert str(refused.value) == (f"{path}, column {repeated!r}: the header names this column 2 times (columns "
                                  f"{NATIVE_HEADER.index(repeated) + 1}, 8): which one to read is ambiguous")


def test_a_repeated_column_the_import_does_not_read_is_harmless(tmp_path):
    path = write_table(tmp_path / "bill.csv", [*NATIVE_HEADER, "note", "note"],
                       [["2026-10", "ops", "ws", "", "mobile", "10", "USD", "a", "b"]])
    assert total_bill(path, options=ImportOptions(period="2026-10")).accepted_rows == 1


@pytest.mark.parametrize("dictionary", [True, False])
def test_parquet_text_that_is_not_utf8_is_refused_with_its_row_and_column(tmp_path, dictionary):
    path = tmp_path / "bill.parquet"
    tags = pa.array(["mobile", "mcmp", "mobile"]).cast(pa.binary()).to_pylist()
    tags[1] = b"\xff\xfe"
    columns = {"billingCycle": pa.array(["2026-10"] * 3), "unblendedCost": pa.array(["1", "2", "3"]),
               "currency": pa.array(["USD"] * 3), "cz_container_bill": _unchecked_strings(tags)}
    pq.write_table(pa.table(columns), path, use_dictionary=dictionary)
    with pytest.raises(BillFormatError) as refused:
        total_bill(path, options=ImportOptions(period="2026-10"))
    assert str(refused.value) == f"{path}, row 2, column 'cz_container_bill': the text is not valid UTF-8"


def test_an_xlsx_with_malformed_xml_is_refused_in_one_line(tmp_path):
    path = tmp_path / "bill.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                         'package/2006/content-types"><Override PartName="/xl/workbook.xml" ContentType="application/'
                         'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>')
        archive.writestr("xl/workbook.xml", '<workbook><sheets><sheet name="a" sheetId="1"')
    with pytest.raises(BillFormatError, match="cannot read the file: unclosed token"):
        total_bill(path, options=ImportOptions(period="2026-10"))


def _unchecked_strings(values: list[bytes]) -> pa.Array:
    """A string array holding bytes as they are, as a writer that does not check UTF-8 would store them."""
    binary = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())


def write_table(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """The rows under `header` (names may repeat) in the container the suffix names."""
    if path.suffix == ".xlsx":
        workbook = openpyxl.Workbook()
        for record in [header, *rows]:
            workbook.active.append(record)
        workbook.save(path)
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_arrays([pa.array(column) for column in zip(*rows)], names=header), path)
    else:
        text = "\n".join(",".join(record) for record in [header, *rows]) + "\n"
        path.write_bytes(gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode())
    return path


def test_an_xlsx_claiming_a_huge_dimension_is_read_by_its_cells_in_bounded_time(tmp_path):
    plain = write_table(tmp_path / "plain.xlsx", NATIVE_HEADER, [["2026-10", "ops", "ws", "", "mobile", "10", "USD"]])
    path = tmp_path / "claims.xlsx"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                content = re.sub(rb'<dimension ref="[^"]*" ?/>', b'<dimension ref="A1:XFD100000"/>', content)
                # An empty last row: every row between is yielded, as wide as the declared dimension.
                content = content.replace(b"</sheetData>", b'<row r="100000"/></sheetData>')
                assert b"XFD100000" in content and b'r="100000"' in content
            target.writestr(item, content)
    with time_limit(EXAMPLE_SECONDS):
        bill = total_bill(path, options=ImportOptions(period="2026-10"))
    assert (bill.input_rows, bill.accepted_rows) == (1, 1)


@pytest.mark.parametrize("cell", ["F3", "G4"])
def test_a_formula_cell_without_a_computed_value_is_refused_naming_it(tmp_path, cell):
    """openpyxl, like other libraries, writes a formula without computing it: the file holds no value to bill."""
    rows = [["2026-10", "ops", "ws", "", "mobile", "10", "USD"], ["2026-10", "ops", "ws", "", "web", "2", "USD"],
            ["2026-10", "ops", "ws", "", "web", "3", "USD"]]
    path = write_table(tmp_path / "bill.xlsx", NATIVE_HEADER, rows)
    workbook = openpyxl.load_workbook(path)
    workbook.active[cell] = "=1+2"
    workbook.save(path)
    with pytest.raises(BillFormatError) as refused:
        total_bill(path, options=ImportOptions(period="2026-10"))
    assert (refused.value.row, refused.value.column) == (int(cell[1:]), NATIVE_HEADER[ord(cell[0]) - ord("A")])
    assert "the cell holds a formula with no computed value ('=1+2')" in str(refused.value)
    assert "save it again in a spreadsheet program" in str(refused.value)


def test_a_formula_with_its_computed_value_is_read(tmp_path):
    path = write_table(tmp_path / "bill.xlsx", NATIVE_HEADER, [["2026-10", "ops", "ws", "", "mobile", "1", "USD"]])
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    sheet = "xl/worksheets/sheet1.xml"
    parts[sheet] = re.sub(rb'<c r="F2"[^>]*>.*?</c>', b'<c r="F2"><f>1+2</f><v>3</v></c>', parts[sheet])
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in parts.items():
            archive.writestr(name, content)
    bill = total_bill(path, options=ImportOptions(period="2026-10"))
    assert tag_groups(bill) == {("2026-10", "USD", "mobile", None, None, None): (Decimal(3), 1, "2")}


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_a_record_with_data_only_in_columns_not_read_is_rejected_and_blank_lines_are_skipped(tmp_path, suffix,
                                                                                             csv_reader):
    text = ("BilledCost,EffectiveCost,BillingCurrency,BillingPeriodStart,ChargePeriodStart,Tags\r\n"
            "1,1,USD,2024-09-01,2024-09-01,\r\n"
            "\r\n"
            " , ,,,,\r\n"
            "7,,,,,\r\n"
            "2,2,USD,2024-09-01,2024-09-01,\r\n"
            ",,,")
    path = tmp_path / f"bill{suffix}"
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    bill = total_bill(path, options=ImportOptions(untagged=True))
    assert rejects(bill) == [(5, "EffectiveCost", "missing cost", "")]
    assert bill.input_rows == 3
    assert split_groups(bill) == {("2024-09", "USD", None, None, None): (Decimal(3), 2)}
    assert sorted(rows_of(bill)) == [2, 6]


QUOTE_LEFT_OPEN = {
    "in the last cell": 'unblendedCost,currency,billingCycle\n1,USD,2024-09\n2,USD,"2024-09\n3,USD,2024-09\n',
    "after a quote inside an unquoted cell": 'unblendedCost,currency,billingCycle\n1,US"D,2024-09\n2,USD,"2024-09\n'
                                             '3,USD,2024-09\n',
    "with no line break at the end": 'unblendedCost,currency,billingCycle\n1,USD,2024-09\n2,USD,"2024-09',
}


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
@pytest.mark.parametrize("text", QUOTE_LEFT_OPEN.values(), ids=QUOTE_LEFT_OPEN.keys())
def test_a_file_ending_inside_a_quoted_cell_is_refused_not_read_as_one_long_cell(tmp_path, suffix, text, csv_reader):
    """Arrow would take the rest of the file as the cell's text, the lines in it lost from the counts; the
    row-by-row reader refuses such a file, as truncated or broken."""
    path = tmp_path / f"bill{suffix}"
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    with pytest.raises(BillFormatError, match="cannot read the file: .*EOF inside string") as refused:
        total_bill(path, options=ImportOptions(untagged=True))
    assert refused.value.source == str(path)


def test_quotes_that_close_are_read_whatever_their_number(tmp_path):
    """An odd number of quotes is not a quote left open: one inside an unquoted cell, or after a closing one, is
    text."""
    path = tmp_path / "bill.csv"
    path.write_text('unblendedCost,currency,billingCycle,cz_container_bill\n1,USD,2024-09,"we"b\n'
                    '2,USD,2024-09,a"b\n', encoding="utf-8")
    bill = total_bill(path, options=ImportOptions())
    assert tag_groups(bill) == {("2024-09", "USD", "web", None, None, None): (Decimal(1), 1, "2"),
                                ("2024-09", "USD", 'a"b', None, None, None): (Decimal(2), 1, "3")}
