"""The bill inbox: a directory where bills are dropped; each file is known by its content hash and the
billing periods it holds."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from sqlalchemy import Engine

from agent.bills import ImportOptions
from agent.core.periods import Period
from agent.errors import AgentError
from agent.store.runs import known_bill_periods, remember_bill_periods

log = logging.getLogger(__name__)

BILL_SUFFIXES = (".csv", ".gz", ".parquet", ".xlsx")
# Modification times this recent are not trusted to tell a later change apart (coarse file system clocks).
RACY_NANOSECONDS = 2_000_000_000


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
    # Period -> the failing files that held lines of it (at their last good reading, or by their path's period):
    # allocating it without them would drop their lines from the bill, so it waits for them.
    blocked: dict[str, list[Path]] = field(default_factory=dict)

    def for_period(self, period: str) -> list[InboxBill]:
        return [bill for bill in self.bills if period in bill.periods]

    def periods(self) -> set[str]:
        return {period for bill in self.bills for period in bill.periods}


class Inbox:
    """Scans the directory. A file is read again only when its size, modification time or inode changed; its
    periods come from its content, the period its path names and the import options (remembered in the store
    under that reading, so a restart does not parse it again)."""

    def __init__(self, directory: Path, *, engine: Engine, options: ImportOptions) -> None:
        self._directory = directory
        self._engine = engine
        self.options = options
        self._known: dict[Path, tuple[tuple[int, int, int], InboxBill]] = {}

    def scan(self) -> InboxScan:
        # Created when missing: a fresh volume has no inbox yet, and waiting for one helps nobody.
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AgentError(f"{self._directory}: cannot use as the bill inbox: {e.strerror or e}") from e
        bills, failures, blocked = [], {}, {}
        paths = bill_files(self._directory)
        for path in paths:
            try:
                bills.append(self._bill(path))
            except AgentError as e:
                failures[path] = str(e)
                log.error("inbox: cannot import %s: %s", path, e)
                for period in self._last_periods(path):
                    blocked.setdefault(period, []).append(path)
        self._known = {path: known for path, known in self._known.items() if path in set(paths)}
        return InboxScan(bills=bills, failures=failures, blocked=blocked)

    def _last_periods(self, path: Path) -> set[str]:
        """The periods a file that cannot be read now held when it last could, and the period its path names."""
        known = self._known.get(path)
        hint = Period.last_in(str(path.relative_to(self._directory)))
        return set(known[1].periods if known else ()) | ({str(hint)} if hint else set())

    def _bill(self, path: Path) -> InboxBill:
        from agent.bills.reader import file_sha256

        try:
            stat = path.stat()
            identity = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
            known = self._known.get(path)
            if known is not None and known[0] == identity:
                return known[1]
            sha256 = file_sha256(path)
        except OSError as e:
            raise AgentError(f"{path}: cannot read: {e.strerror or e}") from e
        hint = Period.last_in(str(path.relative_to(self._directory)))
        reading = reading_key(sha256, hint=hint, options=self.options)
        periods = known_bill_periods(self._engine, reading)
        if periods is None:
            periods = bill_periods(path, hint=hint, options=self.options, sha256=sha256)
            remember_bill_periods(self._engine, reading=reading, periods=periods)
            log.info("inbox: new bill %s (%s) for %s", path, sha256[:12], ", ".join(periods) or "no period")
        bill = InboxBill(path=path, sha256=sha256, periods=tuple(periods))
        # A file modified within the file system's timestamp granularity of this reading could change again with
        # the same size and time: trusted only once its time is safely past (git's "racy" files).
        if time.time_ns() - stat.st_mtime_ns > RACY_NANOSECONDS:
            self._known[path] = (identity, bill)
        return bill


def reading_key(sha256: str, *, hint: Period | None, options: ImportOptions) -> str:
    """What a bill's periods depend on, as one digest: its content, its path's period and the import options."""
    described = json.dumps([sha256, None if hint is None else str(hint), asdict(options)], sort_keys=True)
    return hashlib.sha256(described.encode()).hexdigest()


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


def bill_periods(path: Path, *, hint: Period | None, options: ImportOptions, sha256: str) -> list[str]:
    """The billing periods of a bill's rows; `hint`, a YYYY-MM in the file's path, stands for bills without
    dates. AgentError if the file is not the one whose digest is `sha256` any more."""
    from agent.bills import total_bill

    imported = total_bill(path, options=replace(options, period=None if hint is None else str(hint)))
    if imported.sha256 != sha256:
        raise AgentError(f"{path}: changed while it was read; read again at the next scan")
    return sorted(period for period in imported.periods() if period)
