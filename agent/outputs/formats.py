"""The report formats, by name: the one list the command line and the report writers share."""

from __future__ import annotations

FORMATS = ("csv", "json", "parquet")
# The FOCUS 1.2 export of a stored run (agent.outputs.focus), as Parquet or CSV.
FOCUS_FORMAT = "focus"
