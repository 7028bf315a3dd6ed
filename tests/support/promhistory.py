"""A month of cAdvisor and kube-state-metrics memory history for two clusters, with its exact integrals.

The history is written as OpenMetrics for `promtool tsdb create-blocks-from openmetrics`; the expected
byte-seconds are computed here in plain Python under the same discretisation the source uses: one
sample per scrape step, each held constant for one step.
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

    def _times_within(self, container: Container, *, start: datetime, end: datetime) -> Iterator[int]:
        times = self.sample_times(cluster=container.cluster, born=container.born, died=container.died)
        return (t for t in times if _seconds(start) <= t < _seconds(end))

    def write_openmetrics(self, out: TextIO) -> None:
        """Each family under its `# TYPE` line, each series' samples contiguous and in time order."""
        for metric in (USAGE_METRIC, REQUEST_METRIC):
            out.write(f"# TYPE {metric} gauge\n")
            for container in self.containers:
                self._write_container(out, container, metric=metric)
            for decoy in self.decoys:
                if decoy.metric == metric:
                    self._write_decoy(out, decoy)
        out.write("# EOF\n")

    def _write_container(self, out: TextIO, container: Container, *, metric: str) -> None:
        labels = {"cluster": container.cluster, "namespace": container.namespace, "pod": container.pod,
                  "container": container.name}
        times = self.sample_times(cluster=container.cluster, born=container.born, died=container.died)
        if metric == USAGE_METRIC:
            series = _series(metric, {**labels, "job": "kubelet"})
            out.writelines(f"{series} {container.usage_at(t)} {t}\n" for t in times)
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
    )
    gaps = (Gap("stage", _at(20, 10), _at(20, 11)),)
    return History(containers=containers, decoys=decoys, gaps=gaps)
