"""The stored runs of an agent reached over its HTTP API (`cz-agent --server URL`), read as a local store is read:
the same summaries and the same whole runs, so that every command prints what it would print on that store."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from agent.core.model import RunSummary, StoredRun
from agent.errors import StoreError
from agent.store.runs import run_from_document, summary_from_document


class RemoteRuns:
    """The runs of the agent at `url`, asked with the API token if one is given."""

    def __init__(self, url: str, *, token: str | None = None, timeout_seconds: float = 60) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StoreError(f"--server {url!r} is not http(s)://host[:port]")
        self._url = url.rstrip("/")
        self._token = token
        self._timeout = timeout_seconds

    def list_runs(self, *, period: str | None = None) -> list[RunSummary]:
        listed = self._get("/api/v1/runs", {"period": period} if period else {})["runs"]
        return [summary_from_document(self._get(f"/api/v1/runs/{run['id']}")) for run in listed]

    def latest_run_id(self, *, period: str) -> int:
        found = self._latest_id(period)
        if found is None:
            raise StoreError(f"no stored run for period {period} at {self._url}")
        return found

    def latest_run(self, period: str) -> StoredRun | None:
        """The period's latest run, None when it has none."""
        found = self._latest_id(period)
        return None if found is None else self.load_run(found)

    def _latest_id(self, period: str) -> int | None:
        listed = self._get("/api/v1/runs", {"period": period})["runs"]
        return max((run["id"] for run in listed), default=None)

    def load_run(self, run_id: int) -> StoredRun:
        document = self._get(f"/api/v1/runs/{run_id}/document")
        if "daily_costs" not in document:
            # An agent older than this client: a run without its daily costs would forecast nothing, silently.
            raise StoreError(f"{self._url}: run {run_id} comes without its daily costs (the agent is older than "
                             "this client): upgrade the agent")
        return run_from_document(document)

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = self._url + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self._timeout) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as e:
            raise StoreError(f"{url}: {_refusal(e)}") from e
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise StoreError(f"cannot read runs from {self._url}: {getattr(e, 'reason', None) or e}") from e


def _refusal(error: urllib.error.HTTPError) -> str:
    """The agent's reason for an error answer, with a hint where the token is missing."""
    if error.code == 401:
        return f"refused (401): {error_detail(error)}; give the agent's API token with --token-file"
    return f"refused ({error.code}): {error_detail(error)}"


def error_detail(error: urllib.error.HTTPError) -> str:
    """The `detail` of the agent's error answer (FastAPI's), else the HTTP reason."""
    try:
        return str(json.loads(error.read(64 * 1024))["detail"])
    except (ValueError, KeyError, TypeError, OSError):
        return error.reason
