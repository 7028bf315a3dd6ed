"""Logging set-up: readable text by default, one JSON object per line as an option."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """One line per message: control characters in it (a file name with a newline, say) are escaped, so what
    the agent logs about its input cannot forge log lines. A traceback still follows on its own lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's own name
        record.message = record.message.translate(_ESCAPES)
        return super().formatMessage(record)


# Control characters and Unicode line separators as backslash escapes ("\n", "\x85", "\u2028"); tabs stay.
_ESCAPES = {code: repr(chr(code))[1:-1] for code in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
            if code != 0x09}


class _AgentHandler(logging.StreamHandler):
    """The agent's own handler: replaced when logging is configured again, other handlers are left alone."""


def configure_logging(*, level: str, log_format: str) -> None:
    handler = _AgentHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _AgentHandler)] + [handler]
    root.setLevel(level.upper())
