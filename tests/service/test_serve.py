"""The service's planning and jobs with the clock passed in: which periods it allocates, and that a failed
job is counted while the last good run stays; and the budgets a served agent exposes from its rules file."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from agent.core.rules import Budget, Budgets
from agent.service.metrics import JobStats
from agent.service.serve import AgentService
from agent.settings import Settings
from agent.store.runs import close_period, list_runs, open_store
from tests.service.test_metrics import promtool_check
from tests.support.http import sample
from tests.support.served import served_agent
from tests.support.waiting import wait_for

RULES = "companies: {alpha: 60, beta: 40}\nservices: {mobile: {alpha: 1}}\n"


def bill(period: str, amount: str = "100.00") -> str:
    return f"billingCycle,cz_container_bill,unblendedCost,currency\n{period},mobile,{amount},USD\n{period},,50,USD\n"


@pytest.fixture
def setup(tmp_path: Path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    engine = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    settings = Settings(rules_file=rules, inbox_dir=inbox)
    stats = JobStats()
    clock = {"now": datetime(2026, 11, 23, 12, tzinfo=UTC)}
    service = AgentService(settings=settings, engine=engine, job_stats=stats, clock=lambda: clock["now"])
    return service, inbox, engine, stats, clock, rules


def periods_of(engine) -> list[str]:
    return [run.period for run in list_runs(engine)]


def test_first_run_then_only_recent_months_are_recomputed_and_unchanged_results_are_not_stored(setup):
    service, inbox, engine, stats, _, _ = setup
    (inbox / "august.csv").write_text(bill("2026-08"))
    (inbox / "november.csv").write_text(bill("2026-11"))
    assert service.import_job() and service.allocate_job()
    assert periods_of(engine) == ["2026-08", "2026-11"]
    assert service.allocate_job()
    assert periods_of(engine) == ["2026-08", "2026-11"]
    assert {s.job: s for s in stats.snapshot()}["allocate"].runs == {"success": 2, "failure": 0}


def test_changed_rules_recompute_open_periods(setup):
    service, inbox, engine, _, _, rules = setup
    (inbox / "august.csv").write_text(bill("2026-08"))
    assert service.import_job() and service.allocate_job()
    rules.write_text(RULES.replace("alpha: 60", "alpha: 70"))
    assert service.allocate_job()
    assert periods_of(engine) == ["2026-08", "2026-08"]


def test_closed_period_is_frozen_until_a_new_bill_restates_it(setup):
    service, inbox, engine, _, _, rules = setup
    (inbox / "august.csv").write_text(bill("2026-08"))
    assert service.import_job() and service.allocate_job()
    close_period(engine, period="2026-08", closed_at="2026-09-05T00:00:00+00:00")
    rules.write_text(RULES.replace("alpha: 60", "alpha: 70"))
    assert service.allocate_job()
    assert periods_of(engine) == ["2026-08"]
    (inbox / "august-late.csv").write_text(bill("2026-08", amount="7.00"))
    assert service.import_job() and service.allocate_job()
    runs = list_runs(engine)
    assert [run.period for run in runs] == ["2026-08", "2026-08"]
    assert runs[1].manifest.totals_json()["USD"]["bill"] == "207.00"
    assert runs[0].manifest.totals_json()["USD"]["bill"] == "150.00"


def test_a_bad_bill_fails_the_import_job_but_the_good_ones_are_allocated(setup):
    service, inbox, engine, stats, _, _ = setup
    (inbox / "good.csv").write_text(bill("2026-10"))
    (inbox / "broken.csv").write_text("no,bill,here\n1,2,3\n")
    assert not service.import_job()
    assert service.allocate_job()
    assert periods_of(engine) == ["2026-10"]
    import_stats = {s.job: s for s in stats.snapshot()}["import"]
    assert import_stats.runs["failure"] >= 1


def test_invalid_rules_fail_the_job_and_store_nothing(setup):
    service, inbox, engine, stats, _, rules = setup
    (inbox / "good.csv").write_text(bill("2026-10"))
    assert service.import_job()
    rules.write_text("companies: {alpha: -1}\n")
    assert not service.allocate_job()
    assert periods_of(engine) == []
    assert {s.job: s for s in stats.snapshot()}["allocate"].runs == {"success": 0, "failure": 1}


def test_hidden_and_escaping_files_are_ignored(setup, tmp_path: Path):
    service, inbox, engine, _, _, _ = setup
    (inbox / ".upload.csv.part").write_text(bill("2026-07"))
    outside = tmp_path / "outside.csv"
    outside.write_text(bill("2026-06"))
    (inbox / "link.csv").symlink_to(outside)
    (inbox / "2026-10").mkdir()
    (inbox / "2026-10" / "undated.csv").write_text("cz_container_bill,unblendedCost,currency\nmobile,5,USD\n")
    assert service.import_job() and service.allocate_job()
    assert periods_of(engine) == ["2026-10"]


def test_a_missing_inbox_is_created_and_a_file_in_its_place_fails_the_job(setup, tmp_path: Path):
    service, inbox, engine, stats, _, _ = setup
    inbox.rmdir()
    assert service.import_job()
    assert inbox.is_dir()
    inbox.rmdir()
    inbox.write_text("not a directory")
    assert not service.import_job()
    assert {s.job: s for s in stats.snapshot()}["import"].runs == {"success": 1, "failure": 1}


def test_the_budgets_are_those_of_the_rules_last_read_and_changing_one_allocates_nothing_again(setup):
    service, inbox, engine, _, _, rules = setup
    assert service.budgets() == Budgets()
    (inbox / "august.csv").write_text(bill("2026-08"))
    rules.write_text(RULES + "budgets: {companies: {alpha: {amount: \"100\", currency: USD}}}\n")
    assert service.import_job() and service.allocate_job()
    assert service.budgets().companies == {"alpha": Budget(amount=Decimal("100"), currency="USD")}
    rules.write_text(RULES + "budgets: {services: {mobile: {amount: \"40.50\", currency: USD}}}\n")
    assert service.allocate_job()
    assert service.budgets() == Budgets(services={"mobile": Budget(amount=Decimal("40.50"), currency="USD")})
    assert periods_of(engine) == ["2026-08"]
    rules.write_text(RULES + "budgets: {services: {web: {amount: \"1\", currency: USD}}}\n")
    assert not service.allocate_job()
    assert service.budgets().services == {"mobile": Budget(amount=Decimal("40.50"), currency="USD")}


@pytest.mark.integration
def test_a_served_agent_exposes_the_budgets_of_its_rules_file_as_it_changes(tmp_path: Path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES + "budgets: {companies: {alpha: {amount: \"20000\", currency: USD}}}\n")
    settings = {"CZ_AGENT_RULES_FILE": str(rules), "CZ_AGENT_INBOX_DIR": str(tmp_path / "inbox"),
                "CZ_AGENT_STORE_URL": f"sqlite:///{tmp_path / 'runs.db'}", "CZ_AGENT_INBOX_POLL_SECONDS": "1",
                "HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    company = {"scope": "company", "company": "alpha", "service_code": "", "currency": "USD"}
    service = {"scope": "service", "company": "", "service_code": "mobile", "currency": "EUR"}
    with served_agent(settings, log_path=tmp_path / "agent.log") as agent:
        wait_for(lambda: sample(agent.metrics(), "cz_budget_amount", **company) == 20000, what="alpha's budget",
                 logs=agent.log_path)
        rules.write_text(RULES + "budgets: {services: {mobile: {amount: \"1500.75\", currency: EUR}}}\n")
        wait_for(lambda: sample(agent.metrics(), "cz_budget_amount", **service) == 1500.75, what="mobile's budget",
                 logs=agent.log_path)
        exposition = agent.metrics()
    assert sample(exposition, "cz_budget_amount", **company) is None
    checked = promtool_check(exposition.encode())
    assert checked.returncode == 0, checked.stdout + checked.stderr
