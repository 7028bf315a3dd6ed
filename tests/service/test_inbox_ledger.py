"""The inbox mirrors the bill: the files present for a period are its bill, each counted once, a bill's periods
come from its content and its path, and an unchanged file is not read again."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agent.bills import ImportOptions, total_bill
from agent.errors import BillFormatError
from agent.service.api import create_app
from agent.service.metrics import AllocationCollector, JobStats
from agent.service.serve import AgentService
from agent.settings import Settings
from agent.store.runs import list_runs, open_store
from tests.service.test_serve import RULES, bill, periods_of, setup  # noqa: F401 - `setup` is a fixture

FLAT_FEE = "unblendedCost,currency,cz_container_bill\n12.00,USD,mobile\n"


def bills_of(engine) -> list[tuple[str, str]]:
    return [(run.period, run.manifest.totals_json().get("USD", {}).get("bill", "0")) for run in list_runs(engine)]


def test_the_same_undated_file_in_two_month_folders_bills_each_month(setup):
    service, inbox, engine, *_ = setup
    for month in ("2026-09", "2026-10"):
        (inbox / month).mkdir()
        (inbox / month / "fees.csv").write_text(FLAT_FEE)
    assert service.import_job() and service.allocate_job()
    assert bills_of(engine) == [("2026-09", "12.00"), ("2026-10", "12.00")]


def test_moving_a_file_to_another_month_folder_moves_its_lines(setup):
    service, inbox, engine, *_ = setup
    (inbox / "2026-09").mkdir()
    (inbox / "2026-10").mkdir()
    (inbox / "2026-10" / "big.csv").write_text(bill("2026-10", amount="100.00"))
    (inbox / "2026-09" / "fees.csv").write_text(FLAT_FEE)
    assert service.import_job() and service.allocate_job()
    shutil.move(inbox / "2026-09" / "fees.csv", inbox / "2026-10" / "fees.csv")
    assert service.import_job() and service.allocate_job()
    assert bills_of(engine) == [("2026-09", "12.00"), ("2026-10", "150.00"), ("2026-10", "162.00"),
                                ("2026-09", "0")]


def test_adding_replacing_and_removing_files_restate_the_month(setup):
    service, inbox, engine, *_ = setup
    (inbox / "a.csv").write_text(bill("2026-10", amount="100.00"))
    (inbox / "other-month.csv").write_text(bill("2026-08", amount="1.00"))
    assert service.import_job() and service.allocate_job()
    (inbox / "b.csv").write_text(bill("2026-10", amount="10.00"))
    assert service.import_job() and service.allocate_job()
    (inbox / "b.csv").write_text(bill("2026-10", amount="20.00"))
    assert service.import_job() and service.allocate_job()
    (inbox / "b.csv").unlink()
    assert service.import_job() and service.allocate_job()
    (inbox / "a.csv").unlink()
    assert service.import_job() and service.allocate_job()
    october = [total for period, total in bills_of(engine) if period == "2026-10"]
    assert october == ["150.00", "210.00", "220.00", "150.00", "0"]


def test_an_inbox_emptied_altogether_changes_nothing(setup):
    service, inbox, engine, *_ = setup
    (inbox / "a.csv").write_text(bill("2026-10"))
    assert service.import_job() and service.allocate_job()
    (inbox / "a.csv").unlink()
    assert service.import_job() and service.allocate_job()
    assert bills_of(engine) == [("2026-10", "150.00")]


def test_a_copy_or_a_link_in_the_inbox_counts_once(setup):
    service, inbox, engine, *_ = setup
    (inbox / "a.csv").write_text(bill("2026-10"))
    shutil.copy(inbox / "a.csv", inbox / "a-copy.csv")
    (inbox / "a-link.csv").symlink_to(inbox / "a.csv")
    assert service.import_job() and service.allocate_job()
    assert bills_of(engine) == [("2026-10", "150.00")]
    assert [bill.path for bill in list_runs(engine)[0].manifest.bills] == [str(inbox / "a-copy.csv")]


def read_bytes_of_this_process() -> int:
    return int(Path("/proc/self/io").read_text().split("rchar:")[1].split()[0])


def test_an_idle_agent_does_not_read_unchanged_bills_again(setup):
    service, inbox, engine, *_ = setup
    rows = "".join(f"2026-10,mobile,{n}.00,USD\n" for n in range(100_000))
    path = inbox / "big.csv"
    path.write_text("billingCycle,cz_container_bill,unblendedCost,currency\n" + rows)
    # Written a minute ago: a file modified within the last two seconds is read again, in case it changes again.
    os.utime(path, (time.time() - 60, time.time() - 60))
    assert service.import_job()
    before = read_bytes_of_this_process()
    for _ in range(10):
        assert service.import_job()
    assert read_bytes_of_this_process() - before < path.stat().st_size / 10


def test_a_bill_rewritten_while_it_is_read_fails_that_read(tmp_path):
    path = tmp_path / "bill.csv"
    path.write_text("billingCycle,cz_container_bill,unblendedCost,currency\n"
                    + "".join(f"2026-10,mobile,{n}.00,USD\n" for n in range(300_000)))

    def rewrite(_rows: int, _read: int | None) -> None:
        with path.open("a") as file:
            file.write("2026-10,mobile,1.00,USD\n")

    with pytest.raises(BillFormatError, match="changed while it was read"):
        total_bill(path, options=ImportOptions(), on_rows=rewrite)
    whole = total_bill(path, options=ImportOptions())
    assert sum((group.amount for group in whole.split_groups.values()), Decimal(0)) > 0


def test_a_period_made_of_one_stray_row_is_allocated_but_flagged_in_the_api_and_the_metrics(setup):
    service, inbox, engine, *_ = setup
    rows = "".join(f"2026-10,mobile,{n}.00,USD\n" for n in range(1, 201))
    (inbox / "october.csv").write_text("billingCycle,cz_container_bill,unblendedCost,currency\n" + rows
                                       + "2026-09,mobile,18.43,USD\n")
    assert service.import_job() and service.allocate_job()
    assert bills_of(engine) == [("2026-09", "18.43"), ("2026-10", "20100.00")]
    runs = TestClient(create_app(engine=engine, registry=CollectorRegistry())).get("/api/v1/runs").json()["runs"]
    assert [(run["period"], run["warnings"]) for run in runs] == [
        ("2026-09", ["2026-09 holds only 1 of the 201 lines of its bill(s); the rest are in other periods: "
                     "stray rows?"]),
        ("2026-10", [])]
    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=engine, job_stats=JobStats()))
    assert {(sample.labels["period"], sample.value) for family in registry.collect()
            if family.name == "cz_bill_stray_rows" for sample in family.samples} == {("2026-09", 1.0), ("2026-10", 0)}


def test_a_period_waits_while_one_of_its_files_cannot_be_imported(setup):
    service, inbox, engine, *_ = setup
    (inbox / "2026-10").mkdir()
    (inbox / "a.csv").write_text(bill("2026-10", amount="100.00"))
    (inbox / "b.csv").write_text(bill("2026-10", amount="10.00"))
    (inbox / "november.csv").write_text(bill("2026-11", amount="1.00"))
    assert service.import_job() and service.allocate_job()
    (inbox / "b.csv").write_text("billingCycle,cz_container_bill,unblendedCost\n")
    (inbox / "a.csv").write_text("broken\n")
    (inbox / "2026-10" / "new.csv").write_text("not a bill\n")
    assert not service.import_job()
    assert service.allocate_job()
    assert [total for period, total in bills_of(engine) if period == "2026-10"] == ["210.00"]
    (inbox / "a.csv").write_text(bill("2026-10", amount="100.00"))
    (inbox / "b.csv").write_text(bill("2026-10", amount="20.00"))
    (inbox / "2026-10" / "new.csv").unlink()
    assert service.import_job() and service.allocate_job()
    assert [total for period, total in bills_of(engine) if period == "2026-10"] == ["210.00", "220.00"]


MONTHS = ("2026-08", "2026-09", "2026-10", "2026-11")
operation = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(MONTHS), st.booleans()),
    st.tuples(st.just("replace"), st.integers(0, 20)),
    st.tuples(st.just("copy"), st.integers(0, 20)),
    st.tuples(st.just("move"), st.integers(0, 20), st.sampled_from(MONTHS)),
    st.tuples(st.just("remove"), st.integers(0, 20)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(operation, min_size=1, max_size=8))
def test_the_stored_bill_of_every_period_follows_the_files_present(tmp_path_factory, operations):
    """After any sequence of files added (dated, or undated in a month folder), rewritten, copied, moved and
    removed, each period's latest run bills exactly the distinct files present for it."""
    root = tmp_path_factory.mktemp("inbox-property")
    inbox = root / "inbox"
    inbox.mkdir()
    (root / "rules.yaml").write_text(RULES)
    engine = open_store(f"sqlite:///{root / 'runs.db'}")
    service = AgentService(settings=Settings(rules_file=root / "rules.yaml", inbox_dir=inbox), engine=engine,
                           job_stats=JobStats(), clock=lambda: datetime(2026, 11, 23, 12, tzinfo=UTC))
    amounts = iter(range(1, 1000))
    for step in operations:
        files = sorted(path for path in inbox.rglob("*.csv"))
        pick = files[step[1] % len(files)] if files and step[0] != "add" else None
        if step[0] == "add":
            _, month, dated = step
            folder = inbox if dated else inbox / month
            folder.mkdir(exist_ok=True)
            amount = next(amounts)
            (folder / f"bill-{amount}.csv").write_text(bill(month, f"{amount}.00") if dated else
                                                      f"unblendedCost,currency,cz_container_bill\n{amount}.00,USD,\n")
        elif pick is None:
            continue
        elif step[0] == "replace":
            pick.write_text(pick.read_text().replace(".00,", f".{next(amounts) % 100:02d},", 1))
        elif step[0] == "copy":
            shutil.copy(pick, pick.with_name(f"copy-{next(amounts)}-{pick.name}"))
        elif step[0] == "move":
            (inbox / step[2]).mkdir(exist_ok=True)
            pick.rename(inbox / step[2] / pick.name)
        else:
            pick.unlink()
        assert service.import_job() and service.allocate_job()
    # Per period, each distinct file content's lines of it: a copy of a file counts once.
    expected: dict[str, dict[str, dict[Path, Decimal]]] = {}
    for path in inbox.rglob("*.csv"):
        content = path.read_text()
        for line in content.splitlines()[1:]:
            cells = line.split(",")
            month = cells[0] if len(cells) == 4 else path.parent.name
            cost = Decimal(cells[2] if len(cells) == 4 else cells[0])
            of_content = expected.setdefault(month, {}).setdefault(content, {})
            of_content[path] = of_content.get(path, Decimal(0)) + cost
    latest = {period: total for period, total in bills_of(engine)}
    present = {month: sum((next(iter(by_path.values())) for by_path in by_content.values()), Decimal(0))
               for month, by_content in expected.items()}
    assert {period: Decimal(total) for period, total in latest.items() if period in present} == present
    if present:
        assert all(Decimal(total) == 0 for period, total in latest.items() if period not in present)
