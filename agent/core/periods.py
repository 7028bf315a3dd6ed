"""The billing period: a calendar month, written `YYYY-MM`, that starts and ends at midnight UTC."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, UTC, datetime

from agent.errors import PeriodError

# A month number, 01 to 12; shared with the parsing of dates in bills (agent.bills.dates).
MONTH_NUMBER = r"0[1-9]|1[0-2]"
# The whole text of a period. The API publishes this pattern in its OpenAPI document and validates queries with it.
PERIOD_PATTERN = rf"^\d{{4}}-({MONTH_NUMBER})$"
# ASCII digits only: Python's `\d` would take any script's digits (`٢٠٢٦-10`) for a year.
_PERIOD = re.compile(PERIOD_PATTERN, re.ASCII)
# A period inside a longer text, such as a bill's path (`bills/2026-10/aws.csv`): not part of a longer number.
_PERIOD_IN_TEXT = re.compile(rf"(?<!\d)\d{{4}}-(?:{MONTH_NUMBER})(?!\d)", re.ASCII)


@dataclass(frozen=True, order=True)
class Period:
    """One billing month; ordered in time. Its bounds are half-open, [start, end), in UTC."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not (MINYEAR <= self.year <= MAXYEAR and 1 <= self.month <= 12):
            raise PeriodError(f"no such month: year {self.year}, month {self.month}")

    @classmethod
    def parse(cls, text: str) -> Period:
        """The period written `YYYY-MM` (`2026-10`); PeriodError for any other text."""
        if isinstance(text, str) and _PERIOD.fullmatch(text) and int(text[:4]) >= MINYEAR:
            return cls(int(text[:4]), int(text[5:]))
        raise PeriodError(f"expected a month as YYYY-MM, got {text!r}")

    @classmethod
    def of(cls, moment: datetime) -> Period:
        """The period holding an aware instant, as seen in UTC."""
        if moment.tzinfo is None:
            raise ValueError(f"the instant {moment.isoformat()} has no time zone")
        utc = moment.astimezone(UTC)
        return cls(utc.year, utc.month)

    @classmethod
    def last_in(cls, text: str) -> Period | None:
        """The last period written in a text (a file's path, say), or None when it holds none."""
        found = [match.group() for match in _PERIOD_IN_TEXT.finditer(text) if int(match.group()[:4]) >= MINYEAR]
        return cls.parse(found[-1]) if found else None

    @property
    def start(self) -> datetime:
        """The first instant of the month, midnight UTC."""
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant after the month: the start of the next one (exclusive)."""
        return self.next().start

    def previous(self) -> Period:
        if self.month == 1:
            return Period(self.year - 1, 12)
        return Period(self.year, self.month - 1)

    def next(self) -> Period:
        if self.month == 12:
            return Period(self.year + 1, 1)
        return Period(self.year, self.month + 1)

    def contains(self, moment: datetime) -> bool:
        """Whether an aware instant falls within [start, end)."""
        return self.start <= moment < self.end

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"
