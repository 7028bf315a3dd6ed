"""Benchmark of the bill import's Parquet reader (pyarrow) against one reading through embedded DuckDB, same run.

Each run is a separate process calling `agent.bills.importer.total_bill` on a generated FOCUS Parquet bill
(bench/billgen.py, cached as bench/bill_import.py caches it). The DuckDB run swaps
`agent.bills.reader._parquet_batches` for `duckdb_parquet_batches` below in that process, so everything after
reading (the fast path, the row-by-row judge, the totals) is the same code. The two
alternate which goes first; wall time and peak RSS (the child's ru_maxrss) are reported as median (min-max), and
every run's totals, rejects and counts must equal the other reader's.

    python bench/parquet_reader.py [--lines 2000000] [--repeats 5] [--out bench/RESULTS-parquet.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from collections.abc import Collection, Iterator
from importlib.metadata import version
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bill_import  # noqa: E402
from agent.bills import reader as bill_reader  # noqa: E402
from agent.core.bill_limits import BillLimits  # noqa: E402
from agent.errors import FastReadError  # noqa: E402

READERS = ("duckdb", "pyarrow")
CHILD_SCRIPT = """
import json, sys
from pathlib import Path
sys.path.insert(0, "{bench}")
from agent.bills import reader
from agent.bills.importer import total_bill
from agent.bills.options import ImportOptions
if sys.argv[2] == "duckdb":
    import parquet_reader
    reader._parquet_batches = parquet_reader.duckdb_parquet_batches
totals = total_bill(Path(sys.argv[1]), options=ImportOptions(period="{period}"))
print(json.dumps({{"rows": totals.input_rows, "accepted": totals.accepted_rows, "rejected": repr(totals.rejected),
                  "groups": sorted((repr(key), str(total.exact()), total.lines) for key, total in
                                   totals.tag_groups.items())}}))
"""

# DuckDB reads on at most two threads and within this much memory; no progress bar, drawn on stdout otherwise.
DUCKDB_SETTINGS = {"threads": 2, "memory_limit": "256MB", "preserve_insertion_order": True}
ARROW_BATCHES = bill_reader._parquet_batches


def duckdb_parquet_batches(path: Path, columns: list[str], *, plain: Collection[str], limits: BillLimits,
                           source: str, position: bill_reader.ReadPosition | None = None, decimal: str | None = None
                           ) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """The reader studied: DuckDB scans the used columns with `file_row_number`, each column fetched as the type
    it reads and turned into text by Arrow as the pyarrow reader does (so a decimal is never cast by DuckDB, and
    a cell gives the same text either way). A file where DuckDB types a used column otherwise (a decimal wider
    than 38 digits becomes a float, timestamps change unit) is read by pyarrow; one DuckDB refuses (text that
    is not UTF-8) raises FastReadError, and the importer reads it again row by row. `position` (the progress
    display's) is the pyarrow reader's signature; DuckDB's scan does not report one. The cost column `decimal` is
    kept as decimals where the pyarrow reader keeps it."""
    bill = pq.ParquetFile(path, pre_buffer=False)
    bill_reader._check_parquet_size(bill, columns, limits=limits, source=source)
    selected = ", ".join('"' + name.replace('"', '""') + '"' for name in columns)
    with duckdb.connect(config=DUCKDB_SETTINGS) as connection:
        connection.execute("SET enable_progress_bar = false")
        relation = connection.sql(f"SELECT {selected}, file_row_number FROM read_parquet($path, file_row_number = "
                                  "true)", params={"path": str(path)})
        try:
            batches = relation.to_arrow_reader(bill_reader.CHUNK_ROWS)
            if not all(_text_type(batches.schema.field(name).type) == _text_type(bill.schema_arrow.field(name).type)
                       for name in columns):
                batches.close()
                yield from ARROW_BATCHES(path, columns, plain=plain, limits=limits, source=source,
                                         position=position, decimal=decimal)
                return
            kept = decimal if decimal is not None and bill_reader.is_exact_decimal(
                bill.schema_arrow.field(decimal).type, limits=limits) else None
            for batch in batches:
                rows = batch.column("file_row_number").to_numpy() + 1
                yield pa.table({name: batch.column(name) if name == kept else
                                bill_reader._arrow_strings(batch.column(name)) for name in columns}), rows
        except duckdb.Error as e:
            raise FastReadError(str(e)) from e


def _text_type(kind: pa.DataType) -> object:
    """The type as far as its text goes: dictionary or not, string width and nested field names aside."""
    if pa.types.is_dictionary(kind):
        return _text_type(kind.value_type)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return "string"
    if pa.types.is_map(kind):
        return "map", _text_type(kind.key_type), _text_type(kind.item_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return "list", _text_type(kind.value_type)
    if pa.types.is_struct(kind):
        return "struct", tuple((field.name, _text_type(field.type)) for field in kind)
    return kind


def run(path: Path, reader: str, out: Path) -> tuple[bill_import.Measure, dict]:
    command = [sys.executable, "-c", CHILD_SCRIPT.format(period=bill_import.billgen.PERIOD,
                                                              bench=bill_import.BENCH_DIR), str(path), reader]
    measure = bill_import._wrapped(command, stdout=out)
    return measure, json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=bill_import.BENCH_DIR / "RESULTS-parquet.md")
    args = parser.parse_args(argv)
    path, _ = bill_import.bill("focus", args.lines)
    measures: dict[str, list[bill_import.Measure]] = {reader: [] for reader in READERS}
    scratch = args.out.with_suffix(".run.json")
    for repeat in range(args.repeats + 1):
        results = {}
        for reader in READERS if repeat % 2 else reversed(READERS):
            measure, results[reader] = run(path, reader, scratch)
            if repeat:
                measures[reader].append(measure)
        if results["duckdb"] != results["pyarrow"]:
            raise SystemExit("the two readers gave different totals, rejects or counts")
    scratch.unlink()
    args.out.write_text(report(measures, lines=args.lines, rows=results["duckdb"]["rows"]))
    print(args.out)
    return 0


def report(measures: dict[str, list[bill_import.Measure]], *, lines: int, rows: int) -> str:
    repeats = len(measures["duckdb"])
    wall = {reader: [measure.seconds for measure in measures[reader]] for reader in READERS}
    peak = {reader: [measure.peak_mib for measure in measures[reader]] for reader in READERS}
    lines_out = [
        "# Parquet reader: DuckDB against pyarrow",
        "",
        f"Written by `bench/parquet_reader.py`. `total_bill` on a generated FOCUS Parquet bill of {lines:,} lines "
        f"({rows:,} read), each run a separate process, {repeats} repeats after one unrecorded warm-up, alternating "
        "which reader goes first. Each cell: median (min-max); peak memory is the process's ru_maxrss. Every run's "
        "totals, rejects and counts were equal between the readers.",
        "",
        f"Machine: {platform.machine()}, {bill_import.os.cpu_count()} cores; Python {platform.python_version()}, "
        f"DuckDB {version('duckdb')}, pyarrow {version('pyarrow')}; load average after the run "
        f"{', '.join(f'{load:.2f}' for load in bill_import.os.getloadavg())}.",
        "",
        "| reader | wall s | peak MiB |",
        "|---|---:|---:|",
    ]
    for reader in READERS:
        lines_out.append(f"| {reader} | {bill_import._spread(wall[reader], '.2f')} | "
                         f"{bill_import._spread(peak[reader], '.0f')} |")
    median = {reader: statistics.median(wall[reader]) for reader in READERS}
    verdict = "not slower: it may replace" if median["duckdb"] <= median["pyarrow"] else "slower: it does not replace"
    lines_out += ["", f"DuckDB/pyarrow wall time {median['duckdb'] / median['pyarrow']:.2f}: DuckDB is {verdict} "
                  "the pyarrow reader (`agent/bills/reader.py: _parquet_batches`)."]
    return "\n".join(lines_out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
