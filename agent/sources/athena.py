"""The client of Amazon Athena holding bill tables: a table's columns, and a query's rows in pages.

Athena speaks Trino's SQL (engine version 3), so it answers agent.bills.pushdown's TableQueries with the very
SQL Trino gets. A query is started, waited for and read page by page through Athena's JSON API
(StartQueryExecution, GetQueryExecution, GetQueryResults), each request signed with Signature Version 4.
Credentials come from the AWS default chain of the AWS Common Runtime (awscrt): the environment, the shared
config files, a web identity token (IRSA), the container credentials endpoint (EKS Pod Identity, ECS) and the
instance metadata service, in that order.
"""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

from agent.core.sql import columns_query
from agent.errors import BillFormatError

# Rows per GetQueryResults page: Athena's maximum.
PAGE_ROWS = 1000
# Waits between two looks at a running query: from the first to the last, doubling.
FIRST_POLL_SECONDS = 0.2
LAST_POLL_SECONDS = 2.0
# Athena's answers that mean "ask again later", and how often a request is tried before giving up.
RETRIED_ERRORS = ("ThrottlingException", "TooManyRequestsException", "ServiceUnavailable", "InternalServerException")
REQUEST_TRIES = 5
# Result types Athena sends as text that the push-down reads as numbers.
INTEGER_TYPES = ("tinyint", "smallint", "integer", "bigint")
DONE_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")
# Athena's longest QueryString, in bytes (its API reference).
MAX_QUERY_BYTES = 262_144
XML_CODE = re.compile(r"<Code>([^<]{1,200})</Code>")
XML_MESSAGE = re.compile(r"<Message>(?:<!\[CDATA\[)?([^<\]]{0,2000})(?:\]\]>)?</Message>")


class AthenaQueries:
    """Queries run by Athena in `region`, in `workgroup`, their results written to `output_location` (an s3://
    prefix; None where the workgroup sets one). `endpoint_url` points at another endpoint (a VPC endpoint)."""

    def __init__(self, *, region: str, workgroup: str = "primary", output_location: str | None = None,
                 endpoint_url: str | None = None, timeout_seconds: float = 600) -> None:
        self._endpoint = endpoint_url or f"https://athena.{region}.amazonaws.com"
        parts = urlsplit(self._endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BillFormatError(f"the Athena endpoint {self._endpoint!r} is not http(s)://host[:port]",
                                  source=self._endpoint)
        self._host = parts.netloc
        self._region = region
        self._workgroup = workgroup
        self._output_location = output_location
        self._timeout_seconds = timeout_seconds
        self._provider = None
        self._session = None

    def columns(self, table: str) -> list[tuple[str, str]]:
        found = [(column, data_type) for batch in self._batches(columns_query(table), source=table)
                 for column, data_type in batch]
        if not found:
            raise BillFormatError(f"no such table in Athena's workgroup {self._workgroup!r} ({self._region}), or "
                                  "no column of it is visible to the agent's role", source=table)
        return found

    def batches(self, sql: str) -> Iterator[list[tuple]]:
        return self._batches(sql, source=f"athena:{self._workgroup}")

    def _batches(self, sql: str, *, source: str) -> Iterator[list[tuple]]:
        execution = self._start(sql, source=source)
        self._wait(execution, source=source)
        token = None
        first = True
        while True:
            page = self._call("GetQueryResults", {"QueryExecutionId": execution, "MaxResults": PAGE_ROWS,
                                                  **({"NextToken": token} if token else {})}, source=source)
            result = page.get("ResultSet", {})
            info = result.get("ResultSetMetadata", {}).get("ColumnInfo", [])
            rows = [[cell.get("VarCharValue") for cell in row.get("Data", [])] for row in result.get("Rows", [])]
            if first and rows and rows[0] == [column.get("Label", column.get("Name")) for column in info]:
                # The first row of a SELECT's first page holds the column labels.
                rows = rows[1:]
            first = False
            if rows:
                yield [_typed(row, info) for row in rows]
            token = page.get("NextToken")
            if not token:
                return

    def _start(self, sql: str, *, source: str) -> str:
        if len(sql.encode()) > MAX_QUERY_BYTES:
            raise BillFormatError(f"the query is {len(sql.encode()):,} bytes, over Athena's {MAX_QUERY_BYTES:,}: the "
                                  "rejected values it names are too many or too long (check the rules' bill: section)",
                                  source=source)
        # The token makes a retried start (after throttling) the same query, not a second one.
        request: dict[str, object] = {"QueryString": sql, "WorkGroup": self._workgroup,
                                      "ClientRequestToken": uuid.uuid4().hex}
        if self._output_location is not None:
            request["ResultConfiguration"] = {"OutputLocation": self._output_location}
        return self._call("StartQueryExecution", request, source=source)["QueryExecutionId"]

    def _wait(self, execution: str, *, source: str) -> None:
        deadline = time.monotonic() + self._timeout_seconds
        pause = FIRST_POLL_SECONDS
        while True:
            status = self._call("GetQueryExecution", {"QueryExecutionId": execution},
                                source=source)["QueryExecution"]["Status"]
            if status["State"] == "SUCCEEDED":
                return
            if status["State"] in DONE_STATES:
                reason = status.get("StateChangeReason") or status.get("AthenaError", {}).get("ErrorMessage", "")
                raise BillFormatError(f"Athena query {execution} {status['State'].lower()}: {reason}", source=source)
            if time.monotonic() + pause > deadline:
                self._call("StopQueryExecution", {"QueryExecutionId": execution}, source=source)
                raise BillFormatError(f"Athena query {execution} still {status['State'].lower()} after "
                                      f"{self._timeout_seconds:g} s (bill_query_timeout_seconds): stopped",
                                      source=source)
            time.sleep(pause)
            pause = min(pause * 2, LAST_POLL_SECONDS)

    def _call(self, action: str, payload: dict[str, object], *, source: str) -> dict:
        """One Athena API request, signed; retried with backoff while Athena asks to slow down."""
        from requests import RequestException

        body = json.dumps(payload).encode()
        attempt = 0
        while True:
            try:
                response = self._http().post(self._endpoint + "/", data=body, headers=self._signed(action, body),
                                             timeout=60)
            except RequestException as e:
                raise BillFormatError(f"cannot reach Athena at {self._endpoint}: {e}", source=source) from e
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError as e:
                    raise BillFormatError(f"Athena's answer to {action} at {self._endpoint} is not JSON: "
                                          f"{response.text[:200]!r}", source=source) from e
            error, message = _error_of(response)
            if error not in RETRIED_ERRORS or attempt == REQUEST_TRIES - 1:
                raise BillFormatError(f"Athena refused {action} (HTTP {response.status_code} {error}): {message}",
                                      source=source)
            time.sleep(FIRST_POLL_SECONDS * 2 ** attempt)
            attempt += 1

    def _signed(self, action: str, body: bytes) -> dict[str, str]:
        from awscrt import auth, exceptions, http

        if self._provider is None:
            self._provider = auth.AwsCredentialsProvider.new_default_chain()
        request = http.HttpRequest("POST", "/", http.HttpHeaders([
            ("host", self._host), ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", f"AmazonAthena.{action}")]), io.BytesIO(body))
        config = auth.AwsSigningConfig(region=self._region, service="athena", credentials_provider=self._provider)
        try:
            auth.aws_sign_request(request, config).result(timeout=60)
        except exceptions.AwsCrtError as e:
            raise BillFormatError(f"no AWS credentials for Athena ({e.name}: {e.message}): give the pod a role "
                                  "(IRSA or EKS Pod Identity) or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                                  source=self._endpoint) from e
        return dict(request.headers)

    def _http(self):
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session


def _typed(row: list[str | None], info: list[dict]) -> tuple:
    """A result row with Athena's text turned back into the numbers its column types say."""
    return tuple(int(value) if value is not None and column.get("Type") in INTEGER_TYPES else value
                 for value, column in zip(row, info, strict=True))


def _error_of(response) -> tuple[str, str]:
    """Athena's error type and message, from its JSON body; from an AWS XML error body (what a gateway in front
    of it may answer); else the start of the text."""
    try:
        error = response.json()
    except ValueError:
        code, message = XML_CODE.search(response.text), XML_MESSAGE.search(response.text)
        if code is None:
            return "", response.text[:500]
        return code.group(1), "" if message is None else message.group(1).strip()
    kind = str(error.get("__type", "")).rsplit("#", 1)[-1]
    return kind, str(error.get("Message") or error.get("message") or "")
