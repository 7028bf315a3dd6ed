"""The domain errors, one tree under AgentError: each message names the file, row, column, key or query at fault."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent reports to its user without a traceback."""


# ------------------------------------------------------------------------------------------------ inputs


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


class FastReadError(AgentError):
    """Arrow's CSV reader cannot read this file as pandas would: the importer reads it again row by row.

    Never shown to a user: agent.bills.importer catches it and falls back to the slower reader."""


class InvalidTextError(AgentError):
    """A Parquet text cell that is not UTF-8 (Parquet does not check its strings).

    Never shown to a user: agent.bills.reader turns it into a BillFormatError naming the file."""

    def __init__(self, *, column: str, row: int) -> None:
        self.column = column
        self.row = row
        super().__init__(f"row {row}, column {column!r}: the text is not valid UTF-8")


class ManifestError(AgentError):
    """A provider's delivery manifest in the bill inbox is unreadable or lacks a field; `period` is the billing
    period of the folder it governs, which cannot be allocated until the manifest is whole."""

    def __init__(self, message: str, *, period: str) -> None:
        self.period = period
        super().__init__(message)


class RulesError(AgentError):
    """The rules file is missing, unreadable or invalid."""


class UsageError(AgentError):
    """The usage table is unreadable or invalid."""


class UsageQueryError(AgentError):
    """Prometheus could not answer a usage query; the message names the query."""


class KubernetesError(AgentError):
    """The Kubernetes API could not be reached or refused a request."""


class LeaseConflict(KubernetesError):
    """Another candidate wrote the Lease first (HTTP 409): leader election lost this round, nothing failed."""


class SettingsError(AgentError):
    """The configuration file or a CZ_AGENT_* variable is invalid."""


class PeriodError(AgentError, ValueError):
    """A text is not a billing period (`YYYY-MM`), or a month is out of range.

    Also a ValueError, so that validators (pydantic's, argparse's) take it as an invalid value."""


class SplitError(AgentError):
    """The requested split is invalid (unknown, repeated or missing dimensions, a bad precision)."""


# ------------------------------------------------------------------------------------------ runs, outputs


class RejectedRowsError(AgentError):
    """`--strict` and some bill rows were rejected."""


class DuplicateLinesError(AgentError):
    """The same line identity in two bill files of one period."""


class StoreError(AgentError):
    """The run store cannot be read or written."""


class NoCostError(AgentError):
    """A stored run has no cost for the company (and service) to explain; `companies` are those it has."""

    def __init__(self, message: str, *, companies: list[str]) -> None:
        self.companies = companies
        super().__init__(message)


class StatementError(AgentError):
    """The statement cannot be made: unknown company, a run of another period, clashing output paths."""


# ----------------------------------------------------------------------------------------------- service


class UploadError(AgentError):
    """A bill upload the inbox cannot take (its name, its period or its content), or an upload that failed."""


class BodyTooLarge(AgentError):
    """A chunked request body went past the API's limit (answered 413)."""
