"""A month of cAdvisor, kube-state-metrics and DCGM exporter history for two clusters, with its exact integrals.

The history is written as OpenMetrics for `promtool tsdb create-blocks-from openmetrics`; the expected memory
byte-seconds, GPU device-seconds and node capacity are computed here in plain Python under the same
discretisation the source uses: one sample per scrape step, each held constant for one step. CPU is a counter
whose rate is constant within each step: its true integral counts every step a container lived, scraped or not.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TextIO

MIB = 1024 * 1024
GIB = 1024 * MIB
STEP_SECONDS = 60
MONTH_START = datetime(2026, 9, 1, tzinfo=UTC)
MONTH_END = datetime(2026, 10, 1, tzinfo=UTC)
# Samples a few hours either side of the month check that the month's edges are respected.
HISTORY_START = MONTH_START - timedelta(hours=6)
HISTORY_END = MONTH_END + timedelta(hours=6)
BASES = ("usage", "request", "max")
USAGE_METRIC = "container_memory_working_set_bytes"
REQUEST_METRIC = "kube_pod_container_resource_requests"
CPU_FAMILY = "container_cpu_usage_seconds"  # a counter: its samples are named ..._total
GPU_METRIC = "DCGM_FI_DEV_GPU_UTIL"
CAPACITY_METRIC = "kube_node_status_allocatable"
DAY_SECONDS = 86_400


@dataclass(frozen=True)
class Container:
    """One container's memory: usage steps through [base, base + 999 * swing], the request is fixed."""

    cluster: str
    namespace: str
    pod: str
    name: str
    base_bytes: int
    swing_bytes: int
    request_bytes: int | None  # None: the container sets no memory request
    born: datetime = HISTORY_START
    died: datetime = HISTORY_END
    cpu_base_millicores: int = 200
    cpu_swing_millicores: int = 1
    gpus: int = 0

    def cpu_cores_at(self, timestamp: int) -> Decimal:
        """The container's CPU rate during the step starting at `timestamp`, in cores."""
        phase = zlib.crc32(f"cpu/{self.pod}/{self.name}".encode())
        scramble = (timestamp // STEP_SECONDS * 6007 + phase) % 1000
        return Decimal(self.cpu_base_millicores + self.cpu_swing_millicores * scramble) / 1000

    def usage_at(self, timestamp: int) -> int:
        # A deterministic scramble of the step index, so usage crosses the request from step to step.
        phase = zlib.crc32(f"{self.pod}/{self.name}".encode())
        return self.base_bytes + self.swing_bytes * ((timestamp // STEP_SECONDS * 7919 + phase) % 1000)

    def value_at(self, timestamp: int, basis: str) -> int | None:
        usage = self.usage_at(timestamp)
        if basis == "usage":
            return usage
        if basis == "request":
            return self.request_bytes
        return usage if self.request_bytes is None else max(usage, self.request_bytes)


@dataclass(frozen=True)
class Decoy:
    """A series the source must ignore: a pod or node cgroup total, or a CPU request."""

    metric: str
    labels: tuple[tuple[str, str], ...]
    value: str


@dataclass(frozen=True)
class Node:
    """A node's allocatable memory (bytes), CPU (cores) and GPUs, from `joined` on."""

    cluster: str
    name: str
    memory_bytes: int
    cpu_cores: int
    gpus: int
    joined: datetime = HISTORY_START
    # A time when its allocatable memory is `shrunk_bytes` instead (kubelet reservations changed): usage may then
    # exceed the capacity, and idle capacity must not go below zero.
    shrunk: tuple[datetime, datetime] | None = None
    shrunk_bytes: int = 0

    def value_at(self, timestamp: int, resource: str) -> int:
        if resource == "memory":
            inside = self.shrunk and _seconds(self.shrunk[0]) <= timestamp < _seconds(self.shrunk[1])
            return self.shrunk_bytes if inside else self.memory_bytes
        return self.cpu_cores if resource == "cpu" else self.gpus


@dataclass(frozen=True)
class Gap:
    """A time when nothing of one cluster was scraped (Prometheus down for an hour)."""

    cluster: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class History:
    containers: tuple[Container, ...]
    decoys: tuple[Decoy, ...]
    gaps: tuple[Gap, ...]
    nodes: tuple[Node, ...] = ()
    # Per cluster: the prefix of the pod labels on the GPU series (scraped without or with honor_labels).
    gpu_label_prefixes: tuple[tuple[str, str], ...] = ()
    start: datetime = HISTORY_START
    end: datetime = HISTORY_END

    def fingerprint(self) -> str:
        """Changes whenever the generated samples would (the class source is part of the key)."""
        source = Path(__file__).read_bytes()
        return hashlib.sha256(source + repr(self).encode()).hexdigest()[:16]

    def sample_times(self, *, cluster: str, born: datetime, died: datetime) -> Iterator[int]:
        gaps = [(_seconds(g.start), _seconds(g.end)) for g in self.gaps if g.cluster == cluster]
        first = max(_seconds(born), _seconds(self.start))
        for timestamp in range(first, min(_seconds(died), _seconds(self.end)), STEP_SECONDS):
            if not any(gap_start <= timestamp < gap_end for gap_start, gap_end in gaps):
                yield timestamp

    def expected(
        self, *, cluster: str, basis: str, start: datetime = MONTH_START, end: datetime = MONTH_END
    ) -> dict[str, Decimal]:
        """Byte-seconds per namespace over [start, end); namespaces without samples are absent."""
        totals: dict[str, int] = defaultdict(int)
        for container in self.containers:
            if container.cluster != cluster or (basis == "request" and container.request_bytes is None):
                continue
            for timestamp in self._times_within(container, start=start, end=end):
                totals[container.namespace] += container.value_at(timestamp, basis) * STEP_SECONDS
        return {namespace: Decimal(total) for namespace, total in sorted(totals.items())}

    def expected_coverage(
        self, *, cluster: str, basis: str, start: datetime = MONTH_START, end: datetime = MONTH_END
    ) -> float:
        """Fraction of the steps in [start, end) at which any counted container of the cluster has a sample."""
        covered: set[int] = set()
        for container in self.containers:
            if container.cluster == cluster and not (basis == "request" and container.request_bytes is None):
                covered.update(self._times_within(container, start=start, end=end))
        return len(covered) / len(range(_seconds(start), _seconds(end), STEP_SECONDS))

    def expected_cpu(self, *, cluster: str, start: datetime = MONTH_START,
                     end: datetime = MONTH_END) -> dict[str, Decimal]:
        """Core-seconds per namespace over [start, end): every step the container lived, scraped or not."""
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for container in self.containers:
            if container.cluster != cluster:
                continue
            first = max(_seconds(container.born), _seconds(start))
            for timestamp in range(first, min(_seconds(container.died), _seconds(end)), STEP_SECONDS):
                totals[container.namespace] += container.cpu_cores_at(timestamp) * STEP_SECONDS
        return dict(sorted(totals.items()))

    def expected_gpu(self, *, cluster: str, start: datetime = MONTH_START,
                     end: datetime = MONTH_END) -> dict[str, Decimal]:
        """Device-seconds per namespace over [start, end): each scraped step a pod held a GPU."""
        totals: dict[str, int] = defaultdict(int)
        for container in self.containers:
            if container.cluster == cluster and container.gpus:
                for _ in self._times_within(container, start=start, end=end):
                    totals[container.namespace] += container.gpus * STEP_SECONDS
        return {namespace: Decimal(total) for namespace, total in sorted(totals.items())}

    def expected_capacity(self, *, cluster: str, resource: str, start: datetime, end: datetime) -> Decimal:
        """The cluster's allocatable capacity of `resource` over [start, end), in unit-seconds (scraped steps)."""
        total = 0
        for node in self.nodes:
            if node.cluster == cluster:
                for timestamp in self.sample_times(cluster=cluster, born=node.joined, died=self.end):
                    if _seconds(start) <= timestamp < _seconds(end):
                        total += node.value_at(timestamp, resource) * STEP_SECONDS
        return Decimal(total)

    def expected_idle(self, *, cluster: str, resource: str, used: dict[str, Decimal] | None = None,
                      start: datetime = MONTH_START, end: datetime = MONTH_END) -> Decimal:
        """The capacity the namespaces left idle, day by day from `start` and never below zero; `used` gives a day's
        usage (memory by the usage basis by default)."""
        idle = Decimal(0)
        for day_start in range(_seconds(start), _seconds(end), DAY_SECONDS):
            day = (_moment(day_start), _moment(min(day_start + DAY_SECONDS, _seconds(end))))
            capacity = self.expected_capacity(cluster=cluster, resource=resource, start=day[0], end=day[1])
            usage = (self.expected(cluster=cluster, basis="usage", start=day[0], end=day[1]) if resource == "memory"
                     else self.expected_cpu(cluster=cluster, start=day[0], end=day[1]) if resource == "cpu"
                     else self.expected_gpu(cluster=cluster, start=day[0], end=day[1]))
            idle += max(Decimal(0), capacity - sum(usage.values(), Decimal(0)))
        return idle

    def _times_within(self, container: Container, *, start: datetime, end: datetime) -> Iterator[int]:
        times = self.sample_times(cluster=container.cluster, born=container.born, died=container.died)
        return (t for t in times if _seconds(start) <= t < _seconds(end))

    def write_openmetrics(self, out: TextIO) -> None:
        """Each family under its `# TYPE` line, each series' samples contiguous and in time order."""
        for metric in (USAGE_METRIC, REQUEST_METRIC, GPU_METRIC):
            out.write(f"# TYPE {metric} gauge\n")
            for container in self.containers:
                self._write_container(out, container, metric=metric)
            for decoy in self.decoys:
                if decoy.metric == metric:
                    self._write_decoy(out, decoy)
        out.write(f"# TYPE {CPU_FAMILY} counter\n")
        for container in self.containers:
            self._write_cpu(out, container)
        out.write(f"# TYPE {CAPACITY_METRIC} gauge\n")
        for node in self.nodes:
            self._write_node(out, node)
        out.write("# EOF\n")

    def _write_cpu(self, out: TextIO, container: Container) -> None:
        """The container's cumulative CPU seconds at each scrape: what it used from its birth to the scrape."""
        series = _series(f"{CPU_FAMILY}_total", {"cluster": container.cluster, "namespace": container.namespace,
                                                 "pod": container.pod, "container": container.name, "job": "kubelet"})
        used = Decimal(0)
        step = _seconds(max(container.born, self.start))
        for timestamp in self.sample_times(cluster=container.cluster, born=container.born, died=container.died):
            while step < timestamp:
                used += container.cpu_cores_at(step) * STEP_SECONDS
                step += STEP_SECONDS
            out.write(f"{series} {used} {timestamp}\n")

    def _write_node(self, out: TextIO, node: Node) -> None:
        times = list(self.sample_times(cluster=node.cluster, born=node.joined, died=self.end))
        for resource, unit in (("memory", "byte"), ("cpu", "core"), ("nvidia_com_gpu", "integer")):
            if resource == "nvidia_com_gpu" and not node.gpus:
                continue
            series = _series(CAPACITY_METRIC, {"cluster": node.cluster, "node": node.name, "resource": resource,
                                               "unit": unit, "job": "kube-state-metrics"})
            kind = "gpu" if resource == "nvidia_com_gpu" else resource
            out.writelines(f"{series} {node.value_at(t, kind)} {t}\n" for t in times)

    def _gpu_labels(self, container: Container, gpu: int) -> dict[str, str]:
        prefix = dict(self.gpu_label_prefixes).get(container.cluster, "")
        labels = {"cluster": container.cluster, "gpu": str(gpu), "UUID": f"GPU-{container.pod}-{gpu}",
                  f"{prefix}namespace": container.namespace, f"{prefix}pod": container.pod,
                  f"{prefix}container": container.name, "job": "dcgm-exporter"}
        if prefix:
            labels |= {"namespace": "gpu-operator", "pod": f"dcgm-exporter-{container.cluster}"}
        return labels

    def _write_container(self, out: TextIO, container: Container, *, metric: str) -> None:
        labels = {"cluster": container.cluster, "namespace": container.namespace, "pod": container.pod,
                  "container": container.name}
        times = self.sample_times(cluster=container.cluster, born=container.born, died=container.died)
        if metric == USAGE_METRIC:
            series = _series(metric, {**labels, "job": "kubelet"})
            out.writelines(f"{series} {container.usage_at(t)} {t}\n" for t in times)
        elif metric == GPU_METRIC:
            for gpu in range(container.gpus):
                series = _series(metric, self._gpu_labels(container, gpu))
                times = self.sample_times(cluster=container.cluster, born=container.born, died=container.died)
                out.writelines(f"{series} {(t // STEP_SECONDS) % 101} {t}\n" for t in times)
        elif container.request_bytes is not None:
            series = _series(metric, {**labels, "job": "kube-state-metrics", "resource": "memory", "unit": "byte"})
            out.writelines(f"{series} {container.request_bytes} {t}\n" for t in times)

    def _write_decoy(self, out: TextIO, decoy: Decoy) -> None:
        labels = dict(decoy.labels)
        series = _series(decoy.metric, labels)
        times = self.sample_times(cluster=labels["cluster"], born=self.start, died=self.end)
        out.writelines(f"{series} {decoy.value} {t}\n" for t in times)


def _series(metric: str, labels: dict[str, str]) -> str:
    return metric + "{" + ",".join(f'{name}="{value}"' for name, value in labels.items()) + "}"


def _seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def _moment(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 9, day, hour, minute, tzinfo=UTC)


def month_history() -> History:
    """Two clusters, prod and stage, each with a `mobile-api` and an `mcmp` namespace."""
    containers = (
        # Usage crosses the request: the max basis must choose per step.
        Container("prod", "mobile-api", "api-7d9f-1", "api", 600 * MIB, 300 * MIB // 1000, 768 * MIB),
        Container("prod", "mobile-api", "api-7d9f-1", "envoy", 60 * MIB, 20 * MIB // 1000, 128 * MIB),
        # A pod that lives exactly 6 hours, always above its request.
        Container("prod", "mobile-api", "api-7d9f-2", "api", 800 * MIB, 200 * MIB // 1000, 768 * MIB,
                  born=_at(3, 6), died=_at(3, 12)),
        Container("prod", "mcmp", "mcmp-0", "mcmp", GIB, 512 * MIB // 1000, 2 * GIB),
        # The namespace is deleted mid-month: its series end.
        Container("prod", "legacy", "legacy-0", "app", 300 * MIB, 100 * MIB // 1000, 256 * MIB,
                  died=_at(15, 13, 37)),
        Container("prod", "kube-system", "coredns-1", "coredns", 20 * MIB, 10 * MIB // 1000, None),
        Container("prod", "batch", "report-29xk1", "report", 700 * MIB, 600 * MIB // 1000, GIB,
                  born=_at(10, 2), died=_at(10, 2, 47)),
        Container("stage", "mobile-api", "api-5c4b-1", "api", 300 * MIB, 200 * MIB // 1000, 384 * MIB),
        # A pod replaced by another one minute later.
        Container("stage", "mcmp", "mcmp-0", "mcmp", 500 * MIB, 100 * MIB // 1000, 512 * MIB,
                  died=_at(12, 9, 30)),
        Container("stage", "mcmp", "mcmp-1", "mcmp", 500 * MIB, 100 * MIB // 1000, 512 * MIB,
                  born=_at(12, 9, 31)),
        # GPU holders: a training job for a day and a half, and an inference server all month.
        Container("prod", "ml", "train-0", "train", 2 * GIB, 0, 2 * GIB, born=_at(5, 0), died=_at(6, 12),
                  cpu_base_millicores=3000, cpu_swing_millicores=2, gpus=2),
        Container("prod", "ml", "infer-0", "infer", GIB, 0, GIB, cpu_base_millicores=500, gpus=1),
        Container("stage", "ml", "infer-0", "infer", GIB // 2, 0, GIB // 2, cpu_base_millicores=100, gpus=1),
    )
    decoys = (
        Decoy(USAGE_METRIC, (("cluster", "prod"), ("namespace", "mobile-api"), ("pod", "api-7d9f-1"),
                             ("container", ""), ("job", "kubelet")), str(5 * GIB)),
        Decoy(USAGE_METRIC, (("cluster", "prod"), ("namespace", ""), ("pod", ""), ("container", ""),
                             ("job", "kubelet")), str(64 * GIB)),
        Decoy(USAGE_METRIC, (("cluster", "stage"), ("namespace", ""), ("pod", ""), ("container", ""),
                             ("job", "kubelet")), str(32 * GIB)),
        Decoy(REQUEST_METRIC, (("cluster", "prod"), ("namespace", "mcmp"), ("pod", "mcmp-0"), ("container", "mcmp"),
                               ("job", "kube-state-metrics"), ("resource", "cpu"), ("unit", "core")), "0.5"),
        # A GPU no pod holds: the exporter's own namespace and pod, no exported_pod.
        Decoy(GPU_METRIC, (("cluster", "prod"), ("gpu", "3"), ("UUID", "GPU-free-3"), ("namespace", "gpu-operator"),
                           ("pod", "dcgm-exporter-prod"), ("job", "dcgm-exporter")), "0"),
    )
    gaps = (Gap("stage", _at(20, 10), _at(20, 11)),)
    nodes = (
        Node("prod", "prod-a", 8 * GIB, 4, 2),
        Node("prod", "prod-b", 8 * GIB, 4, 2),
        # A node that joins on the 10th at noon: capacity steps up mid-month.
        Node("prod", "prod-c", 16 * GIB, 8, 0, joined=_at(10, 12)),
        # Its allocatable memory is cut below what the namespaces use for a day: idle never goes negative.
        Node("stage", "stage-a", 4 * GIB, 4, 0, shrunk=(_at(7, 0), _at(8, 6)), shrunk_bytes=GIB),
    )
    return History(containers=containers, decoys=decoys, gaps=gaps, nodes=nodes,
                   gpu_label_prefixes=(("prod", "exported_"), ("stage", "")))
