"""A bill file's identity and digest, without the readers: the inbox asks for them on every scan, and an idle
agent must not load pandas and Arrow to answer."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_identity(path: Path) -> tuple[int, int, int]:
    """What changes when a file is rewritten or replaced: its size, modification time and inode (OSError if it
    is gone)."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def file_sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
