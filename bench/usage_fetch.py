"""Benchmark of the usage fetch (agent.sources.prom.query_usage) against the single equivalent PromQL query.

For each usage basis (memory, cpu, gpu), a month of its series is generated as OpenMetrics, backfilled with
promtool into TSDB blocks (cached between runs) and served by a real Prometheus on 127.0.0.1: one memory
gauge per namespace, one CPU counter per namespace whose rate is constant within each scrape interval, or
one DCGM series per GPU labelled with the namespace of the pod holding it (and a GPU no pod holds). Our fetch
(one per-namespace query and one cluster aggregates query per day) and the floor (the same integral as one
instant query over the whole period, sent directly) are then timed alternately, their response bytes
counted, and their per-namespace unit-seconds checked against the generator's exact integral: equal for
memory and GPUs, within 0.1% for CPU (Prometheus extrapolates a counter's increase to the window's edges).
The results are written as Markdown, one table per basis.

    python bench/usage_fetch.py [--basis memory|cpu|gpu|all] [--namespaces 500] [--days 31]
                                [--scrape-seconds 30] [--repeats 5] [--out bench/RESULTS-usage.md] [--smoke]
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import operator
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib.metadata import version
from itertools import accumulate
from pathlib import Path
from typing import Any, TextIO
from unittest import mock

import requests

# Run as a script from a checkout (bench/ is not a package): the repository root holds `agent`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.errors import UsageQueryError  # noqa: E402
from agent.sources import prom  # noqa: E402

log = logging.getLogger("bench.usage_fetch")

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "RESULTS-usage.md"
PERIOD_START = datetime(2026, 8, 1, tzinfo=UTC)  # fully in the past: promtool refuses the last 3 hours
CLUSTER = "bench"
SELECTOR = f'cluster="{CLUSTER}"'
MIB = 1024 * 1024
BASE_BYTES = 256 * MIB
SWING_BYTES = MIB  # a sample is base + k * swing, k in 0..999: sums stay far below 2**53
CYCLE = 1000
CPU_EIGHTHS = 16  # a CPU rate is 1/8 to 2 cores in eighths: counter values are exact binary fractions
GPU_EXPORTER_LABELS = 'namespace="gpu-operator",pod="dcgm-exporter"'
# promtool turns this into its largest compatible range (486 h); the default 2 h blocks would make it
# re-read the whole file once per block, hundreds of times.
MAX_BLOCK_DURATION = "1000h"
# Prometheus's default; the floor's whole-month subquery may need more than this (see the stats probe).
DEFAULT_QUERY_MAX_SAMPLES = 50_000_000
SERVER_QUERY_MAX_SAMPLES = 1_000_000_000
SERVER_QUERY_TIMEOUT = "10m"
READY_TIMEOUT_SECONDS = 300
CACHED_NOTE = "taken from the cache this run (times are from when it was built)"
CONFIG = "global:\n  scrape_interval: 1m\nscrape_configs: []\n"  # scrapes nothing: serves the blocks


class BenchmarkError(Exception):
    """The benchmark could not run, or its two measurements disagree."""


@dataclass(frozen=True)
class Basis:
    """One usage basis: the series generated for it and how close both sides must come to their exact integral."""

    name: str  # the resource of query_usage and prom.resource_measure
    metric: str  # the samples' name
    family: str  # the OpenMetrics family: a counter's samples are named <family>_total
    kind: str
    write_series: Callable[[TextIO, BenchParams], None]
    expected: Callable[[BenchParams], dict[str, Decimal]]  # unit-seconds per namespace
    series: Callable[[BenchParams], int]  # how many series the served history holds
    tolerance: Decimal  # relative, per namespace; 0: exact


@dataclass(frozen=True)
class BenchParams:
    """What is generated and how often each side is measured."""

    namespaces: int
    days: int
    scrape_seconds: int
    repeats: int

    @property
    def start(self) -> datetime:
        return PERIOD_START

    @property
    def end(self) -> datetime:
        return PERIOD_START + timedelta(days=self.days)

    def sample_times(self) -> range:
        return range(int(self.start.timestamp()), int(self.end.timestamp()), self.scrape_seconds)


@dataclass(frozen=True)
class History:
    """The backfilled blocks of one parameter set and basis, and what it cost to make them."""

    blocks_dir: Path
    generation_seconds: float
    backfill_seconds: float
    openmetrics_bytes: int
    samples: int
    blocks: int
    blocks_bytes: int
    cached: bool = False


@dataclass
class Traffic:
    """What one side of the benchmark exchanged with Prometheus."""

    requests: int = 0
    request_bytes: int = 0  # URL + body of each request
    wire_bytes: int = 0  # response bodies as sent (gzip when the client accepts it, as requests does)
    body_bytes: int = 0  # response bodies decoded


@dataclass(frozen=True)
class Measurement:
    """One timed fetch: wall time, traffic, and its unit-seconds per namespace."""

    seconds: float
    traffic: Traffic
    amounts: dict[str, Decimal] = field(repr=False)  # unit-seconds (byte-, core- or device-seconds) per namespace


@dataclass(frozen=True)
class QueryCost:
    """Prometheus's own accounting of one query (stats=all)."""

    query: str
    peak_samples: int | None
    total_queryable_samples: int | None
    eval_seconds: float | None


@dataclass(frozen=True)
class QueryCosts:
    """The accounting of ours' two queries for the first day and of the floor query."""

    day_namespaces: QueryCost
    day_aggregates: QueryCost
    floor: QueryCost


# --- History: generation, backfill, cache ------------------------------------------------------------

def namespace_name(index: int) -> str:
    return f"ns-{index:03d}"


def step_cycle(params: BenchParams) -> list[int]:
    """Per sample time, the position in the value cycle before each namespace's phase is added."""
    return [(t // params.scrape_seconds * 7919) % CYCLE for t in params.sample_times()]


def sample_value(namespace_index: int, position: int) -> int:
    """The sample of a namespace at a cycle position: deterministic, varying, an integer."""
    phase = namespace_index * 104_729
    return BASE_BYTES + namespace_index * MIB // 8 + SWING_BYTES * ((position + phase) % CYCLE)


def cpu_eighths(namespace_index: int, position: int) -> int:
    """A namespace's CPU rate, in eighths of a core, during the scrape interval at a cycle position."""
    return 1 + (position + namespace_index * 7_753) % CPU_EIGHTHS


def gpus_held(namespace_index: int) -> int:
    return 2 if namespace_index % 4 == 0 else 1


def series_text(prefix: str, *, values_by_position: list[str], cycle: list[int], stamps: list[str]) -> str:
    """All samples of one gauge series as OpenMetrics lines, joined in C rather than per line."""
    lines_by_position = [f"{prefix} {value} " for value in values_by_position]
    return "".join(map(operator.add, map(lines_by_position.__getitem__, cycle), stamps))


def write_memory(out: TextIO, params: BenchParams) -> None:
    cycle, stamps = step_cycle(params), sample_stamps(params)
    for index in range(params.namespaces):
        prefix = f'{MEMORY.metric}{{{SELECTOR},namespace="{namespace_name(index)}",pod="p",container="c"}}'
        values = [str(sample_value(index, position)) for position in range(CYCLE)]
        out.write(series_text(prefix, values_by_position=values, cycle=cycle, stamps=stamps))


def write_cpu(out: TextIO, params: BenchParams) -> None:
    """Each namespace's counter at each scrape: the core-seconds it used since the period's start."""
    cycle, stamps = step_cycle(params), sample_stamps(params)
    for index in range(params.namespaces):
        prefix = f'{CPU.metric}{{{SELECTOR},namespace="{namespace_name(index)}",pod="p",container="c"}} '
        seconds_by_position = [cpu_eighths(index, position) * params.scrape_seconds for position in range(CYCLE)]
        used = accumulate(map(seconds_by_position.__getitem__, cycle), initial=0)  # in eighths of a core-second
        values = (f"{prefix}{eighths / 8} " for eighths in used)
        out.write("".join(map(operator.add, values, stamps)))


def write_gpu(out: TextIO, params: BenchParams) -> None:
    """One series per GPU held, labelled by the exporter's own namespace and pod and the holder's (exported_), and
    one GPU that no pod holds: the fetch must not count it."""
    cycle, stamps = step_cycle(params), sample_stamps(params)
    utilisation = [str(position % 101) for position in range(CYCLE)]
    for index in range(params.namespaces):
        for gpu in range(gpus_held(index)):
            prefix = (f'{GPU.metric}{{{SELECTOR},{GPU_EXPORTER_LABELS},gpu="{gpu}",UUID="GPU-{index}-{gpu}",'
                      f'exported_namespace="{namespace_name(index)}",exported_pod="p"}}')
            out.write(series_text(prefix, values_by_position=utilisation, cycle=cycle, stamps=stamps))
    free = f'{GPU.metric}{{{SELECTOR},{GPU_EXPORTER_LABELS},gpu="0",UUID="GPU-free"}}'
    out.write(series_text(free, values_by_position=utilisation, cycle=cycle, stamps=stamps))


def sample_stamps(params: BenchParams) -> list[str]:
    return [f"{t}\n" for t in params.sample_times()]


def write_openmetrics(out: TextIO, params: BenchParams, basis: Basis) -> None:
    """One `# TYPE` line, each series contiguous and in time order, `# EOF`, no blank lines."""
    out.write(f"# TYPE {basis.family} {basis.kind}\n")
    basis.write_series(out, params)
    out.write("# EOF\n")


def integral_per_namespace(params: BenchParams, value: Callable[[int, int], int]) -> dict[str, Decimal]:
    """The exact integral per namespace of `value(namespace index, cycle position)`, held for each scrape interval."""
    positions = Counter(step_cycle(params))
    return {
        namespace_name(index): Decimal(params.scrape_seconds * sum(
            count * value(index, position) for position, count in positions.items()))
        for index in range(params.namespaces)
    }


def expected_byte_seconds(params: BenchParams) -> dict[str, Decimal]:
    return integral_per_namespace(params, sample_value)


def expected_core_seconds(params: BenchParams) -> dict[str, Decimal]:
    """Every interval's rate, the last one after the final scrape included: what the namespace truly used."""
    return {namespace: eighths / 8 for namespace, eighths in integral_per_namespace(params, cpu_eighths).items()}


def expected_device_seconds(params: BenchParams) -> dict[str, Decimal]:
    return integral_per_namespace(params, lambda index, _position: gpus_held(index))


MEMORY = Basis(name="memory", metric="container_memory_working_set_bytes",
               family="container_memory_working_set_bytes", kind="gauge", write_series=write_memory,
               expected=expected_byte_seconds, series=operator.attrgetter("namespaces"), tolerance=Decimal(0))
CPU = Basis(name="cpu", metric="container_cpu_usage_seconds_total", family="container_cpu_usage_seconds",
            kind="counter", write_series=write_cpu, expected=expected_core_seconds,
            series=operator.attrgetter("namespaces"), tolerance=Decimal("0.001"))
GPU = Basis(name="gpu", metric=prom.GPU_METRIC, family=prom.GPU_METRIC, kind="gauge", write_series=write_gpu,
            expected=expected_device_seconds,
            series=lambda params: 1 + sum(gpus_held(index) for index in range(params.namespaces)),
            tolerance=Decimal(0))
BASES = {basis.name: basis for basis in (MEMORY, CPU, GPU)}


def history_key(params: BenchParams, basis: Basis) -> str:
    """Changes whenever the generated samples would: the parameters, the basis and the generator's source."""
    generator = (namespace_name, step_cycle, sample_value, cpu_eighths, gpus_held, series_text, sample_stamps,
                 write_openmetrics, basis.write_series)
    source = "".join(inspect.getsource(function) for function in generator)
    material = json.dumps([basis.name, params.namespaces, params.days, params.scrape_seconds,
                           PERIOD_START.isoformat(), BASE_BYTES, SWING_BYTES, MAX_BLOCK_DURATION, source])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("CZ_AGENT_CACHE", Path.home() / ".cache" / "cz-agent")) / "bench-blocks"


def cached_history(params: BenchParams, basis: Basis, *, promtool: str) -> History:
    """The blocks for `params` and `basis`, generated and backfilled only when the cache does not have them."""
    final = cache_root() / history_key(params, basis)
    manifest = final / "history.json"
    if manifest.exists():
        history = History(**{**json.loads(manifest.read_text()), "blocks_dir": final, "cached": True})
        log.info("Using cached blocks %s", final)
        return history
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".building-") as building:
        history = build_history(params, basis, promtool=promtool, workdir=Path(building))
        blocks = history.blocks_dir
        (blocks / "history.json").write_text(json.dumps({**asdict(history), "blocks_dir": None}, indent=1))
        # Atomic publication: a run interrupted mid-backfill leaves no half cache entry behind.
        os.replace(blocks, final)
    return History(**{**asdict(history), "blocks_dir": final})


def build_history(params: BenchParams, basis: Basis, *, promtool: str, workdir: Path) -> History:
    openmetrics = workdir / "history.om"
    blocks_dir = workdir / "blocks"
    samples = basis.series(params) * len(params.sample_times())
    log.info("Writing %d %s samples (%d namespaces x %d days every %d s) to %s", samples, basis.name,
             params.namespaces, params.days, params.scrape_seconds, openmetrics)
    began = time.perf_counter()
    with openmetrics.open("w", buffering=16 * MIB) as out:
        write_openmetrics(out, params, basis)
    generation_seconds = time.perf_counter() - began
    openmetrics_bytes = openmetrics.stat().st_size
    log.info("Wrote %.2f GB in %.1f s; backfilling with promtool", openmetrics_bytes / 1e9, generation_seconds)
    began = time.perf_counter()
    backfill(openmetrics, blocks_dir, promtool=promtool)
    backfill_seconds = time.perf_counter() - began
    openmetrics.unlink()
    blocks = [path for path in blocks_dir.iterdir() if path.is_dir()]
    log.info("Backfilled %d blocks in %.1f s", len(blocks), backfill_seconds)
    return History(blocks_dir=blocks_dir, generation_seconds=generation_seconds, backfill_seconds=backfill_seconds,
                   openmetrics_bytes=openmetrics_bytes, samples=samples, blocks=len(blocks),
                   blocks_bytes=_tree_bytes(blocks_dir))


def backfill(openmetrics: Path, blocks_dir: Path, *, promtool: str) -> None:
    command = [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
               f"--max-block-duration={MAX_BLOCK_DURATION}", str(openmetrics), str(blocks_dir)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchmarkError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def _tree_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


# --- Prometheus ---------------------------------------------------------------------------------------

@contextmanager
def serving_prometheus(history: History, *, params: BenchParams, basis: Basis,
                       prometheus: str) -> Iterator[tuple[str, float]]:
    """A Prometheus on a free port serving a copy of the blocks; yields its URL and start-up seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-prometheus-") as workdir_name:
        workdir = Path(workdir_name)
        data_dir = workdir / "data"
        # A copy: Prometheus owns its data dir (lock, WAL, possible compaction) and the cache must stay intact.
        shutil.copytree(history.blocks_dir, data_dir, ignore=shutil.ignore_patterns("history.json"))
        config = workdir / "prometheus.yml"
        config.write_text(CONFIG)
        port = _free_port()
        command = [prometheus, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
                   "--storage.tsdb.retention.time=10y", f"--web.listen-address=127.0.0.1:{port}",
                   f"--query.max-samples={SERVER_QUERY_MAX_SAMPLES}", f"--query.timeout={SERVER_QUERY_TIMEOUT}"]
        log_path = workdir / "prometheus.log"
        url = f"http://127.0.0.1:{port}"
        began = time.perf_counter()
        with log_path.open("wb") as server_log:
            process = subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(url, process=process, params=params, basis=basis, log_path=log_path)
            yield url, time.perf_counter() - began
        finally:
            _stop(process)


def wait_until_serving(url: str, *, process: subprocess.Popen, params: BenchParams, basis: Basis,
                       log_path: Path) -> None:
    """Until the server is ready and the last day of the backfilled period answers with every series."""
    probe_at = params.end.timestamp() - 1
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        if _series_at(url, metric=basis.metric, at=probe_at) == basis.series(params):
            return
        time.sleep(0.2)
    raise BenchmarkError(f"Prometheus at {url} did not serve the backfilled data within {READY_TIMEOUT_SECONDS}s; "
                         f"log tail:\n{_tail(log_path)}")


def _series_at(url: str, *, metric: str, at: float) -> int:
    try:
        response = requests.get(f"{url}/api/v1/query", params={"query": f"count({metric})", "time": at}, timeout=5)
        result = response.json()["data"]["result"]
        return int(result[0]["value"][1]) if result else 0
    except (requests.RequestException, ValueError, KeyError):
        return 0


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


# --- Measurements ------------------------------------------------------------------------------------

class CountingSession(requests.Session):
    """A requests session that reads each response whole and counts what crossed the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.traffic = Traffic()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        # Streamed, to read the body as sent: urllib3 does not count the bytes of chunked responses
        # (Prometheus chunks the large ones), so raw.tell() cannot be used.
        response = super().send(request, **{**kwargs, "stream": True})
        wire = b"".join(response.raw.stream(decode_content=False))
        body = _decoded(wire, encoding=response.headers.get("Content-Encoding", ""))
        response._content = body  # what requests would have read; .json() and .text use it
        response._content_consumed = True
        body_sent = request.body or b""
        self.traffic.requests += 1
        self.traffic.request_bytes += len(request.url or "") + len(body_sent)
        self.traffic.wire_bytes += len(wire)
        self.traffic.body_bytes += len(body)
        return response


def _decoded(wire: bytes, *, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return wire
    if encoding == "gzip":
        return zlib.decompress(wire, wbits=31)
    raise BenchmarkError(f"unexpected Content-Encoding {encoding!r} from Prometheus")


def measure_ours(url: str, params: BenchParams, basis: Basis) -> Measurement:
    """query_usage of the basis over the period, on a counting session.

    prom.py builds its requests session inside query_usage and offers no hook, so for the duration
    of the call `requests.Session` is swapped for a counting one: no proxy hop in the timed path.
    """
    session = CountingSession()
    target = prom.PrometheusTarget(url=url, selector=SELECTOR, timeout_seconds=600, retries=0)
    with mock.patch.object(prom.requests, "Session", lambda: session):
        began = time.perf_counter()
        usage = prom.query_usage(cluster=CLUSTER, target=target, start=params.start, end=params.end,
                                 basis="usage", resources=(basis.name,), step_seconds=params.scrape_seconds,
                                 now=params.end)
        seconds = time.perf_counter() - began
    if usage.coverage != 1.0:
        raise BenchmarkError(f"query_usage reported coverage {usage.coverage}, expected 1.0 on a gapless history")
    amounts = {row.namespace: row.used(basis.name) for row in usage.usage}
    return Measurement(seconds=seconds, traffic=session.traffic, amounts=amounts)


def basis_measure(params: BenchParams, basis: Basis) -> prom.Measure:
    """How prom.py asks for the basis: its per-namespace query is the floor's over the whole period."""
    return prom.resource_measure(basis.name, basis="usage", selector=SELECTOR, step_seconds=params.scrape_seconds)


def floor_query(params: BenchParams, basis: Basis) -> str:
    """The whole period's integral as one PromQL expression, as prom.py writes it for a day."""
    return basis_measure(params, basis).per_namespace(_period_ms(params))


def floor_time(params: BenchParams) -> str:
    """One millisecond before the period's end, as prom.py sends it."""
    return _prometheus_time(_start_ms(params) + _period_ms(params) - 1)


def measure_floor(url: str, params: BenchParams, basis: Basis) -> Measurement:
    """The single equivalent query sent directly with requests, its answer parsed as prom.py does."""
    query, at = floor_query(params, basis), floor_time(params)
    scale = basis_measure(params, basis).scale
    with CountingSession() as session:
        began = time.perf_counter()
        response = session.get(f"{url}/api/v1/query", params={"query": query, "time": at}, timeout=600)
        payload = response.json()
        if payload.get("status") != "success":
            raise BenchmarkError(f"the floor query failed ({response.status_code}): {payload.get('error')}: {query}")
        amounts = {sample["metric"]["namespace"]: Decimal(sample["value"][1]) * scale
                   for sample in payload["data"]["result"]}
        seconds = time.perf_counter() - began
    return Measurement(seconds=seconds, traffic=session.traffic, amounts=amounts)


def check_agree(ours: Measurement, floor: Measurement, *, expected: dict[str, Decimal], basis: Basis) -> None:
    """Both sides must give the generator's integral for every namespace, within the basis's tolerance."""
    for name, measured in (("query_usage", ours), ("the floor query", floor)):
        wrong = sorted(n for n in expected.keys() | measured.amounts.keys()
                       if not _close(measured.amounts.get(n), expected.get(n), tolerance=basis.tolerance))
        if wrong:
            raise BenchmarkError(f"{name} disagrees with the generated {basis.name} history on {len(wrong)} "
                                 f"namespaces, e.g. {wrong[:3]}: got {[measured.amounts.get(n) for n in wrong[:3]]}, "
                                 f"expected {[expected.get(n) for n in wrong[:3]]}")


def _close(measured: Decimal | None, expected: Decimal | None, *, tolerance: Decimal) -> bool:
    if measured is None or expected is None:
        return measured == expected
    return abs(measured - expected) <= tolerance * abs(expected)


@dataclass(frozen=True)
class Runs:
    """The timed repeats of both sides, and the machine's load while they ran."""

    ours: list[Measurement]
    floors: list[Measurement]
    load_averages: list[float]  # 1-minute load average after each repeat: other work skews wall times


def measure_alternately(url: str, params: BenchParams, basis: Basis) -> Runs:
    """One unrecorded warm-up of each side, then `repeats` of each, alternating which goes first."""
    expected = basis.expected(params)
    check_agree(measure_ours(url, params, basis), measure_floor(url, params, basis), expected=expected, basis=basis)
    runs = Runs(ours=[], floors=[], load_averages=[])
    ours, floors = runs.ours, runs.floors
    for repeat in range(params.repeats):
        order: list[tuple[Callable[[str, BenchParams, Basis], Measurement], list[Measurement]]] = [
            (measure_ours, ours), (measure_floor, floors)]
        for measure, results in order if repeat % 2 == 0 else reversed(order):
            results.append(measure(url, params, basis))
        check_agree(ours[-1], floors[-1], expected=expected, basis=basis)
        runs.load_averages.append(os.getloadavg()[0])
        log.info("%s repeat %d/%d: ours %.3f s, floor %.3f s, load average %.2f", basis.name, repeat + 1,
                 params.repeats, ours[-1].seconds, floors[-1].seconds, runs.load_averages[-1])
    return runs


def query_cost(url: str, query: str, *, at: str) -> QueryCost:
    """Prometheus's sample accounting for a query (peak samples held, samples read), unmeasured."""
    response = requests.get(f"{url}/api/v1/query", params={"query": query, "time": at, "stats": "all"}, timeout=600)
    stats = response.json().get("data", {}).get("stats", {})
    samples = stats.get("samples", {})
    return QueryCost(query=query, peak_samples=samples.get("peakSamples"),
                     total_queryable_samples=samples.get("totalQueryableSamples"),
                     eval_seconds=stats.get("timings", {}).get("evalTotalTime"))


def query_costs(url: str, params: BenchParams, basis: Basis) -> QueryCosts:
    """The cost of ours' two queries for the first day and of the floor query."""
    measure = basis_measure(params, basis)
    first_day_ms = min(prom.DAY_MS, _period_ms(params))
    first_day_at = _prometheus_time(_start_ms(params) + first_day_ms - 1)
    return QueryCosts(day_namespaces=query_cost(url, measure.per_namespace(first_day_ms), at=first_day_at),
                      day_aggregates=query_cost(url, measure.aggregates(first_day_ms), at=first_day_at),
                      floor=query_cost(url, floor_query(params, basis), at=floor_time(params)))


def _start_ms(params: BenchParams) -> int:
    return int(params.start.timestamp()) * 1000


def _period_ms(params: BenchParams) -> int:
    return int((params.end - params.start).total_seconds()) * 1000


def _prometheus_time(at_ms: int) -> str:
    return f"{at_ms // 1000}.{at_ms % 1000:03d}"


# --- Report ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spread:
    low: float
    median: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(min(values), statistics.median(values), max(values))


@dataclass(frozen=True)
class Side:
    """Every repeat of one side, summarised."""

    name: str
    seconds: Spread
    requests: int
    request_bytes: int
    wire_bytes: int
    body_bytes: int

    @classmethod
    def of(cls, name: str, measurements: list[Measurement]) -> Side:
        # Same queries on the same data each time; only gzip's output may differ by a byte or two.
        def typical(count: Callable[[Traffic], int]) -> int:
            return statistics.median_low(count(m.traffic) for m in measurements)

        return cls(name=name, seconds=Spread.of([m.seconds for m in measurements]),
                   requests=typical(operator.attrgetter("requests")),
                   request_bytes=typical(operator.attrgetter("request_bytes")),
                   wire_bytes=typical(operator.attrgetter("wire_bytes")),
                   body_bytes=typical(operator.attrgetter("body_bytes")))


@dataclass(frozen=True)
class BasisResult:
    """One basis's run: its history, both sides summarised, and Prometheus's accounting of their queries."""

    basis: Basis
    history: History
    startup_seconds: float
    ours: Side
    floor: Side
    costs: QueryCosts
    load_averages: list[float]

    @property
    def time_ratio(self) -> str:
        return _ratio(self.ours.seconds.median, self.floor.seconds.median)

    @property
    def low_time_ratio(self) -> str:
        return _ratio(self.ours.seconds.low, self.floor.seconds.low)


def machine(results: list[BasisResult]) -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    loads = "; ".join(f"{result.basis.name} " + ", ".join(f"{load:.2f}" for load in result.load_averages)
                      for result in results)
    return {"CPU": model, "cores": str(os.cpu_count()), "RAM": f"{mem_kib / 1024 / 1024:.1f} GiB",
            "OS": platform.platform(),
            "1-minute load average after each repeat": f"{loads} (other work on the machine skews the wall times)"}


def versions(prometheus: str) -> dict[str, str]:
    prometheus_version = subprocess.run([prometheus, "--version"], capture_output=True, text=True)
    first_line = (prometheus_version.stdout or prometheus_version.stderr).splitlines()[0]
    return {"Python": platform.python_version(), "Prometheus": first_line.removeprefix("prometheus, "),
            "requests": version("requests"), "urllib3": version("urllib3")}


def _seconds_cell(spread: Spread) -> str:
    return f"{spread.low:.3f} / {spread.median:.3f} / {spread.high:.3f}"


def _ratio(ours: float, floor: float) -> str:
    return f"{ours / floor:.2f}" if floor else "n/a"


def _samples(count: int | None) -> str:
    return f"{count:,}" if count is not None else "n/a (not reported by this Prometheus)"


def render_report(*, params: BenchParams, results: list[BasisResult], prometheus: str, finished: datetime) -> str:
    sections = [
        ["# Usage fetch benchmark: `query_usage` against the single equivalent PromQL query",
         f"Generated by `python bench/usage_fetch.py` on {finished:%Y-%m-%d %H:%M} UTC.", summary(results)],
        ["## Machine", _bullets(machine(results))],
        ["## Versions", _bullets(versions(prometheus))],
        ["## Parameters", parameters_section(params, results)],
        *([f"## {result.basis.name}", history_section(result.history, result.startup_seconds),
           results_section(result.ours, result.floor), costs_section(result.costs),
           reading(ours=result.ours, floor=result.floor, costs=result.costs)] for result in results),
    ]
    return "\n\n".join(block for section in sections for block in section) + "\n"


def summary(results: list[BasisResult]) -> str:
    ratios = ", ".join(f"{result.basis.name} **{result.time_ratio}** (of the minimums {result.low_time_ratio})"
                       for result in results)
    return f"Wall time ours / floor, of the medians: {ratios}."


def _bullets(facts: dict[str, str]) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in facts.items())


def parameters_section(params: BenchParams, results: list[BasisResult]) -> str:
    floors = [f"- {result.basis.name} floor, sent directly at `{floor_time(params)}`: "
              f"`{floor_query(params, result.basis)}`" for result in results]
    return "\n".join([
        f"- {params.namespaces} namespaces sampled every {params.scrape_seconds} s over "
        f"[{params.start:%Y-%m-%d}, {params.end:%Y-%m-%d}), {params.days} days; each basis has a history and a "
        "Prometheus of its own",
        f"- memory: one `{MEMORY.metric}` gauge per namespace",
        f"- cpu: one `{CPU.metric}` counter per namespace, its rate constant within each scrape interval "
        f"(1/8 to {CPU_EIGHTHS // 8} cores)",
        f"- gpu: one `{GPU.metric}` series per GPU held ({gpus_held(0)} for every fourth namespace, else "
        f"{gpus_held(1)}), labelled with the holder's `exported_namespace` and `exported_pod` and the exporter's "
        "own `namespace` and `pod`, and one GPU no pod holds",
        f"- ours: `query_usage(basis=\"usage\", resources=(<basis>,), step_seconds={params.scrape_seconds})`",
        *floors,
        f"- timed repeats of each side: {params.repeats}, alternating which goes first, after one unrecorded "
        "warm-up of each; every run's unit-seconds are checked per namespace on both sides against the "
        "generator's integral, equal for memory and gpu and within "
        f"{CPU.tolerance:%} for cpu (Prometheus extrapolates a counter's increase to the window's edges), "
        "and our coverage to 1.0",
        f"- Prometheus flags: `--query.max-samples={SERVER_QUERY_MAX_SAMPLES}` (default "
        f"{DEFAULT_QUERY_MAX_SAMPLES:,}), `--query.timeout={SERVER_QUERY_TIMEOUT}`",
    ])


def history_section(history: History, startup_seconds: float) -> str:
    return "\n".join([
        f"- {history.samples:,} samples; OpenMetrics written: {history.openmetrics_bytes / 1e9:.2f} GB in "
        f"{history.generation_seconds:.1f} s",
        f"- `promtool tsdb create-blocks-from openmetrics --max-block-duration={MAX_BLOCK_DURATION}`: "
        f"{history.backfill_seconds:.1f} s, blocks: {history.blocks}, {history.blocks_bytes / 1e6:.1f} MB",
        f"- {CACHED_NOTE if history.cached else 'built this run, now cached'}",
        f"- Prometheus start until the data answered: {startup_seconds:.1f} s",
    ])


def results_section(ours: Side, floor: Side) -> str:
    rows = [f"| {side.name} | {_seconds_cell(side.seconds)} | {side.requests} | {side.wire_bytes:,} "
            f"| {side.body_bytes:,} | {side.request_bytes:,} |" for side in (ours, floor)]
    ratios = (f"| **ratio ours / floor** | **{_ratio(ours.seconds.median, floor.seconds.median)}** "
              f"(of the medians; of the minimums {_ratio(ours.seconds.low, floor.seconds.low)}) "
              f"| {_ratio(ours.requests, floor.requests)} | **{_ratio(ours.wire_bytes, floor.wire_bytes)}** "
              f"| {_ratio(ours.body_bytes, floor.body_bytes)} "
              f"| {_ratio(ours.request_bytes, floor.request_bytes)} |")
    return "\n".join([
        "Bytes are response bodies (median over the repeats): on the wire (gzip, as requests asks for it) "
        "and decoded; request bytes are URL + body.",
        "",
        "| | wall time s (min / median / max) | HTTP requests | response bytes, wire | response bytes, decoded "
        "| request bytes |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        ratios,
    ])


def costs_section(costs: QueryCosts) -> str:
    rows = [f"| {name} | {_samples(cost.peak_samples)} | {_samples(cost.total_queryable_samples)} "
            f"| {_eval_seconds(cost.eval_seconds)} |"
            for name, cost in (("one day of ours, per namespace", costs.day_namespaces),
                               ("one day of ours, cluster aggregates", costs.day_aggregates),
                               ("floor (whole period)", costs.floor))]
    return "\n".join([
        "Prometheus's own accounting (`stats=all`, separate unmeasured requests):",
        "",
        "| query | peak samples in memory | samples read | evaluation s |",
        "| --- | --- | --- | --- |",
        *rows,
    ])


def _eval_seconds(seconds: float | None) -> str:
    return f"{seconds:.3f}" if seconds is not None else "n/a"


def reading(*, ours: Side, floor: Side, costs: QueryCosts) -> str:
    time_ratio = _ratio(ours.seconds.median, floor.seconds.median)
    bytes_ratio = _ratio(ours.wire_bytes, floor.wire_bytes)
    return (
        f"Our fetch takes {time_ratio} times the floor's wall time and moves {bytes_ratio} times its bytes. "
        "The floor is the least any client can do: one instant query that integrates the whole period "
        "server-side and returns one number per namespace. Ours computes the same integral cut into one "
        f"per-namespace query per day plus one cluster aggregates query per day (the steps with data, for the "
        f"coverage, and the check of the namespaces: the cluster total for a gauge, the namespaces alive at the "
        f"day's end for a counter), {ours.requests} requests "
        f"instead of {floor.requests}, {prom.WINDOW_CONCURRENCY} days at a time (Prometheus evaluates a query on "
        "one core): the aggregates queries and the per-request round trips and JSON parsing cost time, asking days "
        "side by side wins some back, and the extra bytes are one result per namespace per day instead of per "
        "period. In "
        "return no single query touches more than a day of samples, so its cost on the server is bounded "
        f"whatever the period.{_limit_note(costs)}"
    )


def _limit_note(costs: QueryCosts) -> str:
    peaks = [costs.day_namespaces.peak_samples, costs.day_aggregates.peak_samples]
    if costs.floor.peak_samples is None or None in peaks:
        return ""
    note = (f" Per query, ours holds at most {max(peaks):,} samples in memory, the floor "
            f"{costs.floor.peak_samples:,}; Prometheus's default `--query.max-samples` is "
            f"{DEFAULT_QUERY_MAX_SAMPLES:,}")
    if costs.floor.peak_samples > DEFAULT_QUERY_MAX_SAMPLES:
        note += (", so a Prometheus with default settings rejects the floor (it ran here only because the "
                 "limit was raised)")
    return note + "."


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as out:
        out.write(text)
    os.chmod(out.name, 0o644)  # NamedTemporaryFile creates it 0600: a report is for everyone to read
    os.replace(out.name, path)


# --- Command line ------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--basis", choices=[*BASES, "all"], default="all")
    parser.add_argument("--namespaces", type=int, default=500)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--scrape-seconds", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"Markdown report (default {DEFAULT_OUT.relative_to(BENCH_DIR.parent)}; "
                             "with --smoke, a temporary file)")
    parser.add_argument("--smoke", action="store_true",
                        help="5 namespaces x 2 days, 1 repeat, report to a temporary file: a quick check it runs")
    args = parser.parse_args(argv)
    if min(args.namespaces, args.days, args.scrape_seconds, args.repeats) < 1:
        parser.error("--namespaces, --days, --scrape-seconds and --repeats must be positive")
    return args


def settings_from(args: argparse.Namespace) -> tuple[BenchParams, list[Basis], Path]:
    bases = list(BASES.values()) if args.basis == "all" else [BASES[args.basis]]
    if args.smoke:
        params = BenchParams(namespaces=5, days=2, scrape_seconds=args.scrape_seconds, repeats=1)
        out = args.out or Path(tempfile.mkdtemp(prefix="bench-smoke-")) / "RESULTS-usage.md"
        return params, bases, out
    params = BenchParams(namespaces=args.namespaces, days=args.days, scrape_seconds=args.scrape_seconds,
                         repeats=args.repeats)
    return params, bases, args.out or DEFAULT_OUT


def binaries() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not (prometheus and promtool):
        raise BenchmarkError("prometheus and promtool must be on PATH (scripts/install-prometheus.sh installs them)")
    return prometheus, promtool


def run(params: BenchParams, bases: list[Basis], out: Path) -> None:
    prometheus, promtool = binaries()
    results = [run_basis(params, basis, prometheus=prometheus, promtool=promtool) for basis in bases]
    write_atomically(out, render_report(params=params, results=results, prometheus=prometheus,
                                        finished=datetime.now(UTC)))
    log.info("%s; report %s", summary(results), out)


def run_basis(params: BenchParams, basis: Basis, *, prometheus: str, promtool: str) -> BasisResult:
    """The basis's history served by a Prometheus of its own, both sides measured on it."""
    history = cached_history(params, basis, promtool=promtool)
    with serving_prometheus(history, params=params, basis=basis, prometheus=prometheus) as (url, startup_seconds):
        log.info("Prometheus %s serving the %s history after %.1f s", url, basis.name, startup_seconds)
        runs = measure_alternately(url, params, basis)
        costs = query_costs(url, params, basis)
    result = BasisResult(basis=basis, history=history, startup_seconds=startup_seconds,
                         ours=Side.of("ours: query_usage", runs.ours), floor=Side.of("floor: one query", runs.floors),
                         costs=costs, load_averages=runs.load_averages)
    log.info("%s: time ratio %s, bytes ratio %s, %d requests against %d", basis.name, result.time_ratio,
             _ratio(result.ours.wire_bytes, result.floor.wire_bytes), result.ours.requests, result.floor.requests)
    return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    params, bases, out = settings_from(parse_args(argv))
    try:
        run(params, bases, out)
    except (BenchmarkError, UsageQueryError) as e:
        log.error("%s", e)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
