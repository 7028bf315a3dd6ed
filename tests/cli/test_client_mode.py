"""`cz-agent --server URL`: the reading commands run against a served agent's API print and write exactly what they
print and write from the agent's own store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.served import served_agent
from tests.support.store import allocate_run

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo"
WORKED = ROOT / "tests" / "data" / "worked"
TOKEN = "client-mode-token"


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Iterator[tuple[str, str, Path, list[int]]]:
    """A served agent over a store of three runs: (its URL, the store's URL, a token file, the run ids)."""
    directory = tmp_path_factory.mktemp("client-mode")
    store = f"sqlite:///{directory / 'runs.db'}"
    ids = [allocate_run(store, bill=DEMO / "bill-2026-10.csv", period="2026-10", out=directory / "demo.csv",
                        rules=DEMO / "rules.yaml", usage=DEMO / "usage-2026-10.csv")]
    for scale in (1, 3):
        bill = directory / f"bill-2026-09-{scale}.csv"
        bill.write_text("billingCycle,cz_container_bill,unblendedCost,currency\n"
                        f"2026-09,mobile,{10 * scale}.10,USD\n2026-09,legacy-crm,7.5,USD\n2026-09,,3,USD\n")
        ids.append(allocate_run(store, bill=bill, period="2026-09", out=directory / f"sep-{scale}.csv"))
    token_file = directory / "token"
    token_file.write_text(TOKEN + "\n")
    settings = {"CZ_AGENT_STORE_URL": store, "CZ_AGENT_API_TOKEN": TOKEN,
                "CZ_AGENT_RULES_FILE": str(DEMO / "rules.yaml"), "CZ_AGENT_INBOX_DIR": str(directory / "inbox"), "CZ_AGENT_ALLOCATION_INTERVAL_SECONDS": "3600",
                "CZ_AGENT_INBOX_POLL_SECONDS": "3600"}
    with served_agent(settings, log_path=directory / "agent.log", ready="/healthz") as served:
        yield served.url, store, token_file, ids


def cz_agent(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CZ_AGENT_")}
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def commands(ids: list[int]) -> list[list[str]]:
    demo_run, first, second = ids
    return [
        ["runs"],
        ["runs", "--period", "2026-09"],
        ["report", "--period", "2026-10", "--out", "report.csv"],
        ["report", "--run", str(first), "--out", "report.json"],
        ["report", "--period", "2026-10", "--out", "focus.parquet", "--format", "focus"],
        ["explain", "--period", "2026-10", "--company", "acme"],
        ["explain", "--run", str(demo_run), "--company", "globex", "--service", "mobile"],
        ["explain", "--period", "2026-10", "--company", ""],
        ["statement", "--period", "2026-10", "--company", "initech", "--out", "initech.html"],
        ["diff", str(first), str(second)],
        ["split", "--period", "2026-10", "--by", "workspace,apikey", "--out", "split.csv"],
        ["split", "--period", "2026-09", "--run", str(first), "--by", "subaccount", "--precision", "4", "--out",
         "split.csv"],
        ["forecast", "--period", "2026-10"],
        ["forecast", "--period", "2026-09", "--aggregate", "company", "--out", "forecast.csv"],
    ]


@pytest.mark.parametrize("index", range(14))
def test_a_command_against_the_agent_prints_and_writes_what_it_does_on_the_store(agent, tmp_path, index) -> None:
    url, store, token_file, ids = agent
    command = commands(ids)[index]
    (tmp_path / "local").mkdir()
    (tmp_path / "remote").mkdir()

    local = cz_agent("--store", store, *command, cwd=tmp_path / "local")
    remote = cz_agent("--server", url, "--token-file", str(token_file), *command, cwd=tmp_path / "remote")

    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout and local.stdout.strip()
    written = sorted(path.name for path in (tmp_path / "local").iterdir())
    assert sorted(path.name for path in (tmp_path / "remote").iterdir()) == written
    for name in written:
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


def test_without_the_token_the_agent_refuses_and_the_error_says_how_to_give_it(agent, tmp_path) -> None:
    url, _, _, _ = agent
    refused = cz_agent("--server", url, "runs", cwd=tmp_path)
    assert refused.returncode == 1
    assert "refused (401)" in refused.stderr and "--token-file" in refused.stderr


def test_a_missing_run_is_named(agent, tmp_path) -> None:
    url, _, token_file, _ = agent
    missing = cz_agent("--server", url, "--token-file", str(token_file), "explain", "--run", "999", "--company",
                       "acme", cwd=tmp_path)
    assert missing.returncode == 1 and "no stored run with id 999" in missing.stderr


@pytest.mark.parametrize("command", [["allocate", "--rules", "r.yaml", "--period", "2026-10", "--out", "x.csv"],
                                     ["close", "--period", "2026-10"]])
def test_commands_that_write_a_store_refuse_a_server(command, tmp_path) -> None:
    refused = cz_agent("--server", "http://127.0.0.1:9", *command, cwd=tmp_path)
    assert refused.returncode == 1
    assert "--server reads an agent's stored runs" in refused.stderr
    assert not list(tmp_path.iterdir())


def test_an_agent_that_does_not_answer_is_a_clear_error(tmp_path) -> None:
    from tests.support.ports import free_port

    gone = cz_agent("--server", f"http://127.0.0.1:{free_port()}", "runs", cwd=tmp_path)
    assert gone.returncode == 1 and "cannot read runs from http://127.0.0.1:" in gone.stderr


def test_the_split_of_a_stored_run_is_the_split_of_its_bill(agent, tmp_path) -> None:
    _, store, _, _ = agent
    by = ["--period", "2026-10", "--by", "subaccount,workspace,apikey"]
    of_run = cz_agent("--store", store, "split", *by, "--out", "run.csv", cwd=tmp_path)
    of_bill = cz_agent("split", "--bill", str(DEMO / "bill-2026-10.csv"), *by, "--out", "bill.csv", cwd=tmp_path)
    assert of_run.returncode == 0, of_run.stderr
    assert of_bill.returncode == 0, of_bill.stderr
    assert (tmp_path / "run.csv").read_bytes() == (tmp_path / "bill.csv").read_bytes()
    assert "reconciled" in of_run.stdout and "run 1 (2026-10): 3004 input rows" in of_run.stdout
