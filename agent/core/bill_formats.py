"""The bill formats the agent reads, by name, and the bill columns a user may name: the one list of each that the
command line, the rules and the importer share.

Each name has a FormatSpec in agent.bills (its columns, and the marker columns that detect it)."""

from __future__ import annotations

BILL_FORMATS = ("native", "focus", "cur", "cur2", "azure")
# Detect the format from the bill's header.
AUTO_DETECT = "auto"
BILL_FORMAT_CHOICES = (AUTO_DETECT, *BILL_FORMATS)
# The bill columns a user may name instead of the format's guess: the rules' `bill:` keys, ImportOptions'
# `<name>_column` fields and the command line's `--<name>-column` flags.
COLUMN_OVERRIDES = ("cost", "tag", "currency", "sub_account", "workspace", "api_key")


def column_option(column: str) -> str:
    """The ImportOptions field (and command-line destination) of an overridable column."""
    return f"{column}_column"
