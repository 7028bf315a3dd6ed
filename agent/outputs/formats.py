"""The report formats and the forecast's dimensions, by name: the lists the command line (which must start at once)
and the writers share."""

from __future__ import annotations

FORMATS = ("csv", "json", "parquet")
# The FOCUS 1.2 export of a stored run (agent.outputs.focus), as Parquet or CSV.
FOCUS_FORMAT = "focus"
# What a forecast may be summed by (besides currency), as `cz-agent forecast --aggregate` and the API name it.
FORECAST_DIMENSIONS = ("company", "service", "category")
