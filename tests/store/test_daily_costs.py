"""A run's daily costs in the store: written with the run, read back exactly, carried by the API's run document, and
given to the runs of a store made by the schema-version-4 code from their tag lines."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import threading
import types
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from agent.bills import ImportOptions, total_bill
from agent.bills.taglines import daily_costs_of
from agent.core.model import DailyCost, StoredRun
from agent.errors import StoreError
from agent.store.remote import RemoteRuns
from agent.store.runs import (SCHEMA_VERSION, list_runs, load_daily_costs, load_run, open_store, run_document,
                              run_from_document)
from tests.support.store import allocate_run, api_client

ROOT = Path(__file__).resolve().parents[2]
FOCUS = ROOT / "tests" / "data" / "bills" / "real" / "focus-1.0-sample.csv"
DEMO = ROOT / "demo"
STORE_V4 = ROOT / "tests" / "data" / "store_v4.py"
# Untagged lines of two sub-accounts claimed by attribution rules: one tag value ("") over several tag lines.
RULES = """\
tag_key: application
companies: {acme: 60, globex: 40}
services: {BrightPathMatrix: {acme: 1}, claimed: {globex: 1}}
attribution:
  - match: {sub_account: Atlas Orion}
    service: claimed
  - match: {sub_account: Orion Zenith}
    company: acme
"""


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, list[int]]:
    """A store with two runs: the FOCUS sample's September (dated, both kinds, attribution rules) and the demo's
    October (native: no charge date, rejected rows)."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    ids = [allocate_run(url, bill=FOCUS, period="2024-09", out=tmp_path / "focus.csv", rules=rules),
           allocate_run(url, bill=DEMO / "bill-2026-10.csv", period="2026-10", out=tmp_path / "demo.csv",
                        rules=DEMO / "rules.yaml", usage=DEMO / "usage-2026-10.csv")]
    return url, ids


def per_tag(amounts: list[tuple[str, str, Decimal, int]]) -> dict[tuple[str, str], tuple[Decimal, int]]:
    sums: dict[tuple[str, str], tuple[Decimal, int]] = {}
    for currency, tag, amount, lines in amounts:
        total, count = sums.get((currency, tag), (Decimal(0), 0))
        sums[(currency, tag)] = (total + amount, count + lines)
    return sums


def test_the_stored_daily_costs_are_the_bills_and_add_up_to_the_tag_lines(store):
    url, (focus_run, demo_run) = store
    engine = open_store(url)

    focus = load_daily_costs(engine, focus_run)

    bill = total_bill(FOCUS, options=ImportOptions(period="2024-09", tag_key="application"))
    assert focus == daily_costs_of([bill], tag_lines=load_run(engine, focus_run).tag_lines)
    assert any(cost.amount.as_tuple().exponent <= -11 for cost in focus), "amounts of 11 decimals, kept exactly"
    for run_id in (focus_run, demo_run):
        stored = load_run(engine, run_id)
        assert stored.daily_costs == load_daily_costs(engine, run_id)
        assert per_tag([(c.currency, c.tag, c.amount, c.line_count) for c in stored.daily_costs]) == per_tag(
            [(t.currency, t.tag, t.amount, t.line_count) for t in stored.tag_lines])
    assert len({line.rule for line in load_run(engine, focus_run).tag_lines if line.tag == ""}) == 3
    assert {(cost.day, cost.kind) for cost in load_daily_costs(engine, demo_run)} == {(None, "usage")}


def test_the_same_bill_again_is_the_same_run_with_the_same_daily_costs(store, tmp_path: Path):
    url, (focus_run, _) = store
    engine = open_store(url)
    daily = load_daily_costs(engine, focus_run)

    allocate_run(url, bill=FOCUS, period="2024-09", out=tmp_path / "again.csv", rules=tmp_path / "rules.yaml")

    assert [run.id for run in list_runs(engine, period="2024-09")] == [focus_run]
    assert load_daily_costs(engine, focus_run) == daily


def test_no_such_run_has_no_daily_costs(store):
    with pytest.raises(StoreError, match="no stored run with id 99"):
        load_daily_costs(open_store(store[0]), 99)


def test_the_run_document_carries_the_daily_costs_exactly(store):
    url, ids = store
    engine = open_store(url)
    client = api_client(engine)
    for run_id in ids:
        answer = client.get(f"/api/v1/runs/{run_id}/document")
        assert answer.status_code == 200
        document = answer.json()

        assert run_from_document(document) == load_run(engine, run_id)
        assert len(document["daily_costs"]) == len(load_daily_costs(engine, run_id)) > 0


class _Documents(BaseHTTPRequestHandler):
    """An agent's API reduced to one run document, as `documents` holds it."""

    documents: dict[str, object] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps(self.documents[self.path]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def agent_serving() -> Iterator[tuple[str, dict[str, object]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Documents)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", _Documents.documents
    finally:
        server.shutdown()
        server.server_close()


def test_a_client_rebuilds_the_run_with_its_daily_costs_and_refuses_a_document_without(store, agent_serving):
    url, (focus_run, _) = store
    stored = load_run(open_store(url), focus_run)
    served, documents = agent_serving
    documents[f"/api/v1/runs/{focus_run}/document"] = run_document(stored)
    older = {name: value for name, value in run_document(stored).items() if name != "daily_costs"}
    documents["/api/v1/runs/7/document"] = older

    assert RemoteRuns(served).load_run(focus_run) == stored
    with pytest.raises(StoreError, match="without its daily costs .* upgrade the agent"):
        RemoteRuns(served).load_run(7)


# ------------------------------------------------------------------------------------------- migration


def store_v4() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("store_v4", STORE_V4)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def schema_of(url: str) -> dict[str, object]:
    with open_store(url).connect() as connection:
        inspector = inspect(connection)
        return {table: sorted(column["name"] for column in inspector.get_columns(table))
                for table in sorted(inspector.get_table_names())}


def test_a_version_4_store_gets_its_runs_daily_costs_from_their_tag_lines(store, tmp_path: Path):
    url, ids = store
    source = open_store(url)
    v4 = store_v4()
    target_url = f"sqlite:///{tmp_path / 'v4.db'}"
    target = v4.open_store(target_url)
    before: list[StoredRun] = [load_run(source, run_id) for run_id in ids]
    for stored in before:
        summary = stored.summary
        allocation = types.SimpleNamespace(period=summary.period, rows=stored.rows,
                                           contributions=stored.contributions, tag_lines=stored.tag_lines)
        v4.save_run(target, allocation=allocation, rejected=stored.rejected, splits=stored.splits,
                    manifest=summary.manifest, report_sha256=summary.report_sha256, created_at=summary.created_at,
                    tool_version=summary.tool_version)
    target.dispose()
    with open_store(target_url).connect() as connection:
        assert connection.execute(text("SELECT version FROM schema_version")).scalar_one() == SCHEMA_VERSION == 5

    migrated = [load_run(open_store(target_url), summary.id) for summary in list_runs(open_store(target_url))]

    assert [dataclasses.replace(run, daily_costs=[]) for run in migrated] == [
        dataclasses.replace(run, daily_costs=[]) for run in before]
    for run in migrated:
        assert run.daily_costs == [DailyCost(currency, tag, None, "usage", amount, lines) for (currency, tag), (
            amount, lines) in sorted(per_tag([(t.currency, t.tag, t.amount, t.line_count)
                                              for t in run.tag_lines]).items())]
    assert schema_of(target_url) == schema_of(f"sqlite:///{tmp_path / 'fresh.db'}")
