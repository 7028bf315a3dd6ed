"""The bill inbox: a directory where bills are dropped; each file is known by its content hash and the
billing periods it holds, and delivery manifests say which files are a month's current version."""

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
from agent.errors import AgentError, ManifestError
from agent.service.deliveries import Delivery, add_reason, current_versions, is_manifest, read_delivery
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
    # File -> the manifest of a newer delivery of its report or export, which does not list it: not a bill.
    superseded: dict[Path, Path] = field(default_factory=dict)
    # Period -> why it cannot be allocated now (a delivery not wholly synced, a broken manifest).
    incomplete: dict[str, str] = field(default_factory=dict)

    def for_period(self, period: str) -> list[InboxBill]:
        return [bill for bill in self.bills if period in bill.periods]

    def periods(self) -> set[str]:
        return {period for bill in self.bills for period in bill.periods}


class Inbox:
    """Scans the directory. A file is read again only when its size, modification time or inode changed; its
    periods come from its content, the period its path names and the import options (remembered in the store
    under that reading, so a restart does not parse it again). Where a delivery manifest governs a billing period
    folder, only the files of its newest manifest are bills (agent.service.deliveries)."""

    def __init__(self, directory: Path, *, engine: Engine, options: ImportOptions) -> None:
        self._directory = directory
        self._engine = engine
        self.options = options
        self._known: dict[Path, tuple[tuple[int, int, int], InboxBill]] = {}
        self._manifests: dict[Path, tuple[tuple[int, int, int], Delivery | ManifestError | None]] = {}
        self._superseded: dict[Path, Path] = {}

    def scan(self) -> InboxScan:
        # Created when missing: a fresh volume has no inbox yet, and waiting for one helps nobody.
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AgentError(f"{self._directory}: cannot use as the bill inbox: {e.strerror or e}") from e
        files = inbox_files(self._directory)
        paths = [path for path in files if is_bill(path)]
        deliveries, incomplete = self._deliveries([path for path in files if is_manifest(path)])
        versions = current_versions(deliveries, bills=paths)
        incomplete.update(versions.incomplete)
        self._report_superseded(versions.superseded)
        bills, failures, blocked = [], {}, {}
        for path in paths:
            if path in versions.superseded:
                continue
            try:
                bills.append(self._bill(path))
            except AgentError as e:
                failures[path] = str(e)
                log.error("inbox: cannot import %s: %s", path, e)
                for period in self._last_periods(path):
                    blocked.setdefault(period, []).append(path)
        for period, reason in sorted(incomplete.items()):
            log.error("inbox: %s cannot be allocated: %s", period, reason)
        self._known = {path: known for path, known in self._known.items() if path in set(paths)}
        return InboxScan(bills=bills, failures=failures, blocked=blocked, superseded=versions.superseded,
                         incomplete=incomplete)

    def _last_periods(self, path: Path) -> set[str]:
        """The periods a file that cannot be read now held when it last could, and the period its path names."""
        known = self._known.get(path)
        hint = Period.last_in(str(path.relative_to(self._directory)))
        return set(known[1].periods if known else ()) | ({str(hint)} if hint else set())

    def _deliveries(self, manifests: list[Path]) -> tuple[list[Delivery], dict[str, str]]:
        """The deliveries the manifests describe, and period -> the errors of the broken ones. A manifest is read
        again only when its size, modification time or inode changed."""
        from agent.bills.files import file_identity

        deliveries, broken = [], {}
        for path in manifests:
            try:
                identity = file_identity(path)
            except OSError as e:
                log.warning("inbox: cannot read the manifest %s: %s", path, e.strerror or e)
                continue
            known = self._manifests.get(path)
            if known is None or known[0] != identity:
                known = (identity, self._read_manifest(path, mtime_ns=identity[1]))
                self._manifests[path] = known
            read = known[1]
            if isinstance(read, ManifestError):
                add_reason(broken, period=read.period, reason=str(read))
            elif read is not None:
                deliveries.append(read)
        self._manifests = {path: known for path, known in self._manifests.items() if path in set(manifests)}
        return deliveries, broken

    def _read_manifest(self, path: Path, *, mtime_ns: int) -> Delivery | ManifestError | None:
        try:
            delivery = read_delivery(path, directory=self._directory, mtime_ns=mtime_ns)
        except ManifestError as e:
            return e
        if delivery is None:
            log.warning("inbox: %s is in no billing period folder (YYYYMMDD-YYYYMMDD or BILLING_PERIOD=YYYY-MM); "
                        "ignored, so the files near it are read as bills", path)
        return delivery

    def _report_superseded(self, superseded: dict[Path, Path]) -> None:
        for path, manifest in sorted(superseded.items()):
            if self._superseded.get(path) != manifest:
                log.info("inbox: %s ignored: superseded by the newer delivery of %s", path, manifest)
        self._superseded = superseded

    def _bill(self, path: Path) -> InboxBill:
        from agent.bills.files import file_identity, file_sha256

        try:
            identity = file_identity(path)
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
        if time.time_ns() - identity[1] > RACY_NANOSECONDS:
            self._known[path] = (identity, bill)
        return bill


def reading_key(sha256: str, *, hint: Period | None, options: ImportOptions) -> str:
    """What a bill's periods depend on, as one digest: its content, its path's period and the import options."""
    described = json.dumps([sha256, None if hint is None else str(hint), asdict(options)], sort_keys=True)
    return hashlib.sha256(described.encode()).hexdigest()


def is_bill(path: Path) -> bool:
    return path.name.lower().endswith(BILL_SUFFIXES)


def inbox_files(directory: Path) -> list[Path]:
    """Bill files and delivery manifests under the directory, sorted; hidden files (uploads in progress) and
    anything resolving outside the directory (a symlink out of it) are left alone."""
    root = directory.resolve()
    found = []
    for path in sorted(directory.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        if not (is_bill(path) or is_manifest(path)) or not path.is_file():
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
