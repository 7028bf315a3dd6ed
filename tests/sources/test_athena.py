"""The Athena client against a real moto server that checks every request's SigV4 signature (IAM enforced).

Athena cannot be reached from here, and moto does not run SQL: it answers a query with the results queued for it.
So the answers are the real ones: each query the push-down sends is first run on the real Trino (Athena's engine),
its result written as Athena writes results (text cells, typed column info, the labels as the first row), and
queued in moto; the same push-down then runs through Athena's API and must give what the file gives, having sent
the very same SQL in the same order.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import requests

from agent.bills import ImportOptions, total_bill
from agent.bills.pushdown import BillTable, total_table
from agent.core.rules import Rules
from agent.errors import BillFormatError, SettingsError
from agent.pipeline import table_queries
from agent.settings import Settings
from agent.sources.athena import AthenaQueries
from tests.bills.test_pushdown import outcome, same_report_from_table
from tests.support.fixtures_objectstore import running_server
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "bills"
DEMO = Path(__file__).resolve().parents[2] / "demo"
REGION = "us-east-1"
ACCOUNT = "123456789012"
# Requests moto takes before it enforces IAM: the set-up below makes exactly these.
SETUP_ACTIONS = 6
ALLOW_ALL = json.dumps({"Version": "2012-10-17",
                       "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
TRUST_ANYONE = json.dumps({"Version": "2012-10-17",
                           "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})
# Nothing on this machine may lend the client other credentials than the test gives.
NO_AMBIENT_AWS = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent",
                  "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


@dataclass(frozen=True)
class Athena:
    """moto serving Athena, with an IAM user's key and an assumed role's temporary credentials it accepts."""

    endpoint: str
    user_key: dict[str, str]
    role_credentials: dict[str, str]

    def queue(self, results: list[dict]) -> None:
        """Answers for the next queries started, in order."""
        response = requests.post(f"{self.endpoint}/moto-api/static/athena/query-results", timeout=10,
                                 json={"account_id": ACCOUNT, "region": REGION, "results": results})
        response.raise_for_status()

    def set_transition(self, transition: dict | None) -> None:
        """How moto moves a query's state: None for its default (one state per look)."""
        if transition is None:
            response = requests.post(f"{self.endpoint}/moto-api/state-manager/unset-transition", timeout=10,
                                     json={"model_name": "athena::execution"})
        else:
            response = requests.post(f"{self.endpoint}/moto-api/state-manager/set-transition", timeout=10,
                                     json={"model_name": "athena::execution", "transition": transition})
        response.raise_for_status()

    def client(self, **options) -> AthenaQueries:
        return AthenaQueries(region=REGION, endpoint_url=self.endpoint, output_location="s3://athena-results/",
                             **options)


def _unsigned(endpoint: str, service: str, params: dict[str, str], version: str) -> str:
    """One of the set-up requests moto takes before it enforces IAM (it routes them by the credential scope)."""
    scope = f"AWS4-HMAC-SHA256 Credential=SETUP/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, " \
            "Signature=0"
    response = requests.post(endpoint + "/", data={**params, "Version": version}, headers={"Authorization": scope},
                             timeout=10)
    response.raise_for_status()
    return response.text


def _xml(text: str, element: str) -> str:
    return re.search(f"<{element}>(.*?)</{element}>", text).group(1)


@pytest.fixture(scope="module")
def athena(object_store_tools, tmp_path_factory) -> Iterator[Athena]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto-athena") / "moto.log"
    command = ["env", f"INITIAL_NO_AUTH_ACTION_COUNT={SETUP_ACTIONS}", object_store_tools["moto-server"], "-H",
               "127.0.0.1", "-p", str(port)]
    for _ in running_server(command, port=port, log_path=log_path, name="moto (Athena, IAM enforced)"):
        iam = "2010-05-08"
        _unsigned(endpoint, "iam", {"Action": "CreateUser", "UserName": "agent"}, iam)
        key = _unsigned(endpoint, "iam", {"Action": "CreateAccessKey", "UserName": "agent"}, iam)
        _unsigned(endpoint, "iam", {"Action": "PutUserPolicy", "UserName": "agent", "PolicyName": "all",
                                    "PolicyDocument": ALLOW_ALL}, iam)
        _unsigned(endpoint, "iam", {"Action": "CreateRole", "RoleName": "agent",
                                    "AssumeRolePolicyDocument": TRUST_ANYONE}, iam)
        _unsigned(endpoint, "iam", {"Action": "PutRolePolicy", "RoleName": "agent", "PolicyName": "all",
                                    "PolicyDocument": ALLOW_ALL}, iam)
        role = _unsigned(endpoint, "sts", {"Action": "AssumeRole", "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/agent",
                                           "RoleSessionName": "pod"}, "2011-06-15")
        yield Athena(endpoint=endpoint,
                     user_key={"AWS_ACCESS_KEY_ID": _xml(key, "AccessKeyId"),
                               "AWS_SECRET_ACCESS_KEY": _xml(key, "SecretAccessKey")},
                     role_credentials={"AccessKeyId": _xml(role, "AccessKeyId"),
                                       "SecretAccessKey": _xml(role, "SecretAccessKey"),
                                       "Token": _xml(role, "SessionToken"), "Expiration": _xml(role, "Expiration")})


@pytest.fixture
def aws_env(monkeypatch) -> Iterator[pytest.MonkeyPatch]:
    """An environment without any AWS credential but what the test sets."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in NO_AMBIENT_AWS.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


class RecordedTrino:
    """TableQueries answered by the real Trino, each query and its result kept as Athena would return it."""

    def __init__(self, trino) -> None:
        self._trino = trino
        self.sql: list[str] = []
        self.results: list[dict] = []

    def columns(self, table: str) -> list[tuple[str, str]]:
        from agent.core.sql import columns_query

        return [tuple(row) for batch in self.batches(columns_query(table)) for row in batch]

    def batches(self, sql: str) -> Iterator[list[tuple]]:
        connection = self._trino.connect()
        try:
            cursor = connection.cursor()
            cursor.execute(sql)
            rows = cursor.fetchall()
            labels = [column[0] for column in cursor.description]
            types = [column[1].split("(")[0] for column in cursor.description]
        finally:
            connection.close()
        self.sql.append(sql)
        self.results.append({
            "column_info": [{"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": label,
                             "Label": label, "Type": kind, "Precision": 0, "Scale": 0, "Nullable": "UNKNOWN",
                             "CaseSensitive": True} for label, kind in zip(labels, types, strict=True)],
            "rows": [{"Data": [{"VarCharValue": label} for label in labels]},
                     *({"Data": [{} if value is None else {"VarCharValue": str(value)} for value in row]}
                       for row in rows)],
        })
        yield from ([tuple(row) for row in rows[start:start + 1000]] for start in range(0, len(rows), 1000))


def sent_queries(client: AthenaQueries) -> list[str]:
    """The SQL of every query moto was asked to run, oldest first (its ids come newest last)."""
    listed = client._call("ListQueryExecutions", {}, source="test")["QueryExecutionIds"]
    return [client._call("GetQueryExecution", {"QueryExecutionId": execution}, source="test")
            ["QueryExecution"]["Query"] for execution in listed]


@pytest.mark.parametrize(("bill", "period"), [("focus.csv", "2024-09"), ("cur2.csv", None), ("bad.csv", "2024-09"),
                                              ("azure.csv", None)])
def test_a_bill_table_read_through_athena_gives_what_the_file_gives(trino, athena, aws_env, bill, period) -> None:
    options = ImportOptions(period=period, default_currency="USD", untagged=True)
    table = trino.table("athena", bill.removesuffix(".csv"), [DATA / bill], format="CSV")
    recorded = RecordedTrino(trino)
    from_trino = total_table(recorded, BillTable(engine="trino", table=table), options=options)
    athena.queue(recorded.results)
    for name, value in athena.user_key.items():
        aws_env.setenv(name, value)
    client = athena.client()
    already_sent = len(sent_queries(client))

    from_athena = total_table(client, BillTable(engine="athena", table=table), options=options)

    assert outcome(from_athena) == outcome(from_trino) == outcome(total_bill(DATA / bill, options=options))
    assert sent_queries(client)[already_sent:] == recorded.sql
    if bill == "bad.csv":
        assert len(recorded.sql) == 3, "a rejected key text makes a second query for its lines"


def test_results_over_many_pages_arrive_whole(trino, athena, aws_env) -> None:
    rows = trino.execute("SELECT x FROM UNNEST(sequence(1, 2500)) AS t(x)")
    athena.queue([{"column_info": [{"Name": "x", "Label": "x", "Type": "integer"}],
                   "rows": [{"Data": [{"VarCharValue": "x"}]},
                            *({"Data": [{"VarCharValue": str(x)}]} for (x,) in rows)]}])
    for name, value in athena.user_key.items():
        aws_env.setenv(name, value)

    got = [row for batch in athena.client().batches("SELECT x FROM UNNEST(sequence(1, 2500)) AS t(x)")
           for row in batch]

    assert got == [(x,) for x in range(1, 2501)]


def test_credentials_come_from_the_pod_identity_endpoint(athena, aws_env, tmp_path) -> None:
    tokens = []

    class PodIdentityAgent(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            tokens.append(self.headers.get("Authorization"))
            body = json.dumps(athena.role_credentials).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    agent = HTTPServer(("127.0.0.1", 0), PodIdentityAgent)
    threading.Thread(target=agent.serve_forever, daemon=True).start()
    token = tmp_path / "eks-pod-identity-token"
    token.write_text("projected-token")
    aws_env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{agent.server_port}/v1/credentials")
    aws_env.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token))
    athena.queue([{"column_info": [{"Name": "column_name", "Label": "column_name", "Type": "varchar"},
                                   {"Name": "data_type", "Label": "data_type", "Type": "varchar"}],
                   "rows": [{"Data": [{"VarCharValue": "column_name"}, {"VarCharValue": "data_type"}]},
                            {"Data": [{"VarCharValue": "billedcost"}, {"VarCharValue": "decimal(38,10)"}]}]}])
    try:
        assert athena.client().columns("awsdatacatalog.bills.focus") == [("billedcost", "decimal(38,10)")]
    finally:
        agent.shutdown()
    assert tokens and set(tokens) == {"projected-token"}


def test_a_wrong_secret_is_refused_naming_athenas_reason(athena, aws_env) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", athena.user_key["AWS_ACCESS_KEY_ID"])
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(BillFormatError, match="Athena refused StartQueryExecution .*SignatureDoesNotMatch"):
        athena.client().columns("awsdatacatalog.bills.focus")


def test_no_credentials_at_all_is_a_clear_error(athena, aws_env) -> None:
    with pytest.raises(BillFormatError, match="no AWS credentials for Athena"):
        athena.client().columns("awsdatacatalog.bills.focus")


def test_a_query_longer_than_athena_takes_is_refused_before_it_is_sent(athena, aws_env) -> None:
    for name, value in athena.user_key.items():
        aws_env.setenv(name, value)
    client = athena.client()
    sent = len(sent_queries(client))
    with pytest.raises(BillFormatError, match="over Athena's 262,144"):
        list(client.batches("SELECT '" + "x" * 262_144 + "'"))
    assert len(sent_queries(client)) == sent


def test_an_unknown_workgroup_is_refused(athena, aws_env) -> None:
    for name, value in athena.user_key.items():
        aws_env.setenv(name, value)
    with pytest.raises(BillFormatError, match="WorkGroup does not exist"):
        athena.client(workgroup="no-such-group").columns("awsdatacatalog.bills.focus")


def test_a_query_running_past_the_timeout_is_stopped(athena, aws_env) -> None:
    for name, value in athena.user_key.items():
        aws_env.setenv(name, value)
    athena.set_transition({"progression": "manual", "times": 10_000})
    client = athena.client(timeout_seconds=1)
    try:
        with pytest.raises(BillFormatError, match=r"still queued after 1 s \(bill_query_timeout_seconds\): stopped"):
            client.columns("awsdatacatalog.bills.focus")
    finally:
        athena.set_transition(None)
    last = client._call("ListQueryExecutions", {}, source="test")["QueryExecutionIds"][-1]
    state = client._call("GetQueryExecution", {"QueryExecutionId": last}, source="test")
    assert state["QueryExecution"]["Status"]["State"] == "CANCELLED"


def test_allocate_from_an_athena_table_writes_the_same_report_as_from_the_file(trino, athena, tmp_path) -> None:
    table = trino.table("athena", "demo_allocate", [DEMO / "bill-2026-10.csv"], format="CSV")
    rules = Rules.model_validate({**_yaml(DEMO / "rules.yaml"), "bill": {"engine": "athena", "table": table}})
    recorded = RecordedTrino(trino)
    total_table(recorded, BillTable(engine="trino", table=table), options=_options(rules))
    athena.queue(recorded.results)
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env |= NO_AMBIENT_AWS | athena.user_key | {"AWS_REGION": REGION, "CZ_AGENT_ATHENA_ENDPOINT_URL": athena.endpoint,
                                               "CZ_AGENT_ATHENA_OUTPUT_LOCATION": "s3://athena-results/"}
    same_report_from_table(tmp_path, engine="athena", table=table, env=env)


def test_athena_without_a_region_is_a_settings_error(aws_env) -> None:
    rules = Rules.model_validate({**_yaml(DEMO / "rules.yaml"),
                                  "bill": {"engine": "athena", "table": "awsdatacatalog.bills.cur"}})
    with pytest.raises(SettingsError, match="CZ_AGENT_ATHENA_REGION"):
        table_queries(rules, Settings())
    aws_env.setenv("AWS_REGION", "eu-west-1")
    assert isinstance(table_queries(rules, Settings()), AthenaQueries)


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _options(rules: Rules) -> ImportOptions:
    from agent.core.bill_limits import BillLimits
    from agent.pipeline import import_options_for

    return import_options_for(rules, period="2026-10", limits=BillLimits())
