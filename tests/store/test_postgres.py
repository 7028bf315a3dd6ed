"""The run store on a real PostgreSQL: the same reports, runs, explanations and API answers as on SQLite; a
store made by the schema-version-1 code migrates; agents allocating one period at once leave one whole run."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import types
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import inspect, text

from agent.cli import main
from agent.core.manifest import MANIFEST_VERSION, RunManifest
from agent.errors import StoreError
from agent.store.runs import SCHEMA_VERSION, list_runs, load_run, open_store, save_run
from tests.support.fixtures_pg import PostgresServer
from tests.support.store import api_client

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo"
WORKED = REPO / "tests" / "data" / "worked"
STORE_V1 = REPO / "tests" / "data" / "store_v1.py"
CLI_TIMEOUT_SECONDS = 300

# (name, period, bill, rules, usage)
EXAMPLES = [
    ("demo", "2026-10", DEMO / "bill-2026-10.csv", DEMO / "rules.yaml", DEMO / "usage-2026-10.csv"),
    ("worked", "2026-10", WORKED / "bill.csv", WORKED / "rules.yaml", WORKED / "usage.csv"),
]


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'runs.db'}"


def cli_allocate(store_url: str, *, bill: Path, rules: Path, usage: Path, period: str,
                 out: Path) -> subprocess.CompletedProcess:
    """`cz-agent allocate` in its own process, the store given by CZ_AGENT_STORE_URL as a user would."""
    env = {**os.environ, "CZ_AGENT_STORE_URL": store_url}
    return subprocess.run([sys.executable, "-m", "agent.cli", "allocate", "--bill", str(bill), "--rules", str(rules),
                           "--usage", str(usage), "--period", period, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)


def cli_output(store_url: str, args: list[str], capsys: pytest.CaptureFixture) -> str:
    capsys.readouterr()
    assert main(["--store", store_url, *args]) == 0
    return capsys.readouterr().out


def without_created_at(store_url: str, answer: str) -> str:
    """The clock is the only thing allowed to differ between two stores given the same inputs."""
    for run in list_runs(open_store(store_url)):
        answer = answer.replace(run.created_at, "<created_at>")
    return answer


def metrics_without_created_at(store_url: str, exposition: str) -> str:
    """The exposition's samples, those holding a run's creation time (as epoch seconds) masked."""
    created = {datetime.fromisoformat(run.created_at).timestamp() for run in list_runs(open_store(store_url))}
    return "\n".join(f"{s.name} {sorted(s.labels.items())} {'<created_at>' if s.value in created else s.value!r}"
                     for family in text_string_to_metric_families(exposition) for s in family.samples)


def store_views(store_url: str, *, period: str, workdir: Path, capsys: pytest.CaptureFixture) -> dict[str, str]:
    """Everything a user sees of the stored run: CLI report/runs/explain, the API's answers and /metrics."""
    engine = open_store(store_url)
    stored = load_run(engine, list_runs(engine, period=period)[-1].id)
    companies = sorted({row.company for row in stored.rows if row.company})
    views = {}
    for report_format in ("csv", "json"):
        out = workdir / f"report.{report_format}"
        cli_output(store_url, ["report", "--period", period, "--format", report_format, "--out", str(out)], capsys)
        views[f"report {report_format}"] = out.read_text()
    views["runs"] = cli_output(store_url, ["runs"], capsys)
    for company in companies:
        views[f"explain {company}"] = cli_output(store_url, ["explain", "--period", period, "--company", company],
                                                 capsys)
    api = api_client(engine)
    run_id = stored.summary.id
    paths = ["/api/v1/runs", f"/api/v1/runs/{run_id}", "/api/v1/periods",
             f"/api/v1/allocations?period={period}&format=csv",
             f"/api/v1/allocations?period={period}&aggregate=company,service&format=json",
             f"/api/v1/split?period={period}&by=workspace,apikey&format=csv", "/metrics",
             *(f"/api/v1/runs/{run_id}/explain?company={company}" for company in companies)]
    for path in paths:
        response = api.get(path)
        assert response.status_code == 200, (path, response.text)
        views[path] = metrics_without_created_at(store_url, response.text) if path == "/metrics" else response.text
    return {name: without_created_at(store_url, answer) for name, answer in views.items()}


@pytest.mark.parametrize("example", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_postgres_store_gives_the_same_answers_as_sqlite(example, postgres_url: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture):
    _, period, bill, rules, usage = example
    answers = {}
    for name, url in (("sqlite", sqlite_url(tmp_path)), ("postgres", postgres_url)):
        workdir = tmp_path / name
        workdir.mkdir()
        result = cli_allocate(url, bill=bill, rules=rules, usage=usage, period=period, out=workdir / "allocated.csv")
        assert result.returncode == 0, result.stderr
        answers[name] = {"allocate report": (workdir / "allocated.csv").read_text(),
                         **store_views(url, period=period, workdir=workdir, capsys=capsys)}
    assert answers["postgres"].keys() == answers["sqlite"].keys()
    for view, sqlite_answer in answers["sqlite"].items():
        assert answers["postgres"][view] == sqlite_answer, view
    assert answers["sqlite"]["allocate report"] == answers["sqlite"]["report csv"]


# ------------------------------------------------------------------------------------------- migration


def store_v1() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("store_v1", STORE_V1)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def copy_runs_as_v1(source_url: str, target_url: str) -> list[int]:
    """Write the source's runs into a new store with the version-1 code, as an existing installation has them."""
    v1 = store_v1()
    source, target = open_store(source_url), v1.open_store(target_url)
    copied = []
    for summary in list_runs(source):
        stored = load_run(source, summary.id)
        allocation = types.SimpleNamespace(period=summary.period, rows=stored.rows, contributions=stored.contributions,
                                           tag_lines=stored.tag_lines)
        copied.append(v1.save_run(target, allocation=allocation, rejected=stored.rejected, splits=stored.splits,
                                  manifest=unversioned(summary.manifest), report_sha256=summary.report_sha256,
                                  created_at=summary.created_at, tool_version=summary.tool_version))
    target.dispose()
    return copied


def unversioned(manifest: RunManifest) -> dict[str, object]:
    """A manifest as a version 1 store held it: before the version field."""
    return {key: value for key, value in manifest.to_json().items() if key != "version"}


def stored_runs(url: str) -> list:
    engine = open_store(url)
    return [load_run(engine, summary.id) for summary in list_runs(engine)]


def schema_of(url: str) -> dict[str, object]:
    with open_store(url).connect() as connection:
        inspector = inspect(connection)
        return {table: (sorted(c["name"] for c in inspector.get_columns(table)),
                        sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                               for i in inspector.get_indexes(table)))
                for table in sorted(inspector.get_table_names())}


@pytest.fixture
def three_runs(tmp_path: Path) -> str:
    """A scratch SQLite store with two runs of 2026-10 (different rules) and one of 2026-09."""
    url = f"sqlite:///{tmp_path / 'scratch.db'}"
    changed_rules = tmp_path / "rules.yaml"
    changed_rules.write_text((WORKED / "rules.yaml").read_text().replace("alpha: 50", "alpha: 60"))
    september = tmp_path / "bill-2026-09.csv"
    september.write_text((WORKED / "bill.csv").read_text().replace("2026-10", "2026-09"))
    for bill, rules, period in ((WORKED / "bill.csv", WORKED / "rules.yaml", "2026-10"),
                                (september, WORKED / "rules.yaml", "2026-09"),
                                (WORKED / "bill.csv", changed_rules, "2026-10")):
        assert main(["--store", url, "allocate", "--bill", str(bill), "--rules", str(rules), "--usage",
                     str(WORKED / "usage.csv"), "--period", period, "--out", str(tmp_path / "r.csv")]) == 0
    assert len(list_runs(open_store(url))) == 3
    return url


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_version_1_store_is_migrated_and_keeps_its_runs(backend: str, three_runs: str, postgres_url: str,
                                                          tmp_path: Path):
    target = sqlite_url(tmp_path) if backend == "sqlite" else postgres_url
    assert copy_runs_as_v1(three_runs, target) == [1, 2, 3]
    fresh = sqlite_url(tmp_path / "fresh") if backend == "sqlite" else f"{postgres_url}_fresh"
    if backend == "postgres":
        with open_store(postgres_url).connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text(f'CREATE DATABASE "{fresh.rsplit("/", 1)[1]}"'))
    before = stored_runs(three_runs)

    assert stored_runs(target) == before
    with open_store(target).connect() as connection:
        assert connection.execute(text("SELECT version FROM schema_version")).scalar_one() == SCHEMA_VERSION
        numbers = connection.execute(text("SELECT id, period_sequence FROM runs ORDER BY id")).all()
        manifests = connection.execute(text("SELECT manifest FROM runs ORDER BY id")).scalars().all()
    assert [tuple(n) for n in numbers] == [(1, 1), (2, 1), (3, 2)]
    assert [json.loads(manifest)["version"] for manifest in manifests] == [MANIFEST_VERSION] * 3
    assert schema_of(target) == schema_of(fresh)

    engine = open_store(target)
    latest = load_run(engine, 3)
    allocation = types.SimpleNamespace(period="2026-10", rows=latest.rows, contributions=latest.contributions,
                                       tag_lines=latest.tag_lines)
    manifest = dataclasses.replace(latest.summary.manifest, rules_digest="restated")
    new_id = save_run(engine, allocation=allocation, rejected=[], splits=latest.splits, daily=latest.daily_costs,
                      manifest=manifest, report_sha256=latest.summary.report_sha256,
                      created_at="2026-11-01T00:00:00+00:00", tool_version="test")
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT period_sequence FROM runs WHERE id = {new_id}")).scalar_one() == 3


def test_a_store_newer_than_the_agent_is_refused_in_one_line(tmp_path: Path):
    url = sqlite_url(tmp_path)
    with open_store(url).begin() as connection:
        connection.execute(text("UPDATE schema_version SET version = 99"))
    with pytest.raises(StoreError) as refused:
        open_store(url)
    assert "schema version 99" in str(refused.value) and "upgrade the agent" in str(refused.value)
    assert "\n" not in str(refused.value)


# ----------------------------------------------------------------------------------------- concurrency

AGENTS = 3
ROUNDS = 4


def start_allocating(url: str, *, out: Path) -> subprocess.Popen:
    env = {**os.environ, "CZ_AGENT_STORE_URL": url}
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "allocate", "--bill", str(WORKED / "bill.csv"),
                             "--rules", str(WORKED / "rules.yaml"), "--usage", str(WORKED / "usage.csv"),
                             "--period", "2026-10", "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_one_whole_run(url: str, *, report: str) -> None:
    engine = open_store(url)
    found = list_runs(engine)
    assert len(found) == 1, [(r.id, r.created_at) for r in found]
    stored = load_run(engine, found[0].id)
    assert len(stored.rows) == found[0].manifest.report.rows
    assert len(report.splitlines()) == len(stored.rows) + 1


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_agents_allocating_one_period_at_once_leave_one_whole_run(backend: str, postgres_server: PostgresServer,
                                                                  tmp_path: Path):
    for round_number in range(ROUNDS):
        workdir = tmp_path / f"round-{round_number}"
        workdir.mkdir()
        url = sqlite_url(workdir) if backend == "sqlite" else postgres_server.create_database()
        agents = [start_allocating(url, out=workdir / f"report-{i}.csv") for i in range(AGENTS)]
        outcomes = [(agent.wait(timeout=CLI_TIMEOUT_SECONDS), agent.communicate()) for agent in agents]
        assert [code for code, _ in outcomes] == [0] * AGENTS, [err for _, (_, err) in outcomes]
        reports = {(workdir / f"report-{i}.csv").read_text() for i in range(AGENTS)}
        assert len(reports) == 1
        assert_one_whole_run(url, report=reports.pop())
        run_lines = {line.split("·")[0].strip() for _, (out, _) in outcomes for line in out.splitlines()
                     if line.startswith("run ")}
        assert run_lines == {"run 1"}, run_lines
