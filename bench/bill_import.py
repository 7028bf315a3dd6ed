"""Benchmark of a whole allocation run on large bills against DuckDB and plain pandas, in the same run.

For each bill shape (native CSV, FOCUS Parquet, CUR CSV.gz) and size, a seeded bill is generated
(bench/billgen.py, cached) and three commands are run as separate processes, alternating their order:

- ours: `cz-agent allocate` (import, allocate, store, report), exact Decimal arithmetic;
- DuckDB: the equivalent SQL (classify the tag, group by category, tag value and currency, exact DECIMAL);
- pandas: `read_csv`/`read_parquet` then `groupby`, as a typical script does it (float sums).

Each run's wall time and peak RSS (the child's ru_maxrss) are recorded, every result is checked against
the generator's exact totals (pandas to 1e-6 relative: it sums floats), and the ratios are reported.

    python bench/bill_import.py [--sizes 100000,1000000,10000000] [--repeats 3] [--out bench/RESULTS.md]
    python bench/bill_import.py --smoke      # 20 000 lines of each shape, one repeat, a temporary report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import billgen  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("CZ_AGENT_CACHE", Path.home() / ".cache" / "cz-agent")) / "bench-bills"
TOOLS = ("ours", "duckdb", "pandas")
CATEGORY_SQL = ("CASE WHEN tag IS NULL OR tag = '' THEN 'common' WHEN tag LIKE 'cz_cluster_%' THEN 'cluster' "
                "WHEN tag LIKE 'cz_common_%' THEN 'service_common' ELSE 'service' END")
SOURCES_SQL = {
    "native": "SELECT cz_container_bill AS tag, unblendedCost AS cost, currency FROM read_csv('{path}', all_varchar=true)",
    "cur": ("SELECT \"resourceTags/user:cz_container_bill\" AS tag, \"lineItem/UnblendedCost\" AS cost, "
            "\"lineItem/CurrencyCode\" AS currency FROM read_csv('{path}', all_varchar=true)"),
    "focus": ("SELECT json_extract_string(Tags, '$.cz_container_bill') AS tag, CAST(EffectiveCost AS VARCHAR) AS cost, "
              "BillingCurrency AS currency FROM read_parquet('{path}')"),
}
DUCKDB_SCRIPT = """
import duckdb, json, sys
# Its progress bar, shown on queries of more than two seconds, would go to stdout with the result.
connection = duckdb.connect()
connection.execute("SET enable_progress_bar = false")
rows = connection.sql(sys.argv[1]).fetchall()
print(json.dumps({f"{c}|{t}|{cur}": str(a) for c, t, cur, a in rows}))
"""
PANDAS_SCRIPT = """
import json, sys
import pandas as pd
shape, path = sys.argv[1], sys.argv[2]
if shape == "focus":
    frame = pd.read_parquet(path, columns=["Tags", "EffectiveCost", "BillingCurrency"])
    frame["tag"] = frame["Tags"].map(lambda text: json.loads(text).get("cz_container_bill", ""))
    frame = frame.rename(columns={"EffectiveCost": "cost", "BillingCurrency": "currency"})
    frame["cost"] = frame["cost"].astype(float)
else:
    names = {"native": ("cz_container_bill", "unblendedCost", "currency"),
             "cur": ("resourceTags/user:cz_container_bill", "lineItem/UnblendedCost", "lineItem/CurrencyCode")}[shape]
    frame = pd.read_csv(path, usecols=list(names), keep_default_na=False)
    frame = frame.rename(columns=dict(zip(names, ("tag", "cost", "currency"))))
tag = frame["tag"].astype(str)
frame["category"] = "service"
frame.loc[tag.str.startswith("cz_cluster_"), "category"] = "cluster"
frame.loc[tag.str.startswith("cz_common_"), "category"] = "service_common"
frame.loc[tag == "", "category"] = "common"
sums = frame.groupby(["category", "tag", "currency"])["cost"].sum()
print(json.dumps({f"{c}|{t}|{cur}": repr(a) for (c, t, cur), a in sums.items()}))
"""


@dataclass
class Measure:
    seconds: float
    peak_mib: float


def bill(shape: str, lines: int) -> tuple[Path, dict[str, str]]:
    """The generated bill and its exact totals, cached by shape, size and the generator's code."""
    digest = hashlib.sha256(Path(billgen.__file__).read_bytes()).hexdigest()[:12]
    path = CACHE / f"{shape}-{lines}-{digest}{billgen.SUFFIXES[shape]}"
    totals_path = path.with_name(path.name + ".totals.json")
    if not totals_path.exists():
        print(f"generating {path.name}", file=sys.stderr)
        totals_path.write_text(json.dumps(billgen.generate(shape, lines=lines, out=path)))
    return path, json.loads(totals_path.read_text())


def run_tool(tool: str, shape: str, path: Path, workdir: Path) -> tuple[Measure, dict[str, Decimal]]:
    """One measured run of a tool on a bill, and its totals per 'category|tag|currency'."""
    if tool == "ours":
        store = workdir / "runs.db"
        store.unlink(missing_ok=True)
        rules, usage = workdir / "rules.yaml", workdir / "usage.csv"
        command = [str(Path(sys.executable).with_name("cz-agent")), "allocate", "--bill", str(path), "--rules",
                   str(rules), "--usage", str(usage), "--period", billgen.PERIOD, "--out", str(workdir / "report.csv")]
        measure = _wrapped(command, env={**os.environ, "CZ_AGENT_STORE_URL": f"sqlite:///{store}"})
        return measure, _our_totals(store)
    if tool == "duckdb":
        sql = (f"SELECT {CATEGORY_SQL}, coalesce(tag, ''), currency, sum(CAST(cost AS DECIMAL(38, 12))) "
               f"FROM ({SOURCES_SQL[shape].format(path=path)}) GROUP BY ALL")
        command = [sys.executable, "-c", DUCKDB_SCRIPT, sql]
    else:
        command = [sys.executable, "-c", PANDAS_SCRIPT, shape, str(path)]
    out_file = workdir / f"{tool}.json"
    measure = _wrapped(command, stdout=out_file)
    return measure, {key: Decimal(value) for key, value in json.loads(out_file.read_text()).items()}


def _wrapped(command: list[str], *, env: dict[str, str] | None = None, stdout: Path | None = None) -> Measure:
    """Run the command under a small Python wrapper that reports its wall time and its own peak RSS."""
    wrapper = ("import json, os, resource, subprocess, sys, time\n"
               "started = time.monotonic()\n"
               "out = open(sys.argv[1], 'w') if sys.argv[1] else subprocess.DEVNULL\n"
               "code = subprocess.call(sys.argv[2:], stdout=out, stderr=subprocess.PIPE)\n"
               "seconds = time.monotonic() - started\n"
               "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
               "print(json.dumps([code, seconds, peak]))\n")
    result = subprocess.run([sys.executable, "-c", wrapper, str(stdout or ""), *command], env=env,
                            capture_output=True, text=True, check=True)
    code, seconds, peak_kib = json.loads(result.stdout)
    if code:
        raise SystemExit(f"{' '.join(command[:3])} failed with exit code {code}")
    return Measure(seconds, peak_kib / 1024)


def _our_totals(store: Path) -> dict[str, Decimal]:
    """The bill total per currency from our run's manifest (the report splits it further than the peers)."""
    import sqlite3
    with sqlite3.connect(store) as connection:
        manifest = json.loads(connection.execute("SELECT manifest FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])
    return {currency: Decimal(totals["bill"]) for currency, totals in manifest["totals"].items()}


def check(tool: str, found: dict[str, Decimal], expected: dict[str, str]) -> None:
    exact = {key: Decimal(value) for key, value in expected.items()}
    if tool == "ours":
        per_currency: dict[str, Decimal] = {}
        for key, amount in exact.items():
            currency = key.rsplit("|", 1)[1]
            per_currency[currency] = per_currency.get(currency, Decimal(0)) + amount
        exact = per_currency
    if set(found) != set(exact):
        raise SystemExit(f"{tool}: groups differ from the generator's ({len(found)} vs {len(exact)})")
    for key, amount in exact.items():
        tolerance = abs(amount) * Decimal("1e-6") if tool == "pandas" else Decimal(0)
        if abs(found[key] - amount) > tolerance:
            raise SystemExit(f"{tool}: {key} is {found[key]}, the generator's exact total is {amount}")


def benchmark(shapes: list[str], sizes: list[int], repeats: int) -> dict[tuple[str, int], dict[str, list[Measure]]]:
    results: dict[tuple[str, int], dict[str, list[Measure]]] = {}
    with tempfile.TemporaryDirectory(prefix="cz-bench-") as temporary:
        workdir = Path(temporary)
        billgen.write_rules(workdir / "rules.yaml")
        billgen.write_usage(workdir / "usage.csv")
        for size in sizes:
            for shape in shapes:
                path, expected = bill(shape, size)
                runs: dict[str, list[Measure]] = {tool: [] for tool in TOOLS}
                for repeat in range(repeats):
                    order = TOOLS if repeat % 2 == 0 else TOOLS[::-1]
                    for tool in order:
                        measure, found = run_tool(tool, shape, path, workdir)
                        check(tool, found, expected)
                        runs[tool].append(measure)
                        print(f"{shape} {size:>10,} {tool:<6} {measure.seconds:7.2f} s {measure.peak_mib:7.0f} MiB",
                              file=sys.stderr)
                results[(shape, size)] = runs
    return results


def report(results: dict[tuple[str, int], dict[str, list[Measure]]], *, repeats: int) -> str:
    lines = ["# Bill import and allocation at scale", "",
             "Written by `bench/bill_import.py` (`make bench`). Each cell: median (min-max) of "
             f"{repeats} run(s), each a separate process; peak memory is the process's ru_maxrss.", "",
             "| | |", "|---|---|",
             f"| machine | {platform.machine()}, {os.cpu_count()} cores, {platform.platform()} |",
             f"| versions | Python {platform.python_version()}, cz-agent {version('cz-allocation-agent')}, "
             f"DuckDB {version('duckdb')}, pandas {version('pandas')}, pyarrow {version('pyarrow')} |",
             f"| load average after the run | {', '.join(f'{x:.2f}' for x in os.getloadavg())} |", "",
             "| bill | lines | tool | wall s | peak MiB | wall ours/tool | peak ours/tool |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for (shape, size), runs in results.items():
        ours = runs["ours"]
        for tool in TOOLS:
            measures = runs[tool]
            ratio = (statistics.median(m.seconds for m in ours) / statistics.median(m.seconds for m in measures),
                     statistics.median(m.peak_mib for m in ours) / statistics.median(m.peak_mib for m in measures))
            lines.append(f"| {shape} | {size:,} | {tool} | {_spread([m.seconds for m in measures], '.2f')} | "
                         f"{_spread([m.peak_mib for m in measures], '.0f')} | "
                         f"{'' if tool == 'ours' else f'{ratio[0]:.2f}'} | {'' if tool == 'ours' else f'{ratio[1]:.2f}'} |")
    lines += ["", "Every run's totals were checked against the generator's exact totals: ours (the bill total per "
              "currency in the run's manifest) and DuckDB exactly, pandas to 1e-6 relative (it sums floats).", "",
              *goals(results)]
    return "\n".join(lines)


def goals(results: dict[tuple[str, int], dict[str, list[Measure]]]) -> list[str]:
    """The issue's goals, each with the medians it was judged on."""
    def median(shape: str, size: int, tool: str, figure: str) -> float:
        return statistics.median(getattr(m, figure) for m in results[(shape, size)][tool])

    def verdict(met: bool) -> str:
        return "met" if met else "**not met**"

    lines = ["## Goals", "", "| goal | bill | figures (medians) | |", "|---|---|---|---|"]
    sizes = sorted({size for _, size in results})
    for shape, size in results:
        bill = f"{shape} {size:,}"
        wall = {tool: median(shape, size, tool, "seconds") for tool in TOOLS}
        lines.append(f"| wall time within 1.5x of DuckDB | {bill} | ours/DuckDB {wall['ours'] / wall['duckdb']:.2f} | "
                     f"{verdict(wall['ours'] <= 1.5 * wall['duckdb'])} |")
        lines.append(f"| ahead of plain pandas | {bill} | ours/pandas {wall['ours'] / wall['pandas']:.2f} | "
                     f"{verdict(wall['ours'] < wall['pandas'])} |")
    largest = sizes[-1]
    for shape in sorted({shape for shape, _ in results}):
        peak = {tool: median(shape, largest, tool, "peak_mib") for tool in TOOLS}
        lines.append(f"| lower peak memory than both on the largest bill | {shape} {largest:,} | "
                     f"ours {peak['ours']:.0f}, DuckDB {peak['duckdb']:.0f}, pandas {peak['pandas']:.0f} MiB | "
                     f"{verdict(peak['ours'] < min(peak['duckdb'], peak['pandas']))} |")
        # A bill of a million lines or more fills every chunk: from there on, the peak should not grow.
        flat_sizes = [size for size in sizes if size >= 1_000_000 and (shape, size) in results] or [largest]
        peaks = [median(shape, size, "ours", "peak_mib") for size in flat_sizes]
        lines.append(f"| peak under 1 GiB and flat from 1 M lines (within 10%) | {shape} "
                     f"{', '.join(f'{size:,}' for size in flat_sizes)} | "
                     f"ours {', '.join(f'{p:.0f}' for p in peaks)} MiB | "
                     f"{verdict(max(peaks) < 1024 and max(peaks) <= 1.1 * min(peaks))} |")
    return [*lines, ""]


def _spread(values: list[float], form: str) -> str:
    return f"{statistics.median(values):{form}} ({min(values):{form}}-{max(values):{form}})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--shapes", default=",".join(billgen.SHAPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--smoke", action="store_true", help="20 000 lines of each shape, one repeat, a temporary report")
    args = parser.parse_args(argv)
    sizes = [20_000] if args.smoke else [int(size) for size in args.sizes.split(",")]
    repeats = 1 if args.smoke else args.repeats
    out = Path(tempfile.mkdtemp(prefix="cz-bench-report-")) / "RESULTS.md" if args.smoke else args.out
    results = benchmark(args.shapes.split(","), sizes, repeats)
    out.write_text(report(results, repeats=repeats))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
