"""A bill put into the inbox by hand (`POST /api/v1/bills`, `cz-agent push`): received under a hidden name,
read once to say what the next run will see, then renamed into place in one step, so that a scan sees the whole
file or nothing. An unreadable bill is refused and leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from agent.bills import ImportOptions
from agent.core.periods import Period
from agent.errors import UploadError
from agent.service.inbox import BILL_SUFFIXES
from agent.store.remote import error_detail

if TYPE_CHECKING:
    from agent.bills.totals import BillTotals

# A plain file name: no folder, not hidden (hidden files are uploads in progress), a bill suffix.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,199}")


@dataclass(frozen=True)
class PlacedBill:
    """What the next run will see of the bill: where it is, its digest and format, and per period its lines."""

    path: str
    sha256: str
    format: str
    replaced: bool
    input_rows: int
    rejected_rows: int
    # period -> accepted lines and, per currency, their exact total
    periods: dict[str, dict[str, object]]

    def describe(self) -> list[str]:
        lines = [f"{self.path}: {self.format} bill, {self.input_rows} rows, {self.rejected_rows} rejected"
                 + (" (replaces the file of that name)" if self.replaced else "")]
        for period, seen in self.periods.items():
            totals = ", ".join(f"{amount} {currency}" for currency, amount in seen["totals"].items())
            lines.append(f"  {period}: {seen['lines']} lines, {totals}")
        return lines


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or not name.lower().endswith(BILL_SUFFIXES):
        raise UploadError(f"bill file name {name!r} must be a plain file name (letters, digits, '.', '_', '-', "
                          f"space; at most 200 characters) ending in {', '.join(BILL_SUFFIXES)}")
    return name


@contextmanager
def staging(inbox_dir: Path, name: str) -> Iterator[Path]:
    """A hidden path in the inbox to write the bill to (scans ignore it), removed unless `place` renamed it."""
    check_name(name)
    inbox_dir.mkdir(parents=True, exist_ok=True)
    staged = inbox_dir / f".upload-{secrets.token_hex(8)}-{name}"
    try:
        yield staged
    finally:
        staged.unlink(missing_ok=True)


def push_file(source: Path, *, inbox_dir: Path, name: str | None, period: str | None,
              options: ImportOptions) -> PlacedBill:
    """`cz-agent push FILE --inbox DIR`: a local file put into a local inbox the way an upload is."""
    name = check_name(name or source.name)
    with staging(inbox_dir, name) as staged:
        try:
            with source.open("rb") as original, staged.open("xb") as copy:
                shutil.copyfileobj(original, copy)
        except OSError as e:
            raise UploadError(f"{source}: cannot copy into the inbox: {e.strerror or e}") from e
        return place(staged, inbox_dir=inbox_dir, name=name, period=period, options=options)


def upload_file(source: Path, *, server: str, token: str | None, name: str | None, period: str | None,
                timeout_seconds: float = 600) -> PlacedBill:
    """`cz-agent push FILE --server URL`: the file streamed to the agent's POST /api/v1/bills."""
    name = check_name(name or source.name)
    url = f"{server.rstrip('/')}/api/v1/bills?{urlencode({'name': name, **({'period': period} if period else {})})}"
    headers = {"Content-Type": "application/octet-stream", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with source.open("rb") as body:
            headers["Content-Length"] = str(os.fstat(body.fileno()).st_size)
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
                answer = json.load(response)
    except urllib.error.HTTPError as e:
        raise UploadError(f"{url}: refused ({e.code}): {error_detail(e)}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise UploadError(f"cannot upload {source} to {server}: {getattr(e, 'reason', None) or e}") from e
    return PlacedBill(**answer)


def place(staged: Path, *, inbox_dir: Path, name: str, period: str | None, options: ImportOptions) -> PlacedBill:
    """Read the staged bill as the inbox will, then rename it to `<inbox>/<period>/<name>` (or `<inbox>/<name>`)."""
    from agent.bills import total_bill

    check_name(name)
    if period is not None:
        Period.parse(period)
    bill = total_bill(staged, options=ImportOptions(**{**vars(options), "period": period}))
    periods = _periods(bill)
    if period is not None and period not in periods:
        found = ", ".join(sorted(periods)) or "none"
        raise UploadError(f"{name}: no row of the bill is in {period} (its rows are in: {found})")
    if not periods:
        raise UploadError(f"{name}: the bill has no accepted row")
    target = inbox_dir / period / name if period is not None else inbox_dir / name
    target.parent.mkdir(parents=True, exist_ok=True)
    replaced = target.exists()
    # On disk before it is named: a crash after the rename must not leave a bill whose tail was never written.
    _synced(staged)
    os.replace(staged, target)
    _synced(target.parent)
    return PlacedBill(path=str(target.relative_to(inbox_dir)), sha256=bill.sha256, format=bill.bill_format,
                      replaced=replaced, input_rows=bill.input_rows, rejected_rows=len(bill.rejected),
                      periods=periods)


def _synced(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _periods(bill: BillTotals) -> dict[str, dict[str, object]]:
    """The accepted lines per period, the requested one's and the others' alike, with their totals per currency."""
    from agent.bills.totals import GroupTotal

    found: dict[str, dict[str, GroupTotal]] = {}
    groups = chain(((key[:2], group) for key, group in bill.split_groups.items()), bill.outside.items())
    for (period, currency), group in groups:
        found.setdefault(period, {}).setdefault(currency, GroupTotal()).add(group.amount, group.lines, group.places)
    return {period: {"lines": sum(total.lines for total in totals.values()),
                     "totals": {currency: format(total.exact(), "f") for currency, total in sorted(totals.items())}}
            for period, totals in sorted(found.items())}
