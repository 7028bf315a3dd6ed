"""Bills where they live: S3, Google Cloud Storage and Azure Blob prefixes, mirrored into the bill inbox.

Each poll lists every source by prefix and copies what is new or changed (another size or modification time)
into `<inbox>/remote/<scheme>/<bucket>/<key>`, streamed through a hidden file and renamed into place whole; what
is gone from the source is removed. The inbox then reads the copies like any bill: the same period, manifest,
duplicate and "unchanged is not read again" rules. A source that cannot be listed or read changes nothing of its
copies, so the last good runs stand.

Credentials come from each platform's default chain (Arrow's file systems): for S3 the AWS chain (environment,
IRSA web identity, EKS Pod Identity, instance profile); for GCS Application Default Credentials (GKE Workload
Identity); for Azure the DefaultAzureCredential chain (Workload Identity), or an account key when one is set.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from agent.errors import SettingsError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from agent.settings import Settings

log = logging.getLogger(__name__)

SCHEMES = ("s3", "gs", "az")
# What is copied: bills, and the delivery manifests that say which of them are current.
COPIED_SUFFIXES = (".csv", ".gz", ".parquet", ".xlsx", ".json")
# A manifest is a few kilobytes; a larger .json object is not one.
MAX_JSON_BYTES = 16 * 1024 * 1024
MIRROR_FOLDER = "remote"
# Object times are whole seconds: a copy made this soon after its object's time may miss a rewrite.
RACY_NANOSECONDS = 2_000_000_000
_COPY_BLOCK = 1024 * 1024
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,254}")


@dataclass(frozen=True)
class BillSource:
    """`s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`."""

    scheme: str
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> BillSource:
        scheme, separator, rest = url.strip().partition("://")
        bucket, _, prefix = rest.partition("/")
        if not separator or scheme not in SCHEMES or not _BUCKET.fullmatch(bucket) or ".." in prefix.split("/"):
            raise SettingsError(f"bill source {url!r} is not s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or "
                                "az://CONTAINER/PREFIX")
        return cls(scheme=scheme, bucket=bucket, prefix=prefix.strip("/"))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def root(self) -> str:
        """The prefix as the file system names it."""
        return f"{self.bucket}/{self.prefix}".rstrip("/")


@dataclass
class SyncResult:
    copied: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # Source or object -> why it could not be listed or copied; its earlier copies stay.
    failures: dict[str, str] = field(default_factory=dict)


class Mirror:
    """Copies the sources' bills into the inbox; see the module's description."""

    def __init__(self, sources: list[BillSource], *, inbox_dir: Path, settings: Settings) -> None:
        self._sources = sources
        self._root = inbox_dir / MIRROR_FOLDER
        self._settings = settings

    def sync(self) -> SyncResult:
        result = SyncResult()
        for source in self._sources:
            try:
                self._sync(source, filesystem(source.scheme, self._settings), result)
            except (OSError, ValueError) as e:
                result.failures[str(source)] = f"{source}: cannot list the bills: {_reason(e)}"
                log.error("bill source %s: cannot list the bills: %s", source, _reason(e))
        return result

    def _sync(self, source: BillSource, fs: pafs.FileSystem, result: SyncResult) -> None:
        import pyarrow.fs as pafs

        local_root = self._root / source.scheme / source.bucket
        # A prefix with nothing delivered yet is empty; a bucket that is not there is a mistake.
        if fs.get_file_info(source.bucket).type == pafs.FileType.NotFound:
            raise OSError(f"no bucket or container {source.bucket!r}")
        listed = fs.get_file_info(pafs.FileSelector(source.root, recursive=True, allow_not_found=True))
        wanted: set[Path] = set()
        for info in listed:
            if info.type != pafs.FileType.File or not info.base_name.lower().endswith(COPIED_SUFFIXES):
                continue
            if info.base_name.startswith("."):
                continue
            key = PurePosixPath(info.path).relative_to(source.bucket)
            local = local_root / key
            wanted.add(local)
            if _unchanged(local, info):
                continue
            name = f"{source.scheme}://{info.path}"
            if info.base_name.lower().endswith(".json") and info.size > MAX_JSON_BYTES:
                result.failures[name] = f"{name}: {info.size} bytes, more than {MAX_JSON_BYTES} for a manifest"
                continue
            try:
                _copy(fs, info, local)
            except (OSError, ValueError) as e:
                result.failures[name] = f"{name}: cannot copy: {_reason(e)}"
                log.error("bill source %s: cannot copy %s: %s", source, name, _reason(e))
                continue
            result.copied.append(name)
            log.info("bill source %s: copied %s (%d bytes)", source, name, info.size)
        prefix_dir = local_root / source.prefix if source.prefix else local_root
        for local in sorted(prefix_dir.rglob("*")) if prefix_dir.is_dir() else ():
            if local.is_file() and not local.name.startswith(".") and local not in wanted:
                local.unlink()
                result.removed.append(str(local))
                log.info("bill source %s: %s is gone from the source; its copy is removed", source, local)


def filesystem(scheme: str, settings: Settings) -> pafs.FileSystem:
    """Arrow's file system for the scheme, from the platform's default credentials unless settings say otherwise."""
    import pyarrow.fs as pafs

    if scheme == "s3":
        options: dict[str, object] = {"region": settings.s3_region} if settings.s3_region else {}
        if settings.s3_endpoint_url:
            endpoint = settings.s3_endpoint_url
            options |= {"endpoint_override": endpoint.split("://")[-1], "scheme": endpoint.split("://")[0]}
        return pafs.S3FileSystem(**options, connect_timeout=settings.object_store_timeout_seconds,
                                 request_timeout=settings.object_store_timeout_seconds)
    if scheme == "gs":
        options = {}
        if settings.gcs_endpoint_url:
            endpoint = settings.gcs_endpoint_url
            options = {"endpoint_override": endpoint.split("://")[-1], "scheme": endpoint.split("://")[0],
                       "anonymous": True}
        return pafs.GcsFileSystem(**options, retry_time_limit=timedelta(seconds=settings.object_store_timeout_seconds))
    if not settings.azure_storage_account:
        raise SettingsError("az:// bill sources need azure_storage_account (CZ_AGENT_AZURE_STORAGE_ACCOUNT)")
    options = {"account_name": settings.azure_storage_account}
    if settings.azure_storage_key is not None:
        options["account_key"] = settings.azure_storage_key.get_secret_value()
    if settings.azure_blob_endpoint:
        endpoint = settings.azure_blob_endpoint
        authority, scheme_name = endpoint.split("://")[-1], endpoint.split("://")[0]
        # The Data Lake endpoint is asked first (hierarchical namespace); an emulator serves both on one address.
        options |= {"blob_storage_authority": authority, "blob_storage_scheme": scheme_name,
                    "dfs_storage_authority": authority, "dfs_storage_scheme": scheme_name}
    return pafs.AzureFileSystem(**options)


def _unchanged(local: Path, info: pafs.FileInfo) -> bool:
    """The copy was made from this version: same size, and its time set to the object's. Object stores keep
    times to the second, so a copy made within RACY_NANOSECONDS of the object's time could hide a rewrite of the
    same size in that second: it is copied again (the inbox then finds the same digest, if nothing changed)."""
    try:
        stat = local.stat()
    except OSError:
        return False
    return (stat.st_size == info.size and info.mtime_ns is not None and stat.st_mtime_ns == info.mtime_ns
            and stat.st_ctime_ns - info.mtime_ns > RACY_NANOSECONDS)


def _copy(fs: pafs.FileSystem, info: pafs.FileInfo, local: Path) -> None:
    """Streamed to a hidden file beside the copy, checked for length, then renamed over it."""
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(f".part-{secrets.token_hex(6)}-{local.name}")
    try:
        copied = 0
        with fs.open_input_stream(info.path) as remote, partial.open("xb") as out:
            while block := remote.read(_COPY_BLOCK):
                out.write(block)
                copied += len(block)
            out.flush()
            os.fsync(out.fileno())
        if copied != info.size:
            raise OSError(f"the transfer ended after {copied} of {info.size} bytes")
        if info.mtime_ns is not None:
            os.utime(partial, ns=(info.mtime_ns, info.mtime_ns))
        os.replace(partial, local)
    finally:
        partial.unlink(missing_ok=True)


def _reason(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def parse_sources(urls: list[str]) -> list[BillSource]:
    sources = [BillSource.parse(url) for url in urls]
    if len(set(sources)) != len(sources):
        raise SettingsError("a bill source is given twice")
    return sources

