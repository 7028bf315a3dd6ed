"""The bill formats the agent reads, by name: the one list the command line, the rules and the importer share.

Each name has a FormatSpec in agent.bills (its columns, and the marker columns that detect it)."""

from __future__ import annotations

BILL_FORMATS = ("native", "focus", "cur", "cur2", "azure")
# Detect the format from the bill's header.
AUTO_DETECT = "auto"
BILL_FORMAT_CHOICES = (AUTO_DETECT, *BILL_FORMATS)
