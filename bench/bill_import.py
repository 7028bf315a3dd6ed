"""Benchmark of a whole allocation run on large bills against its fair floor, DuckDB doing the same reduction, and
of the command line's start-up, in the same run.

For each bill shape (native CSV, FOCUS Parquet, CUR CSV.gz) and size, a seeded bill is generated
(bench/billgen.py, cached) and two commands are run as separate processes, alternating their order:

- ours: `cz-agent allocate` (import, allocate, store, report), exact Decimal arithmetic;
- the floor: DuckDB reducing the same bill to the same group sums as the import (agent.bills.totals): per
  (period, currency, tag value, and for untagged lines sub-account, workspace and API key), per (period,
  currency, sub-account, workspace, API key) and per (period, currency, tag value, charge day, charge kind), in one
  pass with GROUPING SETS, the cost read as text, checked against a strict decimal pattern, cast exactly to
  DECIMAL(38, 12) and summed exactly, rejected rows counted.

Each run's wall time and peak RSS (the child's ru_maxrss) are recorded. Every result is checked: the floor's tag
groups against the generator's exact totals, its split groups against ours (amount and line count of each), ours'
bill total per currency against the generator's. Then `cz-agent --help` is timed against `python -c pass`.

    python bench/bill_import.py [--sizes 1000000,2000000,10000000] [--repeats 3] [--out bench/RESULTS.md]
    python bench/bill_import.py --smoke      # 20 000 lines of each shape, one repeat, a temporary report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import billgen  # noqa: E402
from agent.bills.detect import SPECS  # noqa: E402
from agent.core.split import NO_VALUE  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("CZ_AGENT_CACHE", Path.home() / ".cache" / "cz-agent")) / "bench-bills"
TOOLS = ("ours", "duckdb")
CZ_AGENT = Path(sys.executable).with_name("cz-agent")
# The columns the import reads, as text: cost, currency, tag value, period (billing, else charge), sub-account,
# workspace, API key.
SOURCES_SQL = {
    "native": ("SELECT unblendedCost AS cost, currency, cz_container_bill AS tag, "
               "left(trim(billingCycle), 7) AS period, loginName AS sub_account, workspaceName AS workspace, "
               "apiKeyName AS api_key, NULL AS day, NULL AS kind "
               "FROM read_csv('{path}', all_varchar=true)"),
    "cur": ("SELECT \"lineItem/UnblendedCost\" AS cost, \"lineItem/CurrencyCode\" AS currency, "
            "\"resourceTags/user:cz_container_bill\" AS tag, "
            "coalesce(left(\"bill/BillingPeriodStartDate\", 7), left(\"lineItem/UsageStartDate\", 7)) AS period, "
            "\"lineItem/UsageAccountId\" AS sub_account, NULL AS workspace, NULL AS api_key, "
            "\"lineItem/UsageStartDate\" AS day, \"lineItem/LineItemType\" AS kind "
            "FROM read_csv('{path}', all_varchar=true)"),
    "focus": ("SELECT CAST(EffectiveCost AS VARCHAR) AS cost, BillingCurrency AS currency, "
              "json_extract_string(Tags, '$.cz_container_bill') AS tag, "
              "coalesce(left(CAST(BillingPeriodStart AS VARCHAR), 7), left(CAST(ChargePeriodStart AS VARCHAR), 7)) "
              "AS period, SubAccountName AS sub_account, NULL AS workspace, NULL AS api_key, "
              "CAST(ChargePeriodStart AS VARCHAR) AS day, ChargeFrequency AS kind "
              "FROM read_parquet('{path}')"),
}
# The fast path's own pattern (agent.bills.fast): a plain decimal of at most 24 digits before the point and 12 after.
PLAIN_COST = r"[+-]?(?:[0-9]{1,24}(?:\.[0-9]{0,12})?|\.[0-9]{1,12})"
# The charge day is the charge date's first 10 characters (the generator writes ISO dates), the kind usage where the
# cell is empty or names one of the format's usage kinds, else fixed, as the run stores them (daily_costs).
FLOOR_SQL = """
WITH lines AS (
    SELECT trim(cost) AS cost, upper(trim(currency)) AS currency, nullif(trim(tag), '') AS tag, period,
           nullif(trim(sub_account), '') AS sub_account, nullif(trim(workspace), '') AS workspace,
           nullif(trim(api_key), '') AS api_key, left(trim(day), 10) AS day,
           CASE WHEN coalesce(trim(kind), '') = '' OR lower(trim(kind)) IN ({usage}) THEN 'usage' ELSE 'fixed' END
               AS kind
    FROM ({source})
), judged AS (
    SELECT *, coalesce(regexp_full_match(cost, '{pattern}'), false) AS valid,
           CASE WHEN tag IS NULL THEN sub_account END AS tag_sub_account,
           CASE WHEN tag IS NULL THEN workspace END AS tag_workspace,
           CASE WHEN tag IS NULL THEN api_key END AS tag_api_key
    FROM lines
)
SELECT CASE WHEN GROUPING(sub_account) = 0 THEN 'split' WHEN GROUPING(kind) = 0 THEN 'day' ELSE 'tag' END, valid,
       period, currency, tag, tag_sub_account, tag_workspace, tag_api_key, sub_account, workspace, api_key, day, kind,
       sum(CASE WHEN valid THEN CAST(cost AS DECIMAL(38, 12)) END), count(*)
FROM judged
GROUP BY GROUPING SETS ((valid, period, currency, tag, tag_sub_account, tag_workspace, tag_api_key),
                        (valid, period, currency, sub_account, workspace, api_key),
                        (valid, period, currency, tag, day, kind))
"""
DUCKDB_SCRIPT = """
import duckdb, json, sys
# Its progress bar, shown on queries of more than two seconds, would go to stdout with the result.
connection = duckdb.connect()
connection.execute("SET enable_progress_bar = false")
rows = connection.sql(sys.argv[1]).fetchall()
print(json.dumps([[None if cell is None else str(cell) for cell in row] for row in rows]))
"""
STARTUP_COMMANDS = {"cz-agent --help": [str(CZ_AGENT), "--help"], "python -c pass": [sys.executable, "-c", "pass"]}
# The lines `cz-agent allocate` prints on stderr when piped, one per stage done.
STAGE = re.compile(r"^(read|allocated|stored|wrote) .* in ([0-9.]+) s$")
STAGES = ("read", "allocated", "stored", "wrote")
HELP_GOAL_SECONDS = 0.1
PEAK_GOAL_MIB = 512


@dataclass
class Measure:
    seconds: float
    cpu_seconds: float
    peak_mib: float
    # Ours only: the seconds of each stage the run reports (read, allocate, store, write).
    stages: dict[str, float] = field(default_factory=dict)


@dataclass
class FloorGroups:
    """The floor's result: exact sum and line count per tag group, per split group and per (currency, tag, charge day,
    charge kind) as the run stores its daily costs, and the rejected rows."""

    tag: dict[tuple, tuple[Decimal, int]]
    split: dict[tuple, tuple[Decimal, int]]
    day: dict[tuple, tuple[Decimal, int]]
    rejected: int


def bill(shape: str, lines: int) -> tuple[Path, dict[str, str]]:
    """The generated bill and its exact totals, cached by shape, size and the generator's code."""
    digest = hashlib.sha256(Path(billgen.__file__).read_bytes()).hexdigest()[:12]
    path = CACHE / f"{shape}-{lines}-{digest}{billgen.SUFFIXES[shape]}"
    totals_path = path.with_name(path.name + ".totals.json")
    if not totals_path.exists():
        print(f"generating {path.name}", file=sys.stderr)
        totals_path.write_text(json.dumps(billgen.generate(shape, lines=lines, out=path)))
    return path, json.loads(totals_path.read_text())


def run_ours(path: Path, workdir: Path) -> tuple[Measure, sqlite3.Connection]:
    """One `cz-agent allocate` of the bill; the store it wrote, opened."""
    store = workdir / "runs.db"
    store.unlink(missing_ok=True)
    command = [str(CZ_AGENT), "allocate", "--bill", str(path), "--rules", str(workdir / "rules.yaml"), "--usage",
               str(workdir / "usage.csv"), "--period", billgen.PERIOD, "--out", str(workdir / "report.csv")]
    stages = workdir / "stages.txt"
    measure = _wrapped(command, env={**os.environ, "CZ_AGENT_STORE_URL": f"sqlite:///{store}"}, stderr=stages)
    for line in stages.read_text().splitlines():
        if found := STAGE.match(line):
            measure.stages[found.group(1)] = float(found.group(2))
    return measure, sqlite3.connect(store)


def run_floor(shape: str, path: Path, workdir: Path) -> tuple[Measure, FloorGroups]:
    usage = ", ".join(f"'{kind.lower()}'" for kind in SPECS[shape].usage_kinds) or "NULL"
    sql = FLOOR_SQL.format(source=SOURCES_SQL[shape].format(path=path), pattern=PLAIN_COST, usage=usage)
    out_file = workdir / "duckdb.json"
    measure = _wrapped([sys.executable, "-c", DUCKDB_SCRIPT, sql], stdout=out_file)
    groups = FloorGroups(tag={}, split={}, day={}, rejected=0)
    for group, valid, *keys, amount, lines in json.loads(out_file.read_text()):
        total = (None if amount is None else Decimal(amount), int(lines))
        if valid == "False":
            groups.rejected += int(lines) if group == "split" else 0
        elif group == "tag":
            groups.tag[tuple(keys[:6])] = total
        elif group == "split":
            groups.split[tuple(keys[:2] + keys[6:9])] = total
        else:
            currency, tag, day, kind = keys[1], keys[2], keys[9], keys[10]
            groups.day[(currency, tag or "", day or "", kind)] = total
    return measure, groups


def _wrapped(command: list[str], *, env: dict[str, str] | None = None, stdout: Path | None = None,
             stderr: Path | None = None) -> Measure:
    """Run the command under a small Python wrapper that reports its wall time, its CPU time (user and system,
    all threads) and its own peak RSS."""
    wrapper = ("import json, os, resource, subprocess, sys, time\n"
               "started = time.monotonic()\n"
               "out = open(sys.argv[1], 'w') if sys.argv[1] else subprocess.DEVNULL\n"
               "err = open(sys.argv[2], 'w') if sys.argv[2] else subprocess.DEVNULL\n"
               "code = subprocess.call(sys.argv[3:], stdout=out, stderr=err)\n"
               "seconds = time.monotonic() - started\n"
               "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
               "print(json.dumps([code, seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss]))\n")
    result = subprocess.run([sys.executable, "-c", wrapper, str(stdout or ""), str(stderr or ""), *command], env=env,
                            capture_output=True, text=True, check=True)
    code, seconds, cpu_seconds, peak_kib = json.loads(result.stdout)
    if code:
        raise SystemExit(f"{' '.join(command[:3])} failed with exit code {code}")
    return Measure(seconds, cpu_seconds, peak_kib / 1024)


def check_floor(floor: FloorGroups, expected: dict[str, str], *, lines: int) -> None:
    """The floor's tag groups, folded to (category, tag, currency), equal the generator's exact totals."""
    found: dict[str, Decimal] = defaultdict(Decimal)
    for (_, currency, tag, *_), (amount, _) in floor.tag.items():
        found[f"{billgen.category_of(tag or '')}|{tag or ''}|{currency}"] += amount
    _same("duckdb", found, {key: Decimal(value) for key, value in expected.items()})
    counted = sum(count for _, count in floor.split.values())
    if floor.rejected or counted != lines:
        raise SystemExit(f"duckdb: {counted} lines summed and {floor.rejected} rejected, expected {lines} and 0")


def check_ours(store: sqlite3.Connection, floor: FloorGroups, expected: dict[str, str]) -> None:
    """Our bill total per currency equals the generator's; our split groups and daily costs equal the floor's, amount
    and lines: a run that read another bill, or judged a kind differently, with the same lines and totals per tag,
    would otherwise pass unseen."""
    with store:
        manifest = json.loads(store.execute("SELECT manifest FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])
        splits = store.execute("SELECT currency, sub_account, workspace, api_key, amount, line_count FROM bill_splits "
                               "WHERE run_id = (SELECT max(id) FROM runs)").fetchall()
        daily = store.execute("SELECT currency, tag, day, kind, amount, line_count FROM daily_costs "
                              "WHERE run_id = (SELECT max(id) FROM runs)").fetchall()
    store.close()
    ours_days = {tuple(keys): (Decimal(amount), lines) for *keys, amount, lines in daily}
    if ours_days != floor.day:
        raise SystemExit(f"ours: the daily costs differ from DuckDB's ({len(ours_days)} vs {len(floor.day)} groups, "
                         f"{len(ours_days.keys() ^ floor.day.keys())} keys in one only)")
    per_currency: dict[str, Decimal] = defaultdict(Decimal)
    for key, amount in expected.items():
        per_currency[key.rsplit("|", 1)[1]] += Decimal(amount)
    _same("ours", {currency: Decimal(totals["bill"]) for currency, totals in manifest["totals"].items()}, per_currency)
    ours = {(currency, *(None if value == NO_VALUE else value for value in keys)): (Decimal(amount), lines)
            for currency, *keys, amount, lines in splits}
    floors = {key[1:]: total for key, total in floor.split.items()}
    if ours != floors:
        raise SystemExit(f"ours: the split groups differ from DuckDB's ({len(ours)} vs {len(floors)} groups)")


def _same(tool: str, found: dict[str, Decimal], exact: dict[str, Decimal]) -> None:
    if set(found) != set(exact):
        raise SystemExit(f"{tool}: groups differ from the generator's ({len(found)} vs {len(exact)})")
    for key, amount in exact.items():
        if found[key] != amount:
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
                    # The floor of this repeat, to check ours against, whichever ran first.
                    measures: dict[str, Measure] = {}
                    for tool in (TOOLS if repeat % 2 == 0 else TOOLS[::-1]):
                        if tool == "duckdb":
                            measures[tool], floor = run_floor(shape, path, workdir)
                            check_floor(floor, expected, lines=size)
                        else:
                            measures[tool], store = run_ours(path, workdir)
                    check_ours(store, floor, expected)
                    for tool, measure in measures.items():
                        runs[tool].append(measure)
                        print(f"{shape} {size:>10,} {tool:<6} {measure.seconds:7.2f} s "
                              f"{measure.cpu_seconds:7.2f} s CPU {measure.peak_mib:7.0f} MiB", file=sys.stderr)
                results[(shape, size)] = runs
    return results


def startup(repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each start-up command, run alternately, after one unrecorded run of each."""
    seconds: dict[str, list[float]] = {name: [] for name in STARTUP_COMMANDS}
    for repeat in range(repeats + 1):
        names = list(STARTUP_COMMANDS) if repeat % 2 == 0 else list(STARTUP_COMMANDS)[::-1]
        for name in names:
            started = time.perf_counter()
            subprocess.run(STARTUP_COMMANDS[name], stdout=subprocess.DEVNULL, check=True)
            if repeat:
                seconds[name].append(time.perf_counter() - started)
    return seconds


def wall_goal(shape: str, size: int) -> float | None:
    """The issue's limit on ours/floor wall time for a bill, if it sets one at that size."""
    if size >= 10_000_000:
        return 1.5 if shape == "focus" else 2.0
    if size >= 2_000_000:
        return 2.5
    return None


def report(results: dict[tuple[str, int], dict[str, list[Measure]]], started: dict[str, list[float]], *,
           repeats: int) -> str:
    lines = ["# Bill import and allocation at scale, against the fair floor", "",
             "Written by `bench/bill_import.py` (`make bench`). Each cell: median (min-max) of "
             f"{repeats} run(s), each a separate process; peak memory is the process's ru_maxrss. The floor is DuckDB "
             "reducing the same bill to the same group sums as our import (see bench/README.md).", "",
             "| | |", "|---|---|",
             f"| machine | {platform.machine()}, {os.cpu_count()} cores, {platform.platform()} |",
             f"| versions | Python {platform.python_version()}, cz-agent {version('cz-allocation-agent')}, "
             f"DuckDB {version('duckdb')}, pandas {version('pandas')}, pyarrow {version('pyarrow')} |",
             f"| load average after the run | {', '.join(f'{x:.2f}' for x in os.getloadavg())} |", "",
             "| bill | lines | ours wall s | floor wall s | ours/floor | ours CPU s | floor CPU s | ours peak MiB | "
             "floor peak MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (shape, size), runs in results.items():
        ours, floor = runs["ours"], runs["duckdb"]
        ratio = statistics.median(m.seconds for m in ours) / statistics.median(m.seconds for m in floor)
        lines.append(f"| {shape} | {size:,} | {_spread([m.seconds for m in ours], '.2f')} | "
                     f"{_spread([m.seconds for m in floor], '.2f')} | {ratio:.2f} | "
                     f"{_spread([m.cpu_seconds for m in ours], '.2f')} | "
                     f"{_spread([m.cpu_seconds for m in floor], '.2f')} | "
                     f"{_spread([m.peak_mib for m in ours], '.0f')} | {_spread([m.peak_mib for m in floor], '.0f')} |")
    lines += ["", "Every run was checked: the floor's tag groups against the generator's exact totals, with no row "
              "rejected; our bill total per currency against the generator's, and our split groups (sub-account, "
              "workspace, API key, currency) and our daily costs (currency, tag, charge day, charge kind) against the "
              "floor's, amount and line count of each.", "",
              *stage_table(results),
              "## Start-up", "",
              f"Wall time of the command, {len(started['python -c pass'])} runs each, alternating, after one "
              "unrecorded run of each.", "",
              "| command | wall s |", "|---|---:|",
              *(f"| `{name}` | {_spread(seconds, '.3f')} |" for name, seconds in started.items()), "",
              *goals(results, started)]
    return "\n".join(lines)


def stage_table(results: dict[tuple[str, int], dict[str, list[Measure]]]) -> list[str]:
    """Where our wall time goes, from the stage lines of each run: the rest is start-up (imports, settings, rules,
    usage) and the summary printed at the end."""
    lines = ["## Where our time goes", "",
             "Medians of the seconds each stage of `cz-agent allocate` reports: reading the bill (the import to group "
             "totals, the file hashed alongside), allocating (and rendering the report), storing the run, writing the "
             "report; the rest is start-up (imports, settings, rules, usage) and the printed summary.", "",
             "| bill | lines | read | allocate | store | write | rest | wall |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (shape, size), runs in results.items():
        ours = runs["ours"]
        stages = [statistics.median(m.stages.get(stage, 0.0) for m in ours) for stage in STAGES]
        rest = statistics.median(m.seconds - sum(m.stages.values()) for m in ours)
        wall = statistics.median(m.seconds for m in ours)
        lines.append(f"| {shape} | {size:,} | {' | '.join(f'{s:.1f}' for s in stages)} | {rest:.1f} | {wall:.1f} |")
    return [*lines, ""]


def goals(results: dict[tuple[str, int], dict[str, list[Measure]]], started: dict[str, list[float]]) -> list[str]:
    """The issue's goals, each with the medians it was judged on."""
    def median(shape: str, size: int, tool: str, figure: str) -> float:
        return statistics.median(getattr(m, figure) for m in results[(shape, size)][tool])

    def verdict(met: bool) -> str:
        return "met" if met else "**not met**"

    lines = ["## Goals", "", "| goal | bill | figures (medians) | |", "|---|---|---|---|"]
    for shape, size in results:
        limit = wall_goal(shape, size)
        if limit is not None:
            ratio = median(shape, size, "ours", "seconds") / median(shape, size, "duckdb", "seconds")
            lines.append(f"| wall time at most {limit}x the floor | {shape} {size:,} | ours/floor {ratio:.2f} | "
                         f"{verdict(ratio <= limit)} |")
    sizes = sorted({size for _, size in results})
    for shape in sorted({shape for shape, _ in results}):
        # A bill of a million lines or more fills every chunk: from there on, the peak should not grow.
        flat_sizes = [size for size in sizes if size >= 1_000_000 and (shape, size) in results] or sizes[-1:]
        peaks = [median(shape, size, "ours", "peak_mib") for size in flat_sizes]
        lines.append(f"| peak under {PEAK_GOAL_MIB} MiB and flat from 1 M lines (within 10%) | {shape} "
                     f"{', '.join(f'{size:,}' for size in flat_sizes)} | "
                     f"ours {', '.join(f'{p:.0f}' for p in peaks)} MiB | "
                     f"{verdict(max(peaks) < PEAK_GOAL_MIB and max(peaks) <= 1.1 * min(peaks))} |")
    help_seconds = statistics.median(started["cz-agent --help"])
    bare = statistics.median(started["python -c pass"])
    lines.append(f"| `cz-agent --help` under {HELP_GOAL_SECONDS} s | | {help_seconds:.3f} s, "
                 f"{help_seconds / bare:.1f}x `python -c pass` ({bare:.3f} s) | "
                 f"{verdict(help_seconds < HELP_GOAL_SECONDS)} |")
    return [*lines, ""]


def _spread(values: list[float], form: str) -> str:
    return f"{statistics.median(values):{form}} ({min(values):{form}}-{max(values):{form}})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,2000000,10000000")
    parser.add_argument("--shapes", default=",".join(billgen.SHAPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--startup-repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--smoke", action="store_true", help="20 000 lines of each shape, one repeat, a temporary report")
    args = parser.parse_args(argv)
    sizes = [20_000] if args.smoke else [int(size) for size in args.sizes.split(",")]
    repeats = 1 if args.smoke else args.repeats
    out = Path(tempfile.mkdtemp(prefix="cz-bench-report-")) / "RESULTS.md" if args.smoke else args.out
    results = benchmark(args.shapes.split(","), sizes, repeats)
    started = startup(3 if args.smoke else args.startup_repeats)
    out.write_text(report(results, started, repeats=repeats))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
