"""The election's decisions on a fake clock (the Lease protocol itself is tested on the real API server in
tests/service/test_leader_apiserver.py), the timing rules, and that the service's jobs run only while leading."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.errors import SettingsError
from agent.service.leader import (ElectionState, LeaderCollector, LeaseRecord, LeaseTiming, SoleReplica,
                                  candidate_identity, leadership_for, lease_namespace)
from agent.service.metrics import JobStats
from agent.service.serve import AgentService
from agent.settings import Settings
from agent.store.runs import list_runs, open_store

WALL = datetime(2026, 11, 23, 12, tzinfo=UTC)
DURATION = 15
DEADLINE = 10


def held_by(holder: str | None, *, transitions: int = 0, version: str = "7") -> LeaseRecord:
    return LeaseRecord(holder, DURATION, WALL, WALL, transitions, version)


def test_a_missing_lease_is_created_with_this_candidate_as_holder():
    state = ElectionState("a")
    state.observe(None, now=100.0)
    assert state.claim(now=100.0, wall=WALL, lease_duration=DURATION) == LeaseRecord("a", 15, WALL, WALL, 0, None)


def test_another_holder_is_waited_out_for_the_lease_duration_from_the_last_change_seen():
    state = ElectionState("b")
    state.observe(held_by("a"), now=100.0)
    assert state.claim(now=114.9, wall=WALL, lease_duration=DURATION) is None
    # The holder renewed (the record changed): the wait starts again from this observation.
    state.observe(replace(held_by("a"), renew_time=WALL + timedelta(seconds=2), resource_version="8"), now=110.0)
    assert state.claim(now=124.9, wall=WALL, lease_duration=DURATION) is None
    # The same record seen again does not restart the wait; once it is over, the lease is taken over.
    state.observe(replace(held_by("a"), renew_time=WALL + timedelta(seconds=2), resource_version="8"), now=120.0)
    later = WALL + timedelta(seconds=25)
    taken = state.claim(now=125.0, wall=later, lease_duration=DURATION)
    assert taken == LeaseRecord("b", 15, later, later, 1, "8")


def test_the_record_s_own_lease_duration_decides_expiry():
    state = ElectionState("b")
    state.observe(replace(held_by("a"), lease_duration_seconds=40), now=100.0)
    assert state.claim(now=139.0, wall=WALL, lease_duration=DURATION) is None
    assert state.claim(now=140.0, wall=WALL, lease_duration=DURATION) is not None


def test_a_released_lease_is_taken_at_once_and_counts_a_transition():
    state = ElectionState("b")
    state.observe(LeaseRecord(None, 1, WALL, WALL, 4, "9"), now=100.0)
    taken = state.claim(now=100.0, wall=WALL, lease_duration=DURATION)
    assert (taken.holder, taken.transitions, taken.resource_version) == ("b", 5, "9")


def test_the_holder_renews_keeping_its_acquire_time_and_transitions():
    state = ElectionState("a")
    state.observe(held_by("a", transitions=3), now=100.0)
    later = WALL + timedelta(seconds=2)
    renewed = state.claim(now=102.0, wall=later, lease_duration=DURATION)
    assert renewed == LeaseRecord("a", 15, WALL, later, 3, "7")


def test_leadership_ends_at_the_renew_deadline_counted_from_when_the_renewal_was_sent():
    state = ElectionState("a")
    state.observe(held_by("a"), now=100.0)
    assert not state.leading(now=100.0, renew_deadline=DEADLINE)  # seen, but never written by this candidate
    state.renewed_at = 100.0
    assert state.leading(now=109.9, renew_deadline=DEADLINE)
    assert not state.leading(now=110.0, renew_deadline=DEADLINE)
    # Another holder seen: leadership ends at once, whatever the deadline.
    state.renewed_at = 105.0
    state.observe(held_by("b", version="8"), now=106.0)
    assert not state.leading(now=106.0, renew_deadline=DEADLINE)


def test_release_hands_back_only_a_lease_this_candidate_holds():
    state = ElectionState("a")
    state.observe(held_by("b"), now=100.0)
    assert state.release_record(wall=WALL) is None
    state.observe(held_by("a", transitions=2), now=101.0)
    state.renewed_at = 101.0
    released = state.release_record(wall=WALL)
    assert (released.holder, released.lease_duration_seconds, released.transitions) == (None, 1, 2)
    state.released = True
    assert not state.leading(now=101.5, renew_deadline=DEADLINE)


@pytest.mark.parametrize(("duration", "deadline", "retry"), [(10, 10, 2), (15, 10, 9), (15, 20, 2), (15, 10, 0)])
def test_timings_that_could_let_two_leaders_overlap_are_refused(duration: float, deadline: float, retry: float):
    with pytest.raises(SettingsError, match="lease duration > renew deadline > 1.2 x retry period"):
        LeaseTiming(duration, deadline, retry)


def test_leader_election_off_is_a_sole_replica_exposed_as_leader(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("POD_NAME", "cz-7d9f-abcde")
    leadership = leadership_for(Settings())
    assert isinstance(leadership, SoleReplica) and leadership.identity == "cz-7d9f-abcde"
    registry = CollectorRegistry()
    registry.register(LeaderCollector(leadership))
    assert registry.get_sample_value("cz_agent_leader") == 1.0


def test_identity_and_namespace_come_from_the_settings_then_the_pod(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("POD_NAME", "pod-1")
    monkeypatch.setenv("POD_NAMESPACE", "finops")
    assert (candidate_identity(Settings()), lease_namespace(Settings())) == ("pod-1", "finops")
    explicit = Settings(leader_election_identity="me", leader_election_namespace="billing")
    assert (candidate_identity(explicit), lease_namespace(explicit)) == ("me", "billing")


def test_an_invalid_timing_fails_at_start_up_with_the_values():
    settings = Settings(leader_election=True, leader_election_namespace="x", leader_election_renew_deadline_seconds=20)
    with pytest.raises(SettingsError, match="15 s, 20 s, 2 s"):
        leadership_for(settings)


class SwitchedLeadership:
    """A leadership the test turns on and off (the election itself is not under test here)."""

    identity = "replica-a"

    def __init__(self) -> None:
        self.leading = False
        self.on_started_leading = lambda: None

    def is_leading(self) -> bool:
        return self.leading

    def term(self) -> int:
        return 3


def test_the_jobs_run_only_while_leading(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "bill.csv").write_text("billingCycle,cz_container_bill,unblendedCost,currency\n2026-11,,50,USD\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("companies: {alpha: 1}\n")
    engine = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    stats = JobStats()
    leadership = SwitchedLeadership()
    service = AgentService(settings=Settings(rules_file=rules, inbox_dir=inbox), engine=engine, job_stats=stats,
                           clock=lambda: WALL, leadership=leadership)
    assert service.import_job() and service.allocate_job()
    assert list_runs(engine) == [] and stats.snapshot() == []

    leadership.leading = True
    caplog.set_level("INFO")
    assert service.allocate_job()
    assert [run.period for run in list_runs(engine)] == ["2026-11"]
    assert "job allocate started by replica-a (term 3)" in caplog.messages
    assert "job allocate ended by replica-a: success" in caplog.messages


class LapsingLeadership(SwitchedLeadership):
    """Leading for the first `answers` questions, then not: the lease lost in the middle of a job."""

    def __init__(self, answers: int) -> None:
        super().__init__()
        self.answers = answers

    def is_leading(self) -> bool:
        self.answers -= 1
        return self.answers >= 0


def test_a_lease_lost_mid_job_stops_before_the_next_period(tmp_path: Path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for period in ("2026-10", "2026-11"):
        (inbox / f"{period}.csv").write_text(f"billingCycle,cz_container_bill,unblendedCost,currency\n{period},,5,USD\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("companies: {alpha: 1}\n")
    engine = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    stats = JobStats()
    # Asked at the job's start and before each period: the second period is never written.
    service = AgentService(settings=Settings(rules_file=rules, inbox_dir=inbox), engine=engine, job_stats=stats,
                           clock=lambda: WALL, leadership=LapsingLeadership(answers=2))
    assert not service.allocate_job()
    assert [run.period for run in list_runs(engine)] == ["2026-10"]
    assert {s.job: s.runs for s in stats.snapshot()} == {"allocate": {"success": 0, "failure": 1}}
