"""The bill inbox: a directory where bills are dropped; each file is known by its content hash and the
billing periods it holds."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import Engine

from agent.bills import ImportOptions
from agent.core.periods import Period
from agent.errors import AgentError
from agent.store.runs import known_bill_periods, remember_bill_periods

log = logging.getLogger(__name__)

BILL_SUFFIXES = (".csv", ".gz", ".parquet", ".xlsx")


@dataclass(frozen=True)
class InboxBill:
    path: Path
    sha256: str
    periods: tuple[str, ...]


@dataclass(frozen=True)
class InboxScan:
    bills: list[InboxBill]
    # File -> why it could not be imported; the rest of the inbox is still used.
    failures: dict[Path, str]

    def for_period(self, period: str) -> list[InboxBill]:
        return [bill for bill in self.bills if period in bill.periods]

    def periods(self) -> set[str]:
        return {period for bill in self.bills for period in bill.periods}


class Inbox:
    """Scans the directory; a file is parsed for its periods only when its content is new."""

    def __init__(self, directory: Path, *, engine: Engine, options: ImportOptions) -> None:
        self._directory = directory
        self._engine = engine
        self._options = options
        self._hashes: dict[Path, tuple[int, int, str]] = {}

    def scan(self) -> InboxScan:
        # Created when missing: a fresh volume has no inbox yet, and waiting for one helps nobody.
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AgentError(f"{self._directory}: cannot use as the bill inbox: {e.strerror or e}") from e
        bills, failures = [], {}
        for path in bill_files(self._directory):
            try:
                bills.append(self._bill(path))
            except AgentError as e:
                failures[path] = str(e)
                log.error("inbox: cannot import %s: %s", path, e)
        return InboxScan(bills=bills, failures=failures)

    def _bill(self, path: Path) -> InboxBill:
        sha256 = self._sha256(path)
        periods = known_bill_periods(self._engine, sha256)
        if periods is None:
            periods = bill_periods(path, options=self._options)
            remember_bill_periods(self._engine, sha256=sha256, periods=periods)
            log.info("inbox: new bill %s (%s) for %s", path, sha256[:12], ", ".join(periods) or "no period")
        return InboxBill(path=path, sha256=sha256, periods=tuple(periods))

    def _sha256(self, path: Path) -> str:
        # Hash again only when the size or modification time changed: bills can be large.
        stat = path.stat()
        cached = self._hashes.get(path)
        if cached and cached[:2] == (stat.st_size, stat.st_mtime_ns):
            return cached[2]
        from agent.bills.reader import file_sha256

        sha256 = file_sha256(path)
        self._hashes[path] = (stat.st_size, stat.st_mtime_ns, sha256)
        return sha256


def bill_files(directory: Path) -> list[Path]:
    """Bill files under the directory, sorted; hidden files (uploads in progress) and anything resolving
    outside the directory (a symlink out of it) are left alone."""
    root = directory.resolve()
    found = []
    for path in sorted(directory.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        if not path.is_file() or not path.name.lower().endswith(BILL_SUFFIXES):
            continue
        if not path.resolve().is_relative_to(root):
            log.warning("inbox: %s points outside the inbox; ignored", path)
            continue
        found.append(path)
    return found


def bill_periods(path: Path, *, options: ImportOptions) -> list[str]:
    """The billing periods of a bill's rows; a YYYY-MM in the file's path stands for bills without dates."""
    from agent.bills import total_bill

    hint = Period.last_in(str(path))
    imported = total_bill(path, options=replace(options, period=None if hint is None else str(hint)))
    return sorted(period for period in imported.periods() if period)
