"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does: only the leader runs jobs.

The Python client's own `kubernetes.leaderelection` is not used: its candidate loop cannot be stopped, it never
releases the lease, it keeps no leaseTransitions, and it measures deadlines on the wall clock. This module keeps
client-go's protocol (holderIdentity, leaseDurationSeconds, acquireTime, renewTime, leaseTransitions, and a
resourceVersion-checked replace, so two candidates can never both win one round) with a monotonic clock.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.core import GaugeMetricFamily, Metric

from agent.errors import KubernetesError, LeaseConflict, SettingsError
from agent.settings import Settings
from agent.sources.kube import client_configuration, describe_api_error

log = logging.getLogger(__name__)

# client-go's wait.JitterUntil factor: candidates retry at [1, 1.2) x retryPeriod, so they do not stay in step.
JITTER_FACTOR = 1.2
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class LeaseTiming:
    lease_duration: float
    renew_deadline: float
    retry_period: float

    def __post_init__(self) -> None:
        # A leader must give up (renew deadline) before a follower may take over (lease duration), and must
        # get a few renewal attempts in before giving up, as client-go requires.
        if not self.lease_duration > self.renew_deadline > JITTER_FACTOR * self.retry_period > 0:
            raise SettingsError(
                "leader election needs lease duration > renew deadline > 1.2 x retry period > 0, got "
                f"{self.lease_duration:g} s, {self.renew_deadline:g} s, {self.retry_period:g} s")


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec as election sees it; resource_version is the object's, for the checked replace."""

    holder: str | None
    lease_duration_seconds: int | None
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int = 0
    resource_version: str | None = None


# ------------------------------------------------------------------------------------ pure election logic


@dataclass
class ElectionState:
    """What one candidate knows: the record it last saw, when (monotonic) that record last changed, and when it
    started its last successful acquire or renew. Deadlines count from the moment a request was sent, never
    from its answer, so a slow API server shortens leadership rather than stretching it."""

    identity: str
    observed: LeaseRecord | None = None
    observed_at: float = 0.0
    renewed_at: float | None = None
    released: bool = False

    def observe(self, record: LeaseRecord | None, *, now: float) -> None:
        if record is None or self.observed is None or _spec(record) != _spec(self.observed):
            self.observed_at = now
        self.observed = record

    def holds(self) -> bool:
        return self.observed is not None and self.observed.holder == self.identity

    def leading(self, *, now: float, renew_deadline: float) -> bool:
        """Leader only within renew_deadline of the last successful renew: checked at each call, so a stuck
        renew loop still ends leadership on time."""
        return (not self.released and self.holds() and self.renewed_at is not None
                and now < self.renewed_at + renew_deadline)

    def claim(self, *, now: float, wall: datetime, lease_duration: float) -> LeaseRecord | None:
        """The record to write to acquire or renew the observed lease, or None while another holder's lease is
        valid. Validity is judged on this candidate's own clock: the holder has lease_duration from the moment
        this candidate saw the record change (clocks of different machines are never compared)."""
        current = self.observed
        if current is None:
            return LeaseRecord(self.identity, _whole_seconds(lease_duration), wall, wall, 0)
        duration = current.lease_duration_seconds or lease_duration
        if current.holder and not self.holds() and now < self.observed_at + duration:
            return None
        if self.holds():
            return replace(current, lease_duration_seconds=_whole_seconds(lease_duration), renew_time=wall)
        return replace(current, holder=self.identity, lease_duration_seconds=_whole_seconds(lease_duration),
                       acquire_time=wall, renew_time=wall, transitions=current.transitions + 1)

    def release_record(self, *, wall: datetime) -> LeaseRecord | None:
        """client-go's release: no holder and a 1 s lease, so a follower takes over at its next attempt."""
        if not self.holds():
            return None
        return replace(self.observed, holder=None, lease_duration_seconds=1, acquire_time=wall, renew_time=wall)


def _spec(record: LeaseRecord) -> tuple[object, ...]:
    return (record.holder, record.lease_duration_seconds, record.acquire_time, record.renew_time, record.transitions)


def _whole_seconds(seconds: float) -> int:
    return max(1, round(seconds))


# ------------------------------------------------------------------------------------------- the Lease API


class LeaseLock:
    """The Lease object on the API server: read, create, and replace only at the resourceVersion last read."""

    def __init__(self, api: client.CoordinationV1Api, *, name: str, namespace: str, timeout_seconds: float) -> None:
        self._api = api
        self.name = name
        self.namespace = namespace
        self._timeout = timeout_seconds

    def get(self) -> LeaseRecord | None:
        """The lease, or None when it does not exist yet."""
        lease = self._call(self._api.read_namespaced_lease, self.name, self.namespace, missing_ok=True)
        return None if lease is None else _record(lease)

    def create(self, record: LeaseRecord) -> LeaseRecord:
        body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name), spec=_lease_spec(record))
        return _record(self._call(self._api.create_namespaced_lease, self.namespace, body))

    def replace(self, record: LeaseRecord) -> LeaseRecord:
        """Write `record` if the lease is still at record.resource_version, else raise LeaseConflict."""
        body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name, resource_version=record.resource_version),
                              spec=_lease_spec(record))
        return _record(self._call(self._api.replace_namespaced_lease, self.name, self.namespace, body))

    def _call(self, method: Callable[..., client.V1Lease], *args: object,
              missing_ok: bool = False) -> client.V1Lease | None:
        """The method's answer; None for a missing lease when `missing_ok`, else KubernetesError or LeaseConflict."""
        where = f"lease {self.namespace}/{self.name}"
        try:
            return method(*args, _request_timeout=self._timeout)
        except ApiException as e:
            if e.status == 404 and missing_ok:
                return None
            if e.status == 409:
                raise LeaseConflict(f"{where}: changed by another candidate") from e
            raise KubernetesError(f"{where}: {describe_api_error(e)}") from e
        except urllib3.exceptions.HTTPError as e:
            raise KubernetesError(f"{where}: the Kubernetes API is unreachable: {type(e).__name__}") from e


def _lease_spec(record: LeaseRecord) -> client.V1LeaseSpec:
    # MicroTime wants exactly six fractional digits; the client would send isoformat(), which drops them at .0.
    return client.V1LeaseSpec(holder_identity=record.holder, lease_duration_seconds=record.lease_duration_seconds,
                              acquire_time=_micro_time(record.acquire_time), renew_time=_micro_time(record.renew_time),
                              lease_transitions=record.transitions)


def _micro_time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(lease: client.V1Lease) -> LeaseRecord:
    spec = lease.spec or client.V1LeaseSpec()
    return LeaseRecord(holder=spec.holder_identity or None, lease_duration_seconds=spec.lease_duration_seconds,
                       acquire_time=spec.acquire_time, renew_time=spec.renew_time,
                       transitions=spec.lease_transitions or 0, resource_version=lease.metadata.resource_version)


# ---------------------------------------------------------------------------------------------- leadership


class Leadership(Protocol):
    """What the jobs ask before starting: may this replica write now, and under which identity and term."""

    identity: str
    on_started_leading: Callable[[], None]

    def is_leading(self) -> bool: ...

    def term(self) -> int: ...

    def start(self) -> None: ...

    def stop(self, *, release: bool = True) -> None: ...


class SoleReplica:
    """Leader election off: the only replica always runs the jobs."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.on_started_leading: Callable[[], None] = lambda: None

    def is_leading(self) -> bool:
        return True

    def term(self) -> int:
        return 0

    def start(self) -> None:
        """Nothing to campaign for: the jobs' own schedule starts them."""

    def stop(self, *, release: bool = True) -> None:
        """Nothing to hand back."""


class LeaderElector:
    """One candidate: a daemon thread that acquires or renews the lease every retry period (with jitter) until
    stop(), which releases a lease this candidate holds. Callbacks run on the elector thread."""

    def __init__(self, lock: LeaseLock, *, identity: str, timing: LeaseTiming,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.identity = identity
        self._lock = lock
        self._timing = timing
        self._clock = clock
        self._wall = wall
        self._state = ElectionState(identity)
        self._state_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"leader-election-{identity}", daemon=True)
        self._was_leading = False
        self.on_started_leading: Callable[[], None] = lambda: None

    def is_leading(self) -> bool:
        with self._state_lock:
            return self._state.leading(now=self._clock(), renew_deadline=self._timing.renew_deadline)

    def term(self) -> int:
        """The lease's transition count when this candidate last wrote it: a fencing number, higher per new leader."""
        with self._state_lock:
            return self._state.observed.transitions if self._state.observed else 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        """Stop campaigning; with `release`, hand a held lease back so a follower takes over at once."""
        with self._state_lock:
            self._state.released = True
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        if release:
            self._release()

    def try_acquire_or_renew(self) -> bool:
        """One round: read the lease, then create, renew or take it over if it is free or expired."""
        sent_at = self._clock()
        try:
            current = self._lock.get()
            with self._state_lock:
                self._state.observe(current, now=sent_at)
                wanted = self._state.claim(now=sent_at, wall=self._wall(), lease_duration=self._timing.lease_duration)
            if wanted is None:
                return False
            written = self._lock.create(wanted) if current is None else self._lock.replace(wanted)
        except LeaseConflict as e:
            log.debug("leader election: %s", e)
            return False
        except KubernetesError as e:
            log.warning("leader election: %s", e)
            return False
        with self._state_lock:
            self._state.observe(written, now=sent_at)
            self._state.renewed_at = sent_at
        return True

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.try_acquire_or_renew()
            self._note_transition()
            self._stopping.wait(self._timing.retry_period * random.uniform(1, JITTER_FACTOR))

    def _note_transition(self) -> None:
        leading = self.is_leading()
        if leading and not self._was_leading:
            log.info("leader election: %s is now the leader (lease %s/%s, term %d)", self.identity,
                     self._lock.namespace, self._lock.name, self.term())
            self._started_leading()
        elif self._was_leading and not leading:
            log.warning("leader election: %s lost the lease %s/%s; jobs stop", self.identity, self._lock.namespace,
                        self._lock.name)
        self._was_leading = leading

    def _started_leading(self) -> None:
        try:
            self.on_started_leading()
        except Exception:  # noqa: BLE001 - the callback must never end the campaign (the lease would lapse)
            log.exception("leader election: the started-leading callback failed")

    def _release(self) -> None:
        with self._state_lock:
            record = self._state.release_record(wall=self._wall())
        if record is None:
            return
        try:
            self._lock.replace(record)
        except (LeaseConflict, KubernetesError) as e:
            log.warning("leader election: could not release the lease (a follower takes over when it expires): %s", e)
            return
        log.info("leader election: %s released the lease %s/%s", self.identity, self._lock.namespace, self._lock.name)


def leader_family(leadership: Leadership) -> GaugeMetricFamily:
    return GaugeMetricFamily("cz_agent_leader", "1 while this replica holds the lease and runs the jobs, else 0 "
                             "(always 1 without leader election).", value=1 if leadership.is_leading() else 0)


class LeaderCollector:
    """cz_agent_leader, read at each scrape."""

    def __init__(self, leadership: Leadership) -> None:
        self._leadership = leadership

    def collect(self) -> list[Metric]:
        return [leader_family(self._leadership)]


# ------------------------------------------------------------------------------------------------ set-up


def candidate_identity(settings: Settings) -> str:
    """The setting, else the pod's name (POD_NAME from the downward API, else HOSTNAME), else the host name."""
    return (settings.leader_election_identity or os.environ.get("POD_NAME") or os.environ.get("HOSTNAME")
            or socket.gethostname())


def lease_namespace(settings: Settings) -> str:
    """The setting, else POD_NAMESPACE, else the namespace of the pod's service account."""
    if settings.leader_election_namespace:
        return settings.leader_election_namespace
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise SettingsError("leader election needs the lease's namespace: set CZ_AGENT_LEADER_ELECTION_NAMESPACE "
                            "(or POD_NAMESPACE)") from e


def leadership_for(settings: Settings) -> SoleReplica | LeaderElector:
    """A started elector when leader election is on, else a sole replica."""
    identity = candidate_identity(settings)
    if not settings.leader_election:
        return SoleReplica(identity)
    timing = LeaseTiming(settings.leader_election_lease_duration_seconds,
                         settings.leader_election_renew_deadline_seconds,
                         settings.leader_election_retry_period_seconds)
    configuration = client_configuration(kubeconfig=settings.kubeconfig, context=None)
    api = client.CoordinationV1Api(client.ApiClient(configuration))
    # One request may take at most half the renew deadline, so a renewal still has a second try in time.
    lock = LeaseLock(api, name=settings.leader_election_lease_name, namespace=lease_namespace(settings),
                     timeout_seconds=min(settings.kube_timeout_seconds, timing.renew_deadline / 2))
    log.info("leader election: %s campaigns for the lease %s/%s", identity, lock.namespace, lock.name)
    return LeaderElector(lock, identity=identity, timing=timing)
