"""Leader election on the real API server: the Lease protocol (conflicts, expiry, takeover, release), repeated, with
a ServiceAccount that may only touch its lease; then two real `cz-agent serve` replicas: one writer at a time,
kill -9 and SIGTERM of the leader, and the other takes over within the lease duration (or at once)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml
from kubernetes import client

from agent.errors import KubernetesError, LeaseConflict
from agent.service.leader import LeaderElector, LeaseLock, LeaseRecord, LeaseTiming
from agent.sources.kube import client_configuration
from tests.support import waiting
from tests.support.fixtures_kube import KubeApiServer, write_kubeconfig
from tests.support.fixtures_live import delete_namespace
from tests.support.fixtures_prom import running_prometheus
from tests.support.http import http_get, sample
from tests.support.served import ServedAgent, drop_bill, start_agent
from tests.support.waiting import WAIT_SECONDS

pytestmark = pytest.mark.integration

NAMESPACE = "cz-leader"
LEASE = "cz-allocation-agent"
# Short, so a takeover takes seconds; the ratios are client-go's (15/10/2 by default).
TIMING = LeaseTiming(lease_duration=4, renew_deadline=3, retry_period=0.5)
REPLICA_TIMING = LeaseTiming(lease_duration=6, renew_deadline=4, retry_period=1)
# On a loaded 2-core machine a process may stall for a while: deadlines are generous, bounds are measured.
SLACK_SECONDS = 3
ROUNDS = 5
BILL = """billingCycle,cz_container_bill,unblendedCost,currency
2026-09,mobile,40.00,USD
2026-09,,33.33,USD
"""
RULES = "companies: {alpha: 60, beta: 40}\nservices:\n  mobile: {alpha: 1}\n"


# The takeover times are measured from when wait_for returns: poll often.
wait_for = partial(waiting.wait_for, interval=0.05)


# ------------------------------------------------------------------------------- the candidates' identity


@pytest.fixture(scope="module")
def candidate_kubeconfig(kube_apiserver: KubeApiServer, admin: client.ApiClient,
                         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A ServiceAccount with the chart's lease Role: get/update on the one lease, create (which resourceNames
    cannot restrict) on leases of its namespace, nothing else."""
    core = client.CoreV1Api(admin)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    core.create_namespaced_service_account(NAMESPACE, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="candidate")))
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(NAMESPACE, client.V1Role(metadata=client.V1ObjectMeta(name="lease"), rules=[
        client.V1PolicyRule(api_groups=["coordination.k8s.io"], resources=["leases"], verbs=["get", "update"],
                            resource_names=[LEASE]),
        client.V1PolicyRule(api_groups=["coordination.k8s.io"], resources=["leases"], verbs=["create"])]))
    rbac.create_namespaced_role_binding(NAMESPACE, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="lease"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="lease"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="candidate", namespace=NAMESPACE)]))
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = core.create_namespaced_service_account_token("candidate", NAMESPACE, request).status.token
    yield write_kubeconfig(tmp_path_factory.mktemp("leader") / "candidate.kubeconfig", url=kube_apiserver.url,
                           token=token, ca_file=kube_apiserver.ca_file)
    delete_namespace(core, NAMESPACE)


@pytest.fixture
def coordination(admin: client.ApiClient, candidate_kubeconfig: Path) -> client.CoordinationV1Api:
    """The admin's view of the leases; each test starts without the lease."""
    api = client.CoordinationV1Api(admin)
    delete_lease(api)
    return api


def delete_lease(api: client.CoordinationV1Api) -> None:
    try:
        api.delete_namespaced_lease(LEASE, NAMESPACE)
    except client.exceptions.ApiException as e:
        if e.status != 404:
            raise


def lease_lock(kubeconfig: Path, name: str = LEASE) -> LeaseLock:
    api = client.CoordinationV1Api(client.ApiClient(client_configuration(kubeconfig=kubeconfig, context=None)))
    return LeaseLock(api, name=name, namespace=NAMESPACE, timeout_seconds=5)


def elector(kubeconfig: Path, identity: str, timing: LeaseTiming = TIMING) -> LeaderElector:
    return LeaderElector(lease_lock(kubeconfig), identity=identity, timing=timing)


# ------------------------------------------------------------------------------------- the Lease protocol


def test_a_write_at_a_stale_resource_version_is_a_conflict(coordination: client.CoordinationV1Api,
                                                           candidate_kubeconfig: Path):
    lock = lease_lock(candidate_kubeconfig)
    assert lock.get() is None
    now = datetime.now().astimezone()
    created = lock.create(LeaseRecord("a", 4, now, now))
    with pytest.raises(LeaseConflict):
        lock.create(LeaseRecord("b", 4, now, now))
    later = now + timedelta(seconds=1)
    renewed = lock.replace(LeaseRecord("a", 4, now, later, 0, created.resource_version))
    assert renewed.resource_version != created.resource_version
    with pytest.raises(LeaseConflict):
        lock.replace(LeaseRecord("b", 4, now, now, 1, created.resource_version))
    stored = coordination.read_namespaced_lease(LEASE, NAMESPACE).spec
    assert (stored.holder_identity, stored.lease_transitions) == ("a", 0)
    assert abs((stored.renew_time - later).total_seconds()) < 1e-3


def test_the_candidate_may_touch_no_other_lease(coordination: client.CoordinationV1Api, candidate_kubeconfig: Path):
    other = lease_lock(candidate_kubeconfig, name="someone-elses")
    now = datetime.now().astimezone()
    other.create(LeaseRecord("a", 4, now, now))  # create cannot be limited by name (see the chart's Role)
    with pytest.raises(KubernetesError, match="403"):
        other.get()
    with pytest.raises(KubernetesError, match="403"):
        other.replace(LeaseRecord("a", 4, now, now, 0, "1"))
    coordination.delete_namespaced_lease("someone-elses", NAMESPACE)


@pytest.mark.parametrize("free", ["absent", "released"])
def test_simultaneous_claims_of_a_free_lease_have_exactly_one_winner(
        coordination: client.CoordinationV1Api, candidate_kubeconfig: Path, free: str):
    winners = []
    for _ in range(ROUNDS):
        delete_lease(coordination)
        if free == "released":
            holder = elector(candidate_kubeconfig, "previous")
            assert holder.try_acquire_or_renew()
            holder.stop(release=True)
            assert coordination.read_namespaced_lease(LEASE, NAMESPACE).spec.holder_identity is None
        candidates = [elector(candidate_kubeconfig, f"c{i}") for i in range(4)]
        start = threading.Barrier(len(candidates))
        results: dict[str, bool] = {}

        def claim(candidate: LeaderElector) -> None:
            start.wait()
            results[candidate.identity] = candidate.try_acquire_or_renew()

        threads = [threading.Thread(target=claim, args=(c,)) for c in candidates]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        (winner,) = [identity for identity, won in results.items() if won]
        assert [c.identity for c in candidates if c.is_leading()] == [winner]
        assert coordination.read_namespaced_lease(LEASE, NAMESPACE).spec.holder_identity == winner
        winners.append(winner)
    assert len(winners) == ROUNDS


@dataclass
class Takeover:
    seconds: float
    new_leader: str


class LeadershipWatch:
    """Samples every candidate's is_leading() every few milliseconds and records any moment two lead at once."""

    def __init__(self, candidates: list[LeaderElector]) -> None:
        self.candidates = candidates
        self.overlaps: list[list[str]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LeadershipWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            leading = [c.identity for c in self.candidates if c.is_leading()]
            self.samples += 1
            if len(leading) > 1:
                self.overlaps.append(leading)

    def leader(self, among: list[LeaderElector]) -> LeaderElector | None:
        leading = [c for c in among if c.is_leading()]
        return leading[0] if len(leading) == 1 else None


@pytest.mark.parametrize("release", [False, True], ids=["crash", "release"])
def test_a_follower_takes_over_after_expiry_or_at_once_after_a_release_repeatedly(
        coordination: client.CoordinationV1Api, candidate_kubeconfig: Path, release: bool):
    candidates = [elector(candidate_kubeconfig, f"replica-{i}") for i in range(ROUNDS + 1)]
    for candidate in candidates:
        candidate.start()
    takeovers = []
    with LeadershipWatch(candidates) as watch:
        running = list(candidates)
        for _ in range(ROUNDS):
            leader = wait_for(lambda: watch.leader(running), what="one leader")
            transitions = coordination.read_namespaced_lease(LEASE, NAMESPACE).spec.lease_transitions
            stopped_at = time.monotonic()
            leader.stop(release=release)  # without release: a crash, the lease is left to expire
            running.remove(leader)
            successor = wait_for(lambda: watch.leader(running), what="a new leader",
                                 timeout=TIMING.lease_duration + WAIT_SECONDS)
            takeovers.append(Takeover(time.monotonic() - stopped_at, successor.identity))
            spec = coordination.read_namespaced_lease(LEASE, NAMESPACE).spec
            assert spec.holder_identity == successor.identity
            assert spec.lease_transitions == transitions + 1
        for candidate in running:
            candidate.stop()
    assert watch.overlaps == [] and watch.samples > 100
    seconds = [t.seconds for t in takeovers]
    print(f"takeover after {'release' if release else 'crash'}: {', '.join(f'{s:.2f}' for s in seconds)} s")
    if release:
        # At the followers' next attempt: a retry period with jitter, far below the lease duration.
        assert max(seconds) < TIMING.lease_duration
    else:
        # Not before the lease expires (measured from the leader's last renewal, at most a retry period before
        # the crash), and not much after.
        assert min(seconds) >= TIMING.lease_duration - 1.2 * TIMING.retry_period - 0.1
        assert max(seconds) < TIMING.lease_duration + 2 * TIMING.retry_period + SLACK_SECONDS


class CuttableTunnel:
    """A TCP tunnel to the API server (TLS passes through) that a test can cut, as a network partition does:
    open connections are reset and new ones closed at once, until healed."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("https://").split(":")
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self._cut = threading.Event()
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for connection in self._open:
                connection.close()
            self._open.clear()

    def heal(self) -> None:
        self._cut.clear()

    def _accept(self) -> None:
        while True:
            downstream, _ = self._listener.accept()
            if self._cut.is_set():
                downstream.close()
                continue
            upstream = socket.create_connection(self._upstream)
            with self._lock:
                self._open.extend((downstream, upstream))
            for source, target in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            source.close()
            target.close()


def test_a_leader_cut_off_from_the_api_server_stops_at_its_renew_deadline_before_a_takeover(
        coordination: client.CoordinationV1Api, candidate_kubeconfig: Path, kube_apiserver: KubeApiServer,
        tmp_path: Path):
    tunnel = CuttableTunnel(kube_apiserver.url)
    token = yaml.safe_load(candidate_kubeconfig.read_text())["users"][0]["user"]["token"]
    partitioned = write_kubeconfig(tmp_path / "tunnel.kubeconfig", url=tunnel.url, token=token,
                                   ca_file=kube_apiserver.ca_file)
    for round_ in range(ROUNDS):
        tunnel.heal()
        cut_off, other = elector(partitioned, f"cut-off-{round_}"), elector(candidate_kubeconfig, f"other-{round_}")
        cut_off.start()
        wait_for(cut_off.is_leading, what="the first leader", timeout=TIMING.lease_duration + WAIT_SECONDS)
        other.start()
        with LeadershipWatch([cut_off, other]) as watch:
            cut_at = time.monotonic()
            tunnel.cut()
            wait_for(lambda: not cut_off.is_leading(), what="the cut-off leader to stop")
            stopped = time.monotonic() - cut_at
            wait_for(other.is_leading, what="the other to take over", timeout=TIMING.lease_duration + WAIT_SECONDS)
            took_over = time.monotonic() - cut_at
        cut_off.stop(release=False)
        other.stop(release=True)
        print(f"cut off: stopped leading after {stopped:.2f} s, taken over after {took_over:.2f} s")
        assert watch.overlaps == [] and watch.samples > 100
        # The leader gives up within the renew deadline of its last renewal (at most a retry period before the
        # cut); the follower waits for the whole lease duration.
        assert stopped <= TIMING.renew_deadline + 0.2
        assert took_over >= TIMING.lease_duration - 1.2 * TIMING.retry_period - 0.1
        assert took_over > stopped


# --------------------------------------------------------------------------------- two real agent replicas


@dataclass
class Replica:
    identity: str
    agent: ServedAgent

    @property
    def url(self) -> str:
        return self.agent.url

    @property
    def log_path(self) -> Path:
        return self.agent.log_path

    @property
    def process(self) -> subprocess.Popen:
        return self.agent.process

    def metrics(self) -> str:
        return self.agent.metrics()

    def leading(self) -> bool:
        return sample(self.metrics(), "cz_agent_leader") == 1.0

    def job_runs(self) -> float:
        return sum(sample(self.metrics(), "cz_agent_runs_total", agent_job=job, outcome=outcome) or 0.0
                   for job in ("import", "allocate") for outcome in ("success", "failure"))


@dataclass
class Cluster:
    replicas: dict[str, Replica]
    inbox: Path
    store: str

    def logs(self) -> tuple[Path, ...]:
        return tuple(r.log_path for r in self.replicas.values())

    def leader(self) -> Replica | None:
        leading = [r for r in self.replicas.values() if r.process.poll() is None and r.leading()]
        return leading[0] if len(leading) == 1 else None


@pytest.fixture
def two_replicas(coordination: client.CoordinationV1Api, candidate_kubeconfig: Path,
                 tmp_path: Path) -> Iterator[Cluster]:
    yield from replicas_sharing(f"sqlite:///{tmp_path / 'runs.db'}", kubeconfig=candidate_kubeconfig,
                                tmp_path=tmp_path)


@pytest.fixture
def two_replicas_on_postgres(coordination: client.CoordinationV1Api, candidate_kubeconfig: Path, postgres_url: str,
                             tmp_path: Path) -> Iterator[Cluster]:
    yield from replicas_sharing(postgres_url, kubeconfig=candidate_kubeconfig, tmp_path=tmp_path)


def replicas_sharing(store: str, *, kubeconfig: Path, tmp_path: Path) -> Iterator[Cluster]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    replicas = {}
    try:
        for identity in ("replica-a", "replica-b"):
            replicas[identity] = start_replica(identity, tmp_path=tmp_path, store=store, rules=rules, inbox=inbox,
                                               kubeconfig=kubeconfig)
        cluster = Cluster(replicas, inbox, store)
        for replica in replicas.values():
            replica.agent.wait_until_ready(logs=cluster.logs())
        yield cluster
    finally:
        for replica in replicas.values():
            replica.agent.stop()


def start_replica(identity: str, *, tmp_path: Path, store: str, rules: Path, inbox: Path, kubeconfig: Path) -> Replica:
    settings = {"CZ_AGENT_STORE_URL": store, "CZ_AGENT_RULES_FILE": str(rules), "CZ_AGENT_INBOX_DIR": str(inbox),
                "CZ_AGENT_INBOX_POLL_SECONDS": "1", "CZ_AGENT_ALLOCATION_INTERVAL_SECONDS": "2",
                "CZ_AGENT_LOG_FORMAT": "json", "CZ_AGENT_KUBECONFIG": str(kubeconfig),
                "CZ_AGENT_LEADER_ELECTION": "true", "CZ_AGENT_LEADER_ELECTION_NAMESPACE": NAMESPACE,
                "POD_NAME": identity,
                "CZ_AGENT_LEADER_ELECTION_LEASE_DURATION_SECONDS": str(REPLICA_TIMING.lease_duration),
                "CZ_AGENT_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": str(REPLICA_TIMING.renew_deadline),
                "CZ_AGENT_LEADER_ELECTION_RETRY_PERIOD_SECONDS": str(REPLICA_TIMING.retry_period)}
    return Replica(identity, start_agent(settings, log_path=tmp_path / f"{identity}.log"))


JOB_LINE = re.compile(r"^job (?P<job>\w+) (?P<event>started|ended) by (?P<holder>[\w-]+)")


def job_intervals(replica: Replica, *, killed_at: float | None = None) -> list[tuple[float, float]]:
    """The replica's jobs as (start, end) Unix times from its JSON log; a job cut by kill -9 ends at the kill, and
    the job a live replica is running when its log is read, now."""
    intervals, started = [], None
    for line in replica.log_path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        match = JOB_LINE.match(entry["message"])
        if not match:
            continue
        assert match["holder"] == replica.identity
        moment = datetime.fromisoformat(entry["time"]).timestamp()
        if match["event"] == "started":
            assert started is None, "one job at a time per replica"
            started = moment
        else:
            intervals.append((started, moment))
            started = None
    if started is not None:
        running = replica.process.poll() is None
        assert killed_at is not None or running, f"{replica.identity}: a job started and never ended"
        intervals.append((started, killed_at if killed_at is not None else time.time()))
    return intervals


def assert_one_writer_at_a_time(cluster: Cluster, *, killed_at: dict[str, float] | None = None) -> int:
    """No job of one replica overlaps a job of the other; returns how many jobs ran."""
    killed_at = killed_at or {}
    a, b = (job_intervals(r, killed_at=killed_at.get(r.identity)) for r in cluster.replicas.values())
    overlaps = [(x, y) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]
    assert overlaps == []
    return len(a) + len(b)


def runs_in_store(cluster: Cluster) -> list[dict]:
    replica = next(r for r in cluster.replicas.values() if r.process.poll() is None)
    return json.loads(http_get(f"{replica.url}/api/v1/runs"))["runs"]


def leader_and_follower_after_a_run(cluster: Cluster) -> tuple[Replica, Replica]:
    """Once a leader is elected, a bill is dropped and its first run is stored."""
    leader = wait_for(cluster.leader, what="a leader", logs=cluster.logs())
    (follower,) = [r for r in cluster.replicas.values() if r is not leader]
    drop_bill(cluster.inbox, BILL)
    wait_for(lambda: runs_in_store(cluster), what="the first run", logs=cluster.logs())
    return leader, follower


def test_only_the_leader_runs_jobs_and_every_replica_serves(two_replicas: Cluster,
                                                            coordination: client.CoordinationV1Api):
    cluster = two_replicas
    leader, follower = leader_and_follower_after_a_run(cluster)
    # Several of the leader's job intervals (1-2 s) pass while the follower stays idle and not leading.
    deadline = time.monotonic() + 5 * REPLICA_TIMING.retry_period
    while time.monotonic() < deadline:
        assert leader.leading() and not follower.leading()
        time.sleep(0.2)
    assert follower.job_runs() == 0 and leader.job_runs() >= 3
    assert coordination.read_namespaced_lease(LEASE, NAMESPACE).spec.holder_identity == leader.identity
    for replica in (leader, follower):
        assert http_get(f"{replica.url}/readyz")
    # Only the leader exposes the store's figures, so that a sum over replicas counts the bill once.
    assert sample(leader.metrics(), "cz_bill_total_cost", period="2026-09", currency="USD") == 73.33
    assert sample(follower.metrics(), "cz_bill_total_cost", period="2026-09", currency="USD") is None
    assert json.loads(http_get(f"{follower.url}/api/v1/runs")) == json.loads(http_get(f"{leader.url}/api/v1/runs"))
    assert len(runs_in_store(cluster)) == 1
    assert assert_one_writer_at_a_time(cluster) >= 3


def test_a_prometheus_scraping_both_replicas_sums_the_bill_once(two_replicas_on_postgres: Cluster, tmp_path: Path):
    cluster = two_replicas_on_postgres
    leader = wait_for(cluster.leader, what="a leader", logs=cluster.logs())
    drop_bill(cluster.inbox, BILL)
    wait_for(lambda: sample(leader.metrics(), "cz_bill_total_cost", period="2026-09", currency="USD"),
             what="the leader's figures", logs=cluster.logs())
    targets = [replica.url.removeprefix("http://") for replica in cluster.replicas.values()]
    with running_prometheus([{"job_name": "cz-agent", "static_configs": [{"targets": targets}]}],
                            workdir=tmp_path, name="replicas") as prometheus:
        # The dashboard's bill total, once both replicas have been scraped.
        both_up = 'count(up{job="cz-agent"} == 1) == 2 and count(cz_agent_leader) == 2'
        wait_for(lambda: instant(prometheus, both_up), what="Prometheus to scrape both replicas",
                 logs=cluster.logs())
        [total] = instant(prometheus, 'sum by (currency) (cz_bill_total_cost{period="2026-09"})')
        assert (total["metric"], total["value"][1]) == ({"currency": "USD"}, "73.33")
        by_pod = instant(prometheus, 'count by (instance) (cz_allocation_cost{period="2026-09"})')
        assert [series["metric"]["instance"] for series in by_pod] == [leader.url.removeprefix("http://")]


def instant(prometheus: str, expression: str) -> list[dict]:
    return json.loads(http_get(f"{prometheus}/api/v1/query?{urlencode({'query': expression})}"))["data"]["result"]


def test_kill_9_of_the_leader_hands_over_within_the_lease_duration(two_replicas: Cluster,
                                                                   coordination: client.CoordinationV1Api):
    cluster = two_replicas
    leader, follower = leader_and_follower_after_a_run(cluster)
    transitions = coordination.read_namespaced_lease(LEASE, NAMESPACE).spec.lease_transitions

    leader.process.kill()
    killed = time.monotonic()
    killed_at = time.time()
    leader.process.wait()
    wait_for(follower.leading, what="the follower to take over", logs=cluster.logs())
    takeover = time.monotonic() - killed
    print(f"takeover after kill -9: {takeover:.2f} s (lease duration {REPLICA_TIMING.lease_duration:g} s)")

    spec = coordination.read_namespaced_lease(LEASE, NAMESPACE).spec
    assert (spec.holder_identity, spec.lease_transitions) == (follower.identity, transitions + 1)
    assert takeover >= REPLICA_TIMING.lease_duration - 1.2 * REPLICA_TIMING.retry_period - 0.1
    assert takeover < REPLICA_TIMING.lease_duration + 2 * REPLICA_TIMING.retry_period + SLACK_SECONDS
    # The new leader works: a changed bill is allocated by it.
    drop_bill(cluster.inbox, BILL + "2026-09,mobile,10.00,USD\n")
    wait_for(lambda: len(runs_in_store(cluster)) == 2, what="the new leader's run", logs=cluster.logs())
    assert follower.job_runs() >= 1
    assert assert_one_writer_at_a_time(cluster, killed_at={leader.identity: killed_at}) >= 2


def test_sigterm_of_the_leader_releases_the_lease_and_the_follower_takes_over_at_once(
        two_replicas: Cluster, coordination: client.CoordinationV1Api):
    cluster = two_replicas
    leader, follower = leader_and_follower_after_a_run(cluster)

    leader.process.send_signal(signal.SIGTERM)
    assert leader.process.wait(timeout=WAIT_SECONDS) == 0
    released = time.monotonic()
    wait_for(follower.leading, what="the follower to take over", logs=cluster.logs())
    takeover = time.monotonic() - released
    print(f"takeover after SIGTERM: {takeover:.2f} s after the old leader exited")

    # Without the release it would wait for expiry: at least the lease duration less one retry period.
    assert takeover < REPLICA_TIMING.lease_duration - 1.2 * REPLICA_TIMING.retry_period - 0.2
    assert coordination.read_namespaced_lease(LEASE, NAMESPACE).spec.holder_identity == follower.identity
    logged = leader.log_path.read_text()
    assert f"{leader.identity} released the lease {NAMESPACE}/{LEASE}" in logged
    wait_for(lambda: follower.job_runs() >= 1, what="the new leader's jobs", logs=cluster.logs())
    assert assert_one_writer_at_a_time(cluster) >= 2
