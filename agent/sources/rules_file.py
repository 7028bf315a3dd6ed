"""The rules file: read from disk, then parsed and validated by agent.core.rules."""

from __future__ import annotations

from pathlib import Path

from agent.core.rules import Rules, parse_rules
from agent.errors import RulesError


def load_rules(path: Path) -> Rules:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RulesError(f"{path}: cannot read the rules file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise RulesError(f"{path}: the rules file is not UTF-8 text (byte {e.start}: {e.reason})") from e
    return parse_rules(text, source=str(path))
