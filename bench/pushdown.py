"""Benchmark of the push-down of a large bill table to Trino: a whole `cz-agent allocate` run whose bill is a Hive
table of a local Trino, its time and the memory of the agent, which must not grow with the bill.

For each size, a seeded FOCUS Parquet bill (bench/billgen.py) is generated as files of --lines-per-file lines, each
file with a seed of its own, cached under ${CZ_AGENT_CACHE:-~/.cache/cz-agent}/bench-bills/focus-parts-<hash>/ (a
larger bill reuses a smaller one's files). One Trino is started as the push-down tests start it
(tests/support/fixtures_trino.py), an external table is created over each bill's files (hard links to the cache),
and `cz-agent allocate` runs with rules reading `bill: {engine: trino, table: hive.bench.focus_<lines>}`, as a
separate process. Recorded: its wall time, CPU time and peak RSS (the child's ru_maxrss), and Trino's CPU time and
peak RSS over the run (VmHWM, reset before each run). Every run's bill total per currency must equal the generator's
exact total, and every line must be summed.

    python bench/pushdown.py [--sizes 1000000,10000000,100000000] [--repeats 1] [--trino-heap 1G]
                             [--out bench/RESULTS-pushdown.md]
    python bench/pushdown.py --smoke     # 20 000 lines in 4 files, a temporary report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(REPO)]

import billgen  # noqa: E402
from bill_import import STAGE, Measure, _wrapped  # noqa: E402
from tests.support.fixtures_trino import HEAP, JVM_OPTIONS, TrinoServer, file_columns, install, running  # noqa: E402

CACHE_ROOT = Path(os.environ.get("CZ_AGENT_CACHE", Path.home() / ".cache" / "cz-agent"))
CACHE = CACHE_ROOT / "bench-bills"
CZ_AGENT = Path(sys.executable).with_name("cz-agent")
SEED = 7
SCHEMA = "bench"
# The agent's CZ_AGENT_BILL_QUERY_TIMEOUT_SECONDS (the query's longest run, 600 s by default), raised so that a
# 100 M-line query on a loaded 2-core machine is not ended.
QUERY_TIMEOUT_SECONDS = 3600
PEAK_FLAT = 1.10


@dataclass(frozen=True)
class Bill:
    """A generated bill's files, exact totals per 'category|tag|currency', and the seconds its files took to write."""

    lines: int
    files: list[Path]
    totals: dict[str, Decimal]
    generation_seconds: float

    @property
    def mib(self) -> float:
        return sum(file.stat().st_size for file in self.files) / 2**20


@dataclass
class Run:
    agent: Measure
    trino_cpu_seconds: float
    trino_peak_mib: float
    # The machine's 1-minute load average at the end of the run: other work on the 2 cores slows both processes.
    load: float


def part(index: int, lines: int) -> tuple[Path, dict]:
    """One file of a bill: the seed is SEED + index, so its content depends on its index and size alone. Its exact
    totals and the seconds it took are written beside it once it is complete."""
    digest = hashlib.sha256(Path(billgen.__file__).read_bytes()).hexdigest()[:12]
    path = CACHE / f"focus-parts-{digest}" / f"part-{index:05d}-{lines}.parquet"
    facts = path.with_name(path.name + ".json")
    if not facts.exists():
        started = time.monotonic()
        totals = billgen.generate("focus", lines=lines, out=path, seed=SEED + index)
        facts.write_text(json.dumps({"seconds": time.monotonic() - started, "totals": totals}))
    return path, json.loads(facts.read_text())


def bill(lines: int, *, lines_per_file: int, jobs: int) -> Bill:
    """The bill of `lines` lines, its files generated (by `jobs` processes) where not cached."""
    sizes = [min(lines_per_file, lines - first) for first in range(0, lines, lines_per_file)]
    print(f"bill of {lines:,} lines: {len(sizes)} file(s)", file=sys.stderr)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        parts = list(pool.map(part, range(len(sizes)), sizes))
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for _, facts in parts:
        for key, amount in facts["totals"].items():
            totals[key] += Decimal(amount)
    return Bill(lines=lines, files=[path for path, _ in parts], totals=dict(totals),
                generation_seconds=sum(facts["seconds"] for _, facts in parts))


def create_table(server: TrinoServer, bill: Bill) -> str:
    """An external table over hard links to the bill's files (a copy where the cache is on another file system)."""
    name = f"focus_{bill.lines}"
    directory = server.data_dir / "bills" / name
    directory.mkdir(parents=True)
    for file in bill.files:
        try:
            os.link(file, directory / file.name)
        except OSError:
            shutil.copyfile(file, directory / file.name)
    return server.external_table(SCHEMA, name, directory, format="PARQUET",
                                 columns=file_columns(bill.files[0], format="PARQUET"))


def groups(server: TrinoServer, table: str) -> int:
    """The rows of group sums the push-down's query returns for this bill: its distinct (currency, tags text,
    sub-account, billing month, charge month); every cost is a plain decimal and every date ISO."""
    return server.execute(f"SELECT count(*) FROM (SELECT DISTINCT BillingCurrency, Tags, SubAccountName, "
                          f"substr(BillingPeriodStart, 1, 7), substr(ChargePeriodStart, 1, 7) FROM {table})")[0][0]


def trino_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def trino_peak_mib(pid: int) -> float:
    found = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(found.group(1)) / 1024


def run_agent(server: TrinoServer, pid: int, table: str, workdir: Path) -> tuple[Run, sqlite3.Connection]:
    """One `cz-agent allocate` of the table; the store it wrote, opened. Trino's peak RSS is reset first (writing 5
    to clear_refs), so its peak is that of this run, counting the heap the JVM already holds."""
    rules = workdir / "rules.yaml"
    billgen.write_rules(rules)
    rules.write_text(rules.read_text() + f"bill:\n  engine: trino\n  table: {table}\n")
    store = workdir / "runs.db"
    store.unlink(missing_ok=True)
    env = {**os.environ, "CZ_AGENT_STORE_URL": f"sqlite:///{store}", "CZ_AGENT_TRINO_URL": server.url,
           "CZ_AGENT_BILL_QUERY_TIMEOUT_SECONDS": str(QUERY_TIMEOUT_SECONDS)}
    command = [str(CZ_AGENT), "allocate", "--rules", str(rules), "--usage", str(workdir / "usage.csv"),
               "--period", billgen.PERIOD, "--out", str(workdir / "report.csv")]
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    cpu = trino_cpu_seconds(pid)
    stages = workdir / "stages.txt"
    measure = _wrapped(command, env=env, stderr=stages)
    run = Run(agent=measure, trino_cpu_seconds=trino_cpu_seconds(pid) - cpu, trino_peak_mib=trino_peak_mib(pid),
              load=os.getloadavg()[0])
    for line in stages.read_text().splitlines():
        if found := STAGE.match(line):
            measure.stages[found.group(1)] = float(found.group(2))
    return run, sqlite3.connect(store)


def check(store: sqlite3.Connection, bill: Bill) -> None:
    """The run's bill total per currency equals the generator's exact total, and every line was summed."""
    with store:
        manifest = json.loads(store.execute("SELECT manifest FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])
        summed = store.execute("SELECT sum(line_count) FROM bill_splits "
                               "WHERE run_id = (SELECT max(id) FROM runs)").fetchone()[0]
    store.close()
    exact: dict[str, Decimal] = defaultdict(Decimal)
    for key, amount in bill.totals.items():
        exact[key.rsplit("|", 1)[1]] += amount
    found = {currency: Decimal(totals["bill"]) for currency, totals in manifest["totals"].items()}
    if found != exact:
        raise SystemExit(f"{bill.lines:,} lines: the bill totals {found} differ from the generator's {dict(exact)}")
    if summed != bill.lines:
        raise SystemExit(f"{bill.lines:,} lines: {summed} lines summed")


def benchmark(sizes: list[int], *, repeats: int, lines_per_file: int, jobs: int, heap: str,
              ) -> tuple[list[tuple[Bill, int, int, list[Run]]], dict[str, str]]:
    """Each size's bill, its groups, its daily costs and runs; and the versions of Trino and its Java."""
    bills = [bill(size, lines_per_file=lines_per_file, jobs=jobs) for size in sizes]
    results = []
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    # Beside the cache, so that the tables' files are hard links to it.
    with tempfile.TemporaryDirectory(prefix="pushdown-bench-", dir=CACHE_ROOT) as temporary:
        work = Path(temporary)
        billgen.write_usage(work / "usage.csv")
        (work / "trino").mkdir()
        with running(work / "trino", heap=heap) as (server, process):
            versions = {"trino": server.execute("SELECT node_version FROM system.runtime.nodes")[0][0],
                        "java": java_version(Path(install()["trino-java-home"]))}
            server.execute(f"CREATE SCHEMA IF NOT EXISTS {server.catalog}.{SCHEMA}")
            for generated in bills:
                table = create_table(server, generated)
                runs = []
                for _ in range(repeats):
                    run, store = run_agent(server, process.pid, table, work)
                    daily = store.execute("SELECT count(*) FROM daily_costs "
                                          "WHERE run_id = (SELECT max(id) FROM runs)").fetchone()[0]
                    check(store, generated)
                    runs.append(run)
                    print(f"{generated.lines:>12,} lines {run.agent.seconds:8.1f} s agent "
                          f"{run.agent.peak_mib:6.0f} MiB, Trino {run.trino_cpu_seconds:7.1f} s CPU "
                          f"{run.trino_peak_mib:6.0f} MiB, load {run.load:.2f}", file=sys.stderr)
                results.append((generated, groups(server, table), daily, runs))
    return results, versions


def java_version(home: Path) -> str:
    answer = subprocess.run([str(home / "bin" / "java"), "-version"], capture_output=True, text=True, check=True)
    return answer.stderr.splitlines()[0]


def report(results: list[tuple[Bill, int, int, list[Run]]], versions: dict[str, str], *, repeats: int, heap: str,
           lines_per_file: int) -> str:
    lines = ["# Push-down of a bill table to Trino, at scale", "",
             "Written by `bench/pushdown.py`. A whole `cz-agent allocate` run whose rules read the bill from a Hive "
             "table of a local one-node Trino (`bill: {engine: trino, table: hive.bench.focus_<lines>}`), over a "
             f"generated FOCUS Parquet bill in files of {lines_per_file:,} lines (see bench/README.md). Each cell: "
             f"median (min-max) of {repeats} run(s), each a separate process; the agent's peak is its ru_maxrss, "
             "Trino's its VmHWM over the run (reset before it, so it counts the heap the JVM already held).", "",
             "| | |", "|---|---|",
             f"| machine | {platform.machine()}, {os.cpu_count()} cores, "
             f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, {platform.platform()} |",
             f"| versions | Python {platform.python_version()}, cz-agent {version('cz-allocation-agent')}, "
             f"trino client {version('trino')}, pyarrow {version('pyarrow')}, Trino {versions['trino']}, "
             f"{versions['java']} |",
             f"| Trino JVM | -Xmx{heap} {' '.join(JVM_OPTIONS)} |",
             f"| load average after the run | {', '.join(f'{x:.2f}' for x in os.getloadavg())} |", "",
             "| lines | files | Parquet MiB | generation s | groups returned | daily costs | agent wall s | "
             "of which push-down s | k lines/s | agent CPU s | agent peak MiB | Trino CPU s | Trino peak MiB | "
             "load after |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for generated, group_count, daily, runs in results:
        lines.append(f"| {generated.lines:,} | {len(generated.files)} | {generated.mib:,.0f} | "
                     f"{generated.generation_seconds:,.0f} | {group_count:,} | {daily:,} | "
                     f"{_spread([r.agent.seconds for r in runs], '.1f')} | "
                     f"{_spread([r.agent.stages.get('read', 0.0) for r in runs], '.1f')} | "
                     f"{generated.lines / 1e3 / statistics.median(r.agent.seconds for r in runs):,.0f} | "
                     f"{_spread([r.agent.cpu_seconds for r in runs], '.1f')} | "
                     f"{_spread([r.agent.peak_mib for r in runs], '.0f')} | "
                     f"{_spread([r.trino_cpu_seconds for r in runs], '.1f')} | "
                     f"{_spread([r.trino_peak_mib for r in runs], '.0f')} | "
                     f"{_spread([r.load for r in runs], '.2f')} |")
    lines += ["", "Every run was checked: its bill total per currency (the run's manifest) equals the generator's "
              "exact total, and its split groups count every line of the bill. \"Push-down\" is the stage "
              "`cz-agent allocate` reports as reading the bill: the query, its answer and the judging of its texts. "
              "Generation is the seconds the bill's files took to write, once (they are cached); \"groups returned\" "
              "counts the distinct (currency, tags text, sub-account, billing and charge month) of the table, the "
              "rows of sums the query sends the agent, beside its day groups: \"daily costs\" counts the (currency, tag, "
              "charge day, charge kind) the run stored. The load is the machine's 1-minute load average at the end "
              "of the run: above 2, other work shared the 2 cores with Trino and the agent.", "", *reading(results)]
    return "\n".join(lines) + "\n"


def reading(results: list[tuple[Bill, int, int, list[Run]]]) -> list[str]:
    peaks = [(generated.lines, group_count, statistics.median(r.agent.peak_mib for r in runs),
              statistics.median(r.agent.seconds for r in runs), daily) for generated, group_count, daily, runs in results]
    low, high = min(peak[2] for peak in peaks), max(peak[2] for peak in peaks)
    flat = high <= PEAK_FLAT * low
    first, last = peaks[0], peaks[-1]
    return ["## Reading", "",
            f"From {first[0]:,} to {last[0]:,} lines ({last[0] / first[0]:g}x) the agent's peak went from "
            f"{first[2]:.0f} to {last[2]:.0f} MiB (range {low:.0f}-{high:.0f} MiB): "
            + (f"flat, within {PEAK_FLAT - 1:.0%}." if flat else f"**not flat** (more than {PEAK_FLAT - 1:.0%} apart).")
            + f" The rows it receives follow the groups, {first[1]:,} to {last[1]:,}, not the lines, and so does what "
            f"it keeps: {first[4]:,} to {last[4]:,} daily costs (a generated bill holds more distinct tags as it grows), "
            f"{_per_cost_kib(first, last)}. The wall time "
            f"is Trino's scan: {first[0] / 1e3 / first[3]:,.0f} k lines/s at {first[0]:,} lines, "
            f"{last[0] / 1e3 / last[3]:,.0f} k at {last[0]:,}.", ""]


def _per_cost_kib(first: tuple, last: tuple) -> str:
    if last[4] == first[4]:
        return "as many at each size"
    return f"{(last[2] - first[2]) * 1024 / (last[4] - first[4]):.1f} KiB of peak per daily cost more"


def _spread(values: list[float], form: str) -> str:
    if len(values) == 1:
        return f"{values[0]:{form}}"
    return f"{statistics.median(values):{form}} ({min(values):{form}}-{max(values):{form}})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000,100000000")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--lines-per-file", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=1, help="processes generating the bill's files")
    parser.add_argument("--trino-heap", default=HEAP, help=f"Trino's JVM -Xmx (default {HEAP}, the tests' own)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS-pushdown.md")
    parser.add_argument("--smoke", action="store_true", help="20 000 lines in 4 files, a temporary report")
    args = parser.parse_args(argv)
    sizes = [20_000] if args.smoke else [int(size) for size in args.sizes.split(",")]
    lines_per_file = 5_000 if args.smoke else args.lines_per_file
    out = Path(tempfile.mkdtemp(prefix="cz-bench-report-")) / "RESULTS-pushdown.md" if args.smoke else args.out
    results, versions = benchmark(sizes, repeats=args.repeats, lines_per_file=lines_per_file, jobs=args.jobs,
                                  heap=args.trino_heap)
    out.write_text(report(results, versions, repeats=args.repeats, heap=args.trino_heap,
                          lines_per_file=lines_per_file))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
