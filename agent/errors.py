"""The domain errors: each message names the file, row, column, key or query at fault."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent reports to its user without a traceback."""


class BillFormatError(AgentError):
    """A bill file cannot be read, or one of its rows is invalid."""

    def __init__(self, message: str, *, source: str, row: int | None = None, column: str | None = None) -> None:
        self.source = source
        self.row = row
        self.column = column
        self.reason = message
        where = source
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")


class RulesError(AgentError):
    """The rules file is missing, unreadable or invalid."""


class UsageError(AgentError):
    """The usage table is unreadable or invalid."""


class StoreError(AgentError):
    """The run store cannot be read or written."""


class UsageQueryError(AgentError):
    """Prometheus could not answer a usage query; the message names the query."""


class KubernetesError(AgentError):
    """The Kubernetes API could not be reached or refused a request."""


class SettingsError(AgentError):
    """The configuration file or a CZ_AGENT_* variable is invalid."""
