"""Logging set-up: readable text by default, one JSON object per line as an option."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from agent.core.text import one_line


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
        record.message = one_line(record.message)
        return super().formatMessage(record)


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
