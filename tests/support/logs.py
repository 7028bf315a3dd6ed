"""The end of a log, for the message of a failing test."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

TAIL_LINES = 40


def last_lines(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of the file, or "(no log)" when it was never written."""
    return last_lines(path.read_text(encoding="utf-8", errors="replace"), lines) if path.exists() else "(no log)"


def tails(paths: Path | Iterable[Path], lines: int = TAIL_LINES) -> str:
    """Each log's tail under a `--- name` line."""
    paths = [paths] if isinstance(paths, Path) else list(paths)
    return "\n".join(f"--- {path.name}\n{tail(path, lines)}" for path in paths)
