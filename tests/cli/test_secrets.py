"""Known secret strings configured everywhere the agent takes one (API token, store URL password, Prometheus
bearer token and password, kube token) never appear in what it writes: JSON logs at DEBUG, error messages,
/metrics, the run manifest or the API, including runs that fail on those very credentials."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.store.runs import open_store
from tests.support.ports import free_port
from tests.support.store import api_client

# Each test runs the agent as a process (python -m agent.cli serve --once, runs or allocate).
pytestmark = pytest.mark.integration

WORKED = Path(__file__).resolve().parents[1] / "data" / "worked"
SECRETS = {
    "api_token": "apitok-7f3e9b1d",
    "store_password": "pgpass-52ac0e8f",
    "prometheus_bearer": "prombearer-91d4c7aa",
    "prometheus_password": "prompass-0b6e2f53",
    "prometheus_url_password": "urlpass-3c8d1e70",
    "kube_token": "kubetok-e45f9a26",
}


def leaked(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


def run_agent(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def secret_environment(tmp_path: Path) -> dict[str, str]:
    """Every credential set, each pointing at a closed port so that the runs fail on them."""
    closed = free_port()
    token_file = tmp_path / "prom-token"
    token_file.write_text(SECRETS["prometheus_bearer"])
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "prod",
        "clusters": [{"name": "prod", "cluster": {"server": f"https://127.0.0.1:{closed}",
                                                   "insecure-skip-tls-verify": True}}],
        "users": [{"name": "agent", "user": {"token": SECRETS["kube_token"]}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "agent"}}]}))
    rules = yaml.safe_load((WORKED / "rules.yaml").read_text())
    rules["clusters"] = {"prod": {"prometheus_url": f"http://agent:{SECRETS['prometheus_url_password']}"
                                                    f"@127.0.0.1:{closed}", "kube_context": "prod"}}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    inbox = tmp_path / "inbox" / "2026-10"
    inbox.mkdir(parents=True)
    shutil.copy(WORKED / "bill.csv", inbox / "bill.csv")
    return {**os.environ, "CZ_AGENT_LOG_FORMAT": "json", "CZ_AGENT_LOG_LEVEL": "DEBUG",
            "CZ_AGENT_STORE_URL": f"sqlite:///{tmp_path / 'runs.db'}",
            "CZ_AGENT_API_TOKEN": SECRETS["api_token"], "CZ_AGENT_RULES_FILE": str(tmp_path / "rules.yaml"),
            "CZ_AGENT_INBOX_DIR": str(tmp_path / "inbox"), "CZ_AGENT_KUBECONFIG": str(kubeconfig),
            "CZ_AGENT_PROMETHEUS_BEARER_TOKEN_FILE": str(token_file), "CZ_AGENT_PROMETHEUS_USERNAME": "agent",
            "CZ_AGENT_PROMETHEUS_PASSWORD": SECRETS["prometheus_password"], "CZ_AGENT_PROMETHEUS_RETRIES": "0",
            "CZ_AGENT_PROMETHEUS_TIMEOUT_SECONDS": "5", "CZ_AGENT_KUBE_TIMEOUT_SECONDS": "5",
            "CZ_AGENT_PORT": str(free_port()), "CZ_AGENT_HOST": "127.0.0.1"}


def test_failing_live_runs_log_no_secret_even_at_debug(tmp_path: Path) -> None:
    env = secret_environment(tmp_path)
    served = run_agent(["serve", "--once"], env, tmp_path)
    output = served.stdout + served.stderr
    assert '"level": "debug"' in output or '"level": "info"' in output, output[-2000:]
    assert "effective configuration" in output and "**********" in output, "the settings were logged, masked"
    assert "failed" in output.lower() or "error" in output.lower(), "the run failed on the dead credentials"
    assert leaked(output) == [], output[-3000:]
    allocate = run_agent(["allocate", "--bill", str(tmp_path / "inbox" / "2026-10" / "bill.csv"), "--rules",
                          str(tmp_path / "rules.yaml"), "--period", "2026-10", "--out", str(tmp_path / "r.csv")],
                         env, tmp_path)
    assert allocate.returncode == 1 and "error:" in allocate.stderr
    assert leaked(allocate.stdout + allocate.stderr) == [], allocate.stderr


def test_a_store_url_password_stays_out_of_errors_and_logs(tmp_path: Path) -> None:
    env = secret_environment(tmp_path)
    env["CZ_AGENT_STORE_URL"] = f"postgresql+psycopg://agent:{SECRETS['store_password']}@127.0.0.1:{free_port()}/runs"
    for args in (["runs"], ["serve", "--once"]):
        result = run_agent(args, env, tmp_path)
        assert result.returncode != 0, args
        assert leaked(result.stdout + result.stderr) == [], (args, result.stderr[-3000:])


def test_metrics_manifest_and_api_carry_no_secret(tmp_path: Path) -> None:
    env = secret_environment(tmp_path)
    usage = ["--usage", str(WORKED / "usage.csv")]
    result = run_agent(["allocate", "--bill", str(WORKED / "bill.csv"), "--rules", str(tmp_path / "rules.yaml"),
                        *usage, "--period", "2026-10", "--out", str(tmp_path / "r.csv")], env, tmp_path)
    assert result.returncode == 0, result.stderr
    engine = open_store(env["CZ_AGENT_STORE_URL"])
    client = api_client(engine, api_token=SECRETS["api_token"])
    auth = {"Authorization": f"Bearer {SECRETS['api_token']}"}
    bodies = [client.get("/metrics").text]
    bodies += [client.get(path, headers=auth).text for path in ("/api/v1/runs", "/api/v1/runs/1", "/api/v1/periods",
                                                                "/openapi.json")]
    bodies += [client.get("/api/v1/runs", headers={"Authorization": "Bearer " + SECRETS["api_token"][:-1]}).text]
    assert "cz_allocation_cost" in bodies[0] and '"manifest"' in bodies[2]
    assert leaked("\n".join(bodies)) == []


@pytest.mark.parametrize("where", ["environment", "file"])
@pytest.mark.parametrize("token", ["", "  \n"])
def test_an_empty_api_token_fails_closed_at_start(tmp_path: Path, where: str, token: str) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CZ_AGENT_PORT": str(free_port()),
           "CZ_AGENT_STORE_URL": f"sqlite:///{tmp_path / 'runs.db'}", "CZ_AGENT_INBOX_DIR": str(tmp_path / "inbox"),
           "CZ_AGENT_RULES_FILE": str(WORKED / "rules.yaml")}
    if where == "environment":
        env["CZ_AGENT_API_TOKEN"] = token
    else:
        (tmp_path / "token").write_text(token)
        env["CZ_AGENT_API_TOKEN_FILE"] = str(tmp_path / "token")
    started = run_agent(["serve"], env=env, cwd=tmp_path)
    assert started.returncode == 1
    [line] = started.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: api_token") and "is set but empty" in line
