"""The API against its own published OpenAPI document (schemathesis, in-process over ASGI, on a store holding
the demo month's real run): no server error, no response outside the schema. Then a real `cz-agent serve`
process: oversized requests are refused with 4xx by the server or the app, and a wrong token with 401."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from agent.cli import main
from agent.service.api import MAX_QUERY_BYTES
from tests.support.served import served_agent
from tests.support.store import api_app

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo"
TOKEN = "schemathesis-token-81c2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = int(os.environ.get("CZ_AGENT_FUZZ_EXAMPLES", "25"))
START_SECONDS = 60


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("schemathesis")
    url = f"sqlite:///{directory / 'runs.db'}"
    assert main(["--store", url, "allocate", "--bill", str(DEMO / "bill-2026-10.csv"), "--rules",
                 str(DEMO / "rules.yaml"), "--usage", str(DEMO / "usage-2026-10.csv"), "--period", "2026-10",
                 "--out", str(directory / "report.csv")]) == 0
    return url


@pytest.fixture(scope="module")
def api_schema(demo_store: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", api_app(demo_store, api_token=TOKEN), headers=AUTH)


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="CZ_AGENT_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=list(HealthCheck))


def test_no_server_error_and_no_schema_violation(api_schema: schemathesis.BaseSchema) -> None:
    """Each operation of the document in turn (schemathesis.pytest.from_fixture does not run on pytest 9)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {operation.path for operation in operations} >= {"/api/v1/allocations", "/api/v1/runs/{run_id}/explain"}
    for operation in operations:
        @FUZZ
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error, response_schema_conformance])

        call()


# ------------------------------------------------------------------------------------ a served process


@pytest.fixture(scope="module")
def served(demo_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("served")
    agent_settings = {"CZ_AGENT_STORE_URL": demo_store, "CZ_AGENT_RULES_FILE": str(DEMO / "rules.yaml"),
                      "CZ_AGENT_INBOX_DIR": str(directory / "inbox"), "CZ_AGENT_API_TOKEN": TOKEN,
                      "CZ_AGENT_ALLOCATION_INTERVAL_SECONDS": "3600", "CZ_AGENT_INBOX_POLL_SECONDS": "3600"}
    with served_agent(agent_settings, log_path=directory / "agent.log", ready="/healthz",
                      timeout=START_SECONDS) as agent:
        yield agent.address


def request(address: str, path: str, *, headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, bytes]:
    """One request on a fresh connection; (status, body). A server that answers and closes still counts."""
    host, port = address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.integration
def test_served_agent_refuses_a_wrong_token_and_serves_the_right_one(served: str) -> None:
    assert request(served, "/api/v1/runs")[0] == 401
    assert request(served, "/api/v1/runs", headers={"Authorization": "Bearer nope"})[0] == 401
    status, body = request(served, "/api/v1/runs", headers=AUTH)
    assert status == 200 and b'"period":"2026-10"' in body


@pytest.mark.integration
@pytest.mark.parametrize("what, path, headers, body, refused_by", [
    ("query over the app limit", "/api/v1/runs?x=" + "a" * (MAX_QUERY_BYTES + 100), AUTH, None, {414}),
    # Past h11's 16 KiB buffer uvicorn answers 400 or, while the client is still sending, drops the connection.
    ("query over the server's buffer", "/api/v1/runs?x=" + "a" * 200_000, AUTH, None, {400, 414, 431, None}),
    ("one header of 200 KiB", "/api/v1/runs", {**AUTH, "X-Pad": "a" * 200_000}, None, {400, 431, None}),
    ("many headers", "/api/v1/runs", {**AUTH, **{f"X-Pad-{i}": "a" * 100 for i in range(400)}}, None,
     {400, 431, None}),
    ("a 2 MB body", "/api/v1/runs", AUTH, b"a" * 2_000_000, {413}),
])
def test_served_agent_refuses_oversized_requests(served: str, what: str, path: str, headers: dict[str, str],
                                                 body: bytes | None, refused_by: set[int]) -> None:
    try:
        status, _ = request(served, path, headers=headers, body=body)
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        status = None  # the server closed the connection before answering: refused, and nothing served
    assert status in refused_by, f"{what}: got {status}"
    assert request(served, "/healthz")[0] == 200, f"the agent still serves after {what}"
