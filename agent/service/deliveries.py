"""Delivery manifests in the bill inbox: which files are a month's current version when a provider delivers the
month again (AWS CUR, AWS Data Exports, Azure cost exports), synced from the bucket into the inbox."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.core.periods import MONTH_NUMBER
from agent.errors import ManifestError

# A manifest lists file names and a schema; anything larger is not one, and is not read into memory.
MANIFEST_MAX_BYTES = 4 * 1024 * 1024
# Azure cost exports write `manifest.json` in each run's folder (`_manifest.json` in some of Microsoft's examples).
AZURE_MANIFEST_NAMES = ("manifest.json", "_manifest.json")
# AWS names the manifest after the report or export: `<name>-Manifest.json`.
AWS_MANIFEST_SUFFIX = "-Manifest.json"
# The folder of one billing period: CUR's and Azure's `YYYYMMDD-YYYYMMDD`, Data Exports' `BILLING_PERIOD=YYYY-MM`.
_DATE_RANGE = re.compile(rf"(\d{{4}})({MONTH_NUMBER})\d\d-\d{{8}}", re.ASCII)
_BILLING_PERIOD = re.compile(rf"BILLING_PERIOD=(\d{{4}}-(?:{MONTH_NUMBER}))", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KINDS_OF_VALUE = {str: "a text", list: "a list", dict: "an object"}


@dataclass(frozen=True)
class Delivery:
    """One manifest: the billing period folder whose bills it governs, the files it lists (as paths in the inbox)
    and how new it is (the greater, the newer)."""

    manifest: Path
    folder: Path
    period: str
    files: frozenset[Path]
    newness: tuple[int, int]


@dataclass(frozen=True)
class Versions:
    # Bill file -> the current manifest of its folder, which does not list it: an older version, not a bill.
    superseded: dict[Path, Path]
    # Period -> why it cannot be allocated now (a delivery not wholly synced, a broken manifest).
    incomplete: dict[str, str]


def is_manifest(path: Path) -> bool:
    return path.name in AZURE_MANIFEST_NAMES or path.name.endswith(AWS_MANIFEST_SUFFIX)


def read_delivery(path: Path, *, directory: Path, mtime_ns: int) -> Delivery | None:
    """The delivery a manifest in the inbox `directory` describes; None when it is in no billing period folder
    (the overwrite layouts keep one version only, so there is nothing to choose). ManifestError when it is not
    valid JSON or lacks a field."""
    layout = _layout(path, directory=directory)
    if layout is None:
        return None
    read, folder, period = layout
    where = _Where(manifest=path, folder=folder, period=period)
    keys, newness = read(_document(where), where=where, mtime_ns=mtime_ns)
    return Delivery(manifest=path, folder=folder, period=period, newness=newness,
                    files=frozenset(where.local(key, field) for field, key in keys))


def current_versions(deliveries: Iterable[Delivery], *, bills: Iterable[Path]) -> Versions:
    """In each billing period folder, only the files of the newest manifest count: the others are superseded. A
    file the newest manifest lists but the inbox lacks makes the period incomplete."""
    by_folder: dict[Path, list[Delivery]] = {}
    for delivery in deliveries:
        by_folder.setdefault(delivery.folder, []).append(delivery)
    bills = list(bills)
    superseded, incomplete = {}, {}
    for folder, found in sorted(by_folder.items()):
        current = max(found, key=lambda delivery: (delivery.newness, str(delivery.manifest)))
        superseded.update({bill: current.manifest for bill in bills
                           if bill.is_relative_to(folder) and bill not in current.files})
        missing = sorted(path for path in current.files if not path.is_file())
        if missing:
            more = f" and {len(missing) - 1} more file(s)" if len(missing) > 1 else ""
            reason = (f"{current.manifest} lists {missing[0]}{more} not in the inbox: the sync is incomplete, so "
                      f"{current.period} is not allocated until they arrive")
            add_reason(incomplete, period=current.period, reason=reason)
    return Versions(superseded=superseded, incomplete=incomplete)


def add_reason(reasons: dict[str, str], *, period: str, reason: str) -> None:
    """Records why a period cannot be allocated, after any reason it already has."""
    reasons[period] = "; ".join(filter(None, (reasons.get(period), reason)))


@dataclass(frozen=True)
class _Where:
    manifest: Path
    folder: Path
    period: str

    def error(self, problem: str) -> ManifestError:
        return ManifestError(f"{self.manifest}: {problem}; {self.period} is not allocated until it is fixed",
                             period=self.period)

    def local(self, key: str, field: str) -> Path:
        """The inbox path of a file the manifest lists by key, URI or blob name: the inbox holds the bucket from
        some prefix on, so the part of the key after the billing period folder's name is the path in that folder."""
        parts = key.split("/")
        rest = parts[len(parts) - parts[::-1].index(self.folder.name):] if self.folder.name in parts else []
        if not rest or any(part in ("", ".", "..") for part in rest):
            raise self.error(f"{field} lists {key!r}, not a file in its billing period folder {self.folder.name}")
        return self.folder.joinpath(*rest)


# The files a manifest lists: (the field that names one, as `reportKeys[0]`, the key, URI or blob name).
Listed = list[tuple[str, str]]
Reader = Callable[..., tuple[Listed, tuple[int, int]]]


def _aws_cur(document: dict, *, where: _Where, mtime_ns: int) -> tuple[Listed, tuple[int, int]]:
    # The manifest in the period folder is rewritten at each update; the copies in `<assemblyId>/` folders are
    # as old as their assembly. Without the former, the latest copy is the newest.
    _value(document, "assemblyId", str, where=where)
    top_level = where.manifest.parent == where.folder
    return _texts(document, "reportKeys", where=where), (int(top_level), mtime_ns)


def _aws_data_exports(document: dict, *, where: _Where, mtime_ns: int) -> tuple[Listed, tuple[int, int]]:
    # One manifest per period, rewritten at each refresh once all its data files are delivered: it is current.
    _value(document, "executionId", str, where=where)
    return _texts(document, "dataFiles", where=where), (0, mtime_ns)


def _azure(document: dict, *, where: _Where, mtime_ns: int) -> tuple[Listed, tuple[int, int]]:
    # Each run writes its own folder and manifest: the run submitted last is current.
    run = _value(document, "runInfo", dict, where=where)
    submitted = _value(run, "submittedTime", str, where=where, name="runInfo.submittedTime")
    try:
        moment = datetime.fromisoformat(submitted)
    except ValueError as e:
        raise where.error(f"key 'runInfo.submittedTime' is not a date and time: {submitted!r}") from e
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    blobs = _value(document, "blobs", list, where=where)
    names = []
    for i, blob in enumerate(blobs):
        field = f"blobs[{i}].blobName"
        names.append((field, _value(blob if isinstance(blob, dict) else {}, "blobName", str, where=where, name=field)))
    return names, (0, (moment - _EPOCH) // timedelta(microseconds=1))


def _layout(path: Path, *, directory: Path) -> tuple[Reader, Path, str] | None:
    """The reader of the manifest's kind, the billing period folder it governs and that folder's period."""
    parent = path.parent
    found = _BILLING_PERIOD.fullmatch(parent.name)
    if path.name.endswith(AWS_MANIFEST_SUFFIX) and found and parent.parent.name == "metadata":
        return _aws_data_exports, parent.parent.parent / "data" / parent.name, found.group(1)
    for folder in path.relative_to(directory).parents:
        found = _DATE_RANGE.fullmatch(folder.name)
        if found:
            read = _azure if path.name in AZURE_MANIFEST_NAMES else _aws_cur
            return read, directory / folder, f"{found.group(1)}-{found.group(2)}"
    return None


def _document(where: _Where) -> dict:
    try:
        with where.manifest.open("rb") as file:
            text = file.read(MANIFEST_MAX_BYTES + 1)
    except OSError as e:
        raise where.error(f"cannot read: {e.strerror or e}") from e
    if len(text) > MANIFEST_MAX_BYTES:
        raise where.error(f"larger than {MANIFEST_MAX_BYTES} bytes, which no delivery manifest is")
    try:
        document = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise where.error(f"not valid JSON ({e})") from e
    if not isinstance(document, dict):
        raise where.error("not a JSON object")
    return document


def _value(document: dict, key: str, kind: type, *, where: _Where, name: str | None = None):
    value = document.get(key)
    if not isinstance(value, kind) or (kind is str and not value):
        raise where.error(f"key {name or key!r} is missing or not {_KINDS_OF_VALUE[kind]}")
    return value


def _texts(document: dict, key: str, *, where: _Where) -> Listed:
    texts = _value(document, key, list, where=where)
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise where.error(f"key '{key}[{i}]' is not a text")
    return [(f"{key}[{i}]", text) for i, text in enumerate(texts)]
