"""The billing month of date and timestamp texts, as bills write them, without time-zone conversion."""

from __future__ import annotations

import pandas as pd

from agent.core.periods import MONTH_NUMBER

_MONTH = rf"(?:{MONTH_NUMBER})"
_DAY = r"(?:0[1-9]|[12]\d|3[01])"
# ISO `2024-09-01 00:00:00`, `2024-09-01T00:00:00.000Z`, `2024-09-01`, `2024-09`; compact `20240901`;
# US `9/1/2023` (Azure EA). Whatever follows the date (time, offset) is ignored: the literal date counts.
_DATE = (
    rf"^(?:(?P<iso_year>\d{{4}})-(?P<iso_month>{_MONTH})(?:-{_DAY}(?:[T ].*)?)?"
    rf"|(?P<compact_year>\d{{4}})(?P<compact_month>{_MONTH}){_DAY}"
    rf"|(?P<us_month>0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])/(?P<us_year>\d{{4}})(?:[T ].*)?)$"
)


def months(dates: pd.Series) -> pd.Series:
    """`YYYY-MM` of each date text; missing where the text is missing or not a date."""
    # Bills repeat a few hundred distinct timestamps over millions of rows: parse each one once.
    distinct = pd.Series(dates.dropna().unique(), dtype="str")
    parts = distinct.str.extract(_DATE)
    year = parts["iso_year"].fillna(parts["compact_year"]).fillna(parts["us_year"])
    month = parts["iso_month"].fillna(parts["compact_month"]).fillna(parts["us_month"]).str.zfill(2)
    month_of_date = pd.Series((year + "-" + month).to_numpy(), index=distinct.to_numpy(), dtype="str")
    return dates.map(month_of_date).astype("str")
