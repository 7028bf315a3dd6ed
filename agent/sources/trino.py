"""The client of a Trino server holding bill tables: a table's columns, and a query's rows in batches.

It answers agent.bills.pushdown's TableQueries; the SQL is that module's.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

from agent.core.sql import columns_query
from agent.errors import BillFormatError

# Rows fetched from the server per round trip.
BATCH_ROWS = 10_000


class TrinoQueries:
    """Queries of one Trino server (http or https URL), as `user`, with a password over https if given."""

    def __init__(self, url: str, *, user: str, password: str | None = None, timeout_seconds: float = 300) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BillFormatError(f"the Trino URL {url!r} is not http(s)://host[:port]", source=url)
        self._url = url
        self._options = {
            "host": parts.hostname,
            "port": parts.port or (443 if parts.scheme == "https" else 80),
            "http_scheme": parts.scheme,
            "user": user,
            "source": "cz-allocation-agent",
            "request_timeout": timeout_seconds,
            # The server itself ends a query running longer (the client's timeout bounds one request only).
            "session_properties": {"query_max_run_time": f"{max(1, round(timeout_seconds))}s"},
        }
        self._password = password

    def columns(self, table: str) -> list[tuple[str, str]]:
        found = [(column, data_type) for batch in self._batches(columns_query(table), source=table)
                 for column, data_type in batch]
        if not found:
            raise BillFormatError(f"no such table on {self._url} (or no column of it is visible to user "
                                  f"{self._options['user']!r})", source=table)
        return found

    def batches(self, sql: str) -> Iterator[list[tuple]]:
        return self._batches(sql, source=self._url)

    def _batches(self, sql: str, *, source: str) -> Iterator[list[tuple]]:
        import trino
        from requests import RequestException

        auth = None if self._password is None else trino.auth.BasicAuthentication(self._options["user"],
                                                                                  self._password)
        try:
            with trino.dbapi.connect(**self._options, auth=auth) as connection:
                cursor = connection.cursor()
                cursor.execute(sql)
                while batch := cursor.fetchmany(BATCH_ROWS):
                    yield [tuple(row) for row in batch]
        except trino.exceptions.TrinoQueryError as e:
            raise BillFormatError(f"Trino refused the query: {e.error_name}: {e.message}", source=source) from e
        except (trino.exceptions.TrinoExternalError, trino.exceptions.HttpError, RequestException) as e:
            raise BillFormatError(f"cannot query Trino at {self._url}: {e}", source=source) from e

