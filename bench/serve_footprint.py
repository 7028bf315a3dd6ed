"""Benchmark of the agent's footprint: idle memory of `cz-agent serve` and the latency of /metrics scrapes.

A store is filled the way the agent fills it: for each of `--periods` months a seeded bill is generated
(every one of `--services` services with its own exclusive cost, cluster cost spread over the namespaces of
the first 20 services, untagged lines for the common pool, an unknown tag left unallocated), the rules share
every service among all `--companies` companies, and `cz-agent allocate` stores the month's run. Then, for
each of `--repeats` rounds, the real `cz-agent serve` is started on that store as a separate process with
nothing to do (an empty inbox, the next job an hour away), every period exposed and no series folded:

- idle RSS: VmRSS of the process `--settle` seconds after it first answered, before any scrape;
- scrapes: one first (cold) scrape, then `--scrapes` sequential ones on one keep-alive connection, as
  Prometheus does; p50, p99 and max of those, and the RSS after them;
- every round checks the exposition: one `cz_allocation_cost` series per period, company and service of
  the exclusive cost, and each period's run, or the benchmark fails.

The report gives min/median/max over the rounds against the goals (idle RSS under 150 MiB, p99 under 100 ms).

    python bench/serve_footprint.py [--periods 12] [--companies 50] [--services 200] [--repeats 3]
                                    [--scrapes 200] [--settle 15] [--out bench/RESULTS-serve.md]
    python bench/serve_footprint.py --smoke   # 2 periods x 3 companies x 4 services, one short round,
                                              # a temporary report
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

BENCH_DIR = Path(__file__).resolve().parent
FIRST_PERIOD = (2025, 11)
CLUSTER = "prod"
CLUSTER_SERVICES = 20
UNKNOWN_SERVICE = "svc-unknown"
DAY_SECONDS = 86_400
IDLE_RSS_GOAL_MIB = 150
P99_GOAL_MS = 100
READY_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Shape:
    periods: list[str]
    companies: list[str]
    services: list[str]

    @property
    def cluster_services(self) -> list[str]:
        return self.services[:CLUSTER_SERVICES]


@dataclass
class Round:
    """One start of `cz-agent serve`: its memory and the latency of its scrapes."""

    started_seconds: float
    idle_rss_mib: float
    first_scrape_ms: float
    scrape_ms: list[float]
    scraped_rss_mib: float
    idle_native: set[str]
    series: Counter[str]
    body_bytes: int

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.scrape_ms)

    @property
    def p99_ms(self) -> float:
        return _percentile(self.scrape_ms, 0.99)


def _percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile: a value that was actually measured."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(fraction * len(ranked)) - 1)]


def shape_of(*, periods: int, companies: int, services: int) -> Shape:
    year, month = FIRST_PERIOD
    months = []
    for _ in range(periods):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return Shape(periods=months, companies=[f"co-{n:02d}" for n in range(companies)],
                 services=[f"svc-{n:03d}" for n in range(services)])


# ------------------------------------------------------------------------------------------- the store


def write_rules(path: Path, shape: Shape) -> None:
    """Every service shared by every company, with weights that differ from one service to the next."""
    companies = len(shape.companies)
    lines = ["tag_key: cz_container_bill", "currency: USD",
             "companies: {" + ", ".join(f"{name}: {n + 1}" for n, name in enumerate(shape.companies)) + "}",
             "services:"]
    for s, service in enumerate(shape.services):
        weights = ", ".join(f"{company}: {(s + c) % companies + 1}" for c, company in enumerate(shape.companies))
        lines.append(f"  {service}: {{{weights}}}")
    lines += ["namespaces:", *(f"  ns-{service}: {service}" for service in shape.cluster_services)]
    path.write_text("\n".join(lines) + "\n")


def write_usage(path: Path, shape: Shape) -> None:
    rows = ["cluster,namespace,service,memory_byte_seconds"]
    rows += [f"{CLUSTER},ns-{service},{service},{(n + 1) * 2**30 * DAY_SECONDS * 30}"
             for n, service in enumerate(shape.cluster_services)]
    path.write_text("\n".join(rows) + "\n")


def write_bill(path: Path, shape: Shape, *, period: str, seed: int) -> None:
    """A month's native bill: a few lines per service across workspaces and API keys, cluster lines,
    untagged lines and one line of an unknown service."""
    rng = random.Random(f"{seed}-{period}")
    tags = [service for service in shape.services for _ in range(3)]
    tags += [f"cz_cluster_{CLUSTER}"] * 10 + [""] * 10 + [UNKNOWN_SERVICE]
    rows = ["billingCycle,billingDate,loginName,workspaceName,apiKeyName,productName,resourceId,"
            "cz_container_bill,unblendedCost,currency"]
    for n, tag in enumerate(tags):
        cost = f"{rng.randrange(1_000_000, 500_000_000) / 1_000_000:.6f}"
        rows.append(f"{period},{period}-{n % 28 + 1:02d},team-{n % 40:02d},ws-{n % 30:02d},key-{n % 90:03d},ECS,"
                    f"i-{n:05d},{tag},{cost},USD")
    path.write_text("\n".join(rows) + "\n")


def build_store(workdir: Path, shape: Shape, *, seed: int = 7) -> str:
    """The store URL, filled by one `cz-agent allocate` per period, as an operator or the inbox job would."""
    store_url = f"sqlite:///{workdir / 'runs.db'}"
    rules, usage = workdir / "rules.yaml", workdir / "usage.csv"
    write_rules(rules, shape)
    write_usage(usage, shape)
    for period in shape.periods:
        bill = workdir / f"bill-{period}.csv"
        write_bill(bill, shape, period=period, seed=seed)
        command = [_cz_agent(), "allocate", "--bill", str(bill), "--rules", str(rules), "--usage", str(usage),
                   "--period", period, "--out", str(workdir / f"report-{period}.csv")]
        result = subprocess.run(command, env={**_environment(), "CZ_AGENT_STORE_URL": store_url},
                                capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"cz-agent allocate --period {period} failed:\n{result.stdout}{result.stderr}")
        print(f"stored {period}", file=sys.stderr)
    return store_url


def _cz_agent() -> str:
    return str(Path(sys.executable).with_name("cz-agent"))


def _environment() -> dict[str, str]:
    """This environment without its CZ_AGENT_* settings: the benchmark sets every one it relies on."""
    return {name: value for name, value in os.environ.items() if not name.startswith("CZ_AGENT_")}


# ------------------------------------------------------------------------------------------- the agent


def serve_env(workdir: Path, *, store_url: str, port: int, shape: Shape) -> dict[str, str]:
    inbox = workdir / "inbox"
    inbox.mkdir(exist_ok=True)
    per_period = len(shape.companies) * (len(shape.services) + len(shape.cluster_services) + 1)
    return {**_environment(), "CZ_AGENT_STORE_URL": store_url, "CZ_AGENT_RULES_FILE": str(workdir / "rules.yaml"),
            "CZ_AGENT_INBOX_DIR": str(inbox), "CZ_AGENT_HOST": "127.0.0.1", "CZ_AGENT_PORT": str(port),
            # The first import and allocation find the inbox empty; the next ones are an hour away.
            "CZ_AGENT_INBOX_POLL_SECONDS": "3600", "CZ_AGENT_ALLOCATION_INTERVAL_SECONDS": "3600",
            "CZ_AGENT_EXPOSED_PERIODS": str(len(shape.periods)),
            # Every series exposed: nothing folded into `other`.
            "CZ_AGENT_MAX_SERIES_PER_FAMILY": str(2 * len(shape.periods) * per_period + 100)}


def measure_round(workdir: Path, *, store_url: str, shape: Shape, scrapes: int, settle: float) -> Round:
    port = _free_port()
    log_path = workdir / "serve.log"
    started = time.monotonic()
    with log_path.open("w") as log_file:
        process = subprocess.Popen([_cz_agent(), "serve"], env=serve_env(workdir, store_url=store_url, port=port,
                                                                         shape=shape),
                                   stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_ready(port, process, log_path)
        started_seconds = time.monotonic() - started
        time.sleep(settle)
        idle_rss = _rss_mib(process.pid)
        idle_native = _native_packages(process.pid)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        first_ms, body = _scrape(connection)
        latencies = [_scrape(connection)[0] for _ in range(scrapes)]
        connection.close()
        scraped_rss = _rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return Round(started_seconds=started_seconds, idle_rss_mib=idle_rss, first_scrape_ms=first_ms,
                 scrape_ms=latencies, scraped_rss_mib=scraped_rss, idle_native=idle_native,
                 series=check_exposition(body, shape), body_bytes=len(body))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"cz-agent serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"cz-agent serve did not answer /readyz within {READY_TIMEOUT_SECONDS} s:\n{log_path.read_text()}")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS in /proc/{pid}/status")


def _native_packages(pid: int) -> set[str]:
    """The installed packages whose compiled libraries the process has loaded: what weighs in its RSS."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return set(re.findall(r"/site-packages/([A-Za-z0-9_]+)(?:\.libs)?/\S*\.so", maps))


def _scrape(connection: http.client.HTTPConnection) -> tuple[float, str]:
    """One whole scrape, request to the last byte of the body, in milliseconds."""
    started = time.perf_counter()
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    body = response.read()
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise SystemExit(f"/metrics answered {response.status}: {body[:500]!r}")
    return elapsed_ms, body.decode()


def check_exposition(body: str, shape: Shape) -> Counter[str]:
    """The series count of every family; fails unless each period, company and service is exposed."""
    series: Counter[str] = Counter()
    exclusive, cluster, runs = set(), set(), set()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            series[sample.name] += 1
            labels = sample.labels
            if sample.name == "cz_allocation_cost" and labels["category"] == "service_exclusive":
                exclusive.add((labels["period"], labels["company"], labels["service_code"]))
            elif sample.name == "cz_allocation_cost" and labels["category"] == "cluster":
                cluster.add((labels["period"], labels["company"], labels["service_code"]))
            elif sample.name == "cz_run_info":
                runs.add(labels["period"])
    expected = {(p, c, s) for p in shape.periods for c in shape.companies for s in shape.services}
    if exclusive != expected:
        raise SystemExit(f"/metrics exposes {len(exclusive)} exclusive-cost series, expected {len(expected)} "
                         f"({len(shape.periods)} periods x {len(shape.companies)} companies x "
                         f"{len(shape.services)} services)")
    if len(cluster) != len(shape.periods) * len(shape.companies) * len(shape.cluster_services):
        raise SystemExit(f"/metrics exposes {len(cluster)} cluster-cost series")
    if runs != set(shape.periods):
        raise SystemExit(f"/metrics exposes the runs of {sorted(runs)}, expected {shape.periods}")
    return series


# ------------------------------------------------------------------------------------------- the report


def report(rounds: list[Round], *, shape: Shape, scrapes: int, settle: float) -> str:
    series = rounds[0].series
    idle = [r.idle_rss_mib for r in rounds]
    native = sorted(set.union(*(r.idle_native for r in rounds)))
    p99 = [r.p99_ms for r in rounds]
    lines = ["# Agent footprint: idle memory and /metrics scrapes", "",
             "Written by `bench/serve_footprint.py` (`make bench`). Each figure: median (min-max) of "
             f"{len(rounds)} start(s) of `cz-agent serve`, each a separate process on the same store.", "",
             "| | |", "|---|---|",
             f"| machine | {platform.machine()}, {os.cpu_count()} cores, {platform.platform()} |",
             f"| versions | Python {platform.python_version()}, cz-agent {version('cz-allocation-agent')}, "
             f"prometheus-client {version('prometheus-client')}, FastAPI {version('fastapi')}, "
             f"uvicorn {version('uvicorn')}, SQLAlchemy {version('sqlalchemy')}, pandas {version('pandas')} |",
             f"| load average after the run | {', '.join(f'{x:.2f}' for x in os.getloadavg())} |",
             f"| store | SQLite, {len(shape.periods)} periods ({shape.periods[0]} to {shape.periods[-1]}), "
             f"{len(shape.companies)} companies, {len(shape.services)} services, one `cz-agent allocate` run each |",
             f"| compiled libraries loaded at idle | {', '.join(native)} |",
             f"| exposed | {sum(series.values()):,} series, {rounds[0].body_bytes / 1024:,.0f} KiB per scrape; "
             f"`cz_allocation_cost` {series['cz_allocation_cost']:,} |", "",
             "| figure | median (min-max) | goal | met |", "|---|---:|---:|---|",
             f"| idle RSS, {settle:g} s after the first answer, MiB | {_spread(idle, '.1f')} | < {IDLE_RSS_GOAL_MIB} | "
             f"{_met(max(idle) < IDLE_RSS_GOAL_MIB)} |",
             f"| /metrics p99 of {scrapes} scrapes, ms | {_spread(p99, '.1f')} | < {P99_GOAL_MS} | "
             f"{_met(max(p99) < P99_GOAL_MS)} |",
             f"| /metrics p50, ms | {_spread([r.p50_ms for r in rounds], '.1f')} | | |",
             f"| /metrics max, ms | {_spread([max(r.scrape_ms) for r in rounds], '.1f')} | | |",
             f"| first scrape (loads the runs), ms | {_spread([r.first_scrape_ms for r in rounds], '.1f')} | | |",
             f"| RSS after the scrapes, MiB | {_spread([r.scraped_rss_mib for r in rounds], '.1f')} | | |",
             f"| start until /readyz answers, s | {_spread([r.started_seconds for r in rounds], '.2f')} | | |", "",
             "Series by family (every round exposed the same):", "",
             "| family | series |", "|---|---:|",
             *(f"| `{name}` | {count:,} |" for name, count in sorted(series.items())), "",
             "Scrapes are sequential on one keep-alive connection, each timed from the request to the body's last "
             "byte; the first (cold) scrape is reported on its own and not in the percentiles. The agent ran with "
             f"`CZ_AGENT_EXPOSED_PERIODS={len(shape.periods)}` and a series budget above the count, so no series was "
             "folded; every round checked that each period's run and each period, company and service of the "
             "exclusive cost is exposed.", ""]
    return "\n".join(lines)


def _spread(values: list[float], form: str) -> str:
    return f"{statistics.median(values):{form}} ({min(values):{form}}-{max(values):{form}})"


def _met(met: bool) -> str:
    return "yes" if met else "**no**"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--periods", type=int, default=12)
    parser.add_argument("--companies", type=int, default=50)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--settle", type=float, default=15, help="seconds between the first answer and the RSS")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS-serve.md")
    parser.add_argument("--smoke", action="store_true", help="2 periods x 3 companies x 4 services, one short round, "
                        "a temporary report")
    args = parser.parse_args(argv)
    if args.smoke:
        args.periods, args.companies, args.services, args.repeats, args.scrapes, args.settle = 2, 3, 4, 1, 20, 1
        args.out = Path(tempfile.mkdtemp(prefix="cz-bench-report-")) / "RESULTS-serve.md"
    shape = shape_of(periods=args.periods, companies=args.companies, services=args.services)
    with tempfile.TemporaryDirectory(prefix="cz-bench-serve-") as temporary:
        workdir = Path(temporary)
        store_url = build_store(workdir, shape)
        rounds = []
        for repeat in range(args.repeats):
            result = measure_round(workdir, store_url=store_url, shape=shape, scrapes=args.scrapes, settle=args.settle)
            print(f"round {repeat + 1}: idle {result.idle_rss_mib:.1f} MiB, p50 {result.p50_ms:.1f} ms, "
                  f"p99 {result.p99_ms:.1f} ms, first {result.first_scrape_ms:.0f} ms, "
                  f"after {result.scraped_rss_mib:.1f} MiB", file=sys.stderr)
            rounds.append(result)
    partial = args.out.with_name(f".{args.out.name}.partial")
    partial.write_text(report(rounds, shape=shape, scrapes=args.scrapes, settle=args.settle))
    os.replace(partial, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
