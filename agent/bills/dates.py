"""The billing month and the day of date and timestamp texts, as bills write them, without time-zone conversion."""

from __future__ import annotations

import datetime

import pandas as pd

from agent.core.periods import MONTH_NUMBER

_MONTH = rf"(?:{MONTH_NUMBER})"
_DAY = r"(?:0[1-9]|[12]\d|3[01])"
# ISO `2024-09-01 00:00:00`, `2024-09-01T00:00:00.000Z`, `2024-09-01`, `2024-09`; compact `20240901`;
# US `9/1/2023` (Azure EA). Whatever follows the date (time, offset) is ignored: the literal date counts.
_DATE = (
    rf"^(?:(?P<iso_year>\d{{4}})-(?P<iso_month>{_MONTH})(?:-(?P<iso_day>{_DAY})(?:[T ].*)?)?"
    rf"|(?P<compact_year>\d{{4}})(?P<compact_month>{_MONTH})(?P<compact_day>{_DAY})"
    rf"|(?P<us_month>0?[1-9]|1[0-2])/(?P<us_day>0?[1-9]|[12]\d|3[01])/(?P<us_year>\d{{4}})(?:[T ].*)?)$"
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


def days(dates: pd.Series) -> pd.Series:
    """`YYYY-MM-DD` of each date text; missing where the text is missing, not a date, has no day (`2024-09`) or
    names a day its month does not have (`2024-02-30`, which `months` still reads as February)."""
    distinct = pd.Series(dates.dropna().unique(), dtype="str")
    parts = distinct.str.extract(_DATE)
    year = parts["iso_year"].fillna(parts["compact_year"]).fillna(parts["us_year"])
    month = parts["iso_month"].fillna(parts["compact_month"]).fillna(parts["us_month"])
    day = parts["iso_day"].fillna(parts["compact_day"]).fillna(parts["us_day"])
    day_of_date = pd.Series([_day(*fields) for fields in zip(year, month, day)], index=distinct.to_numpy(),
                            dtype="str")
    return dates.map(day_of_date).astype("str")


def _day(year: object, month: object, day: object) -> str | None:
    if not all(isinstance(field, str) for field in (year, month, day)):
        return None
    try:
        return datetime.date(int(year), int(month), int(day)).isoformat()
    except ValueError:
        return None
