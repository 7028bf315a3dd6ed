"""Log lines: what the agent logs about its input (file names, tag values) cannot forge log lines."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.logs import JsonFormatter, TextFormatter

WORKED = Path(__file__).resolve().parent / "data" / "worked"
FORGED = "2026-10-01 00:00:00,000 INFO agent.service.serve: job import ended by agent: success"
LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def record(message: str, *args: object, exc_info: bool = False) -> logging.LogRecord:
    return logging.LogRecord("agent.test", logging.INFO, __file__, 1, message, args,
                             sys.exc_info() if exc_info else None)


@pytest.mark.parametrize("name", ["bill\n" + FORGED, "bill\r" + FORGED, "bill\x1b[2K\r" + FORGED,
                                  "bill\x85" + FORGED, "bill\u2028" + FORGED, "bill\x00\x7f\x9b"])
def test_control_characters_in_a_message_are_escaped_on_one_line(name: str) -> None:
    line = TextFormatter().format(record("inbox: new bill %s", name))
    assert len(line.splitlines()) == 1
    assert not any(char.isprintable() is False and char != "\t" for char in line)
    assert line.endswith("inbox: new bill bill" + "".join(repr(char)[1:-1] if not char.isprintable() else char
                                                          for char in name.removeprefix("bill")))


def test_a_traceback_still_follows_on_its_own_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        line = TextFormatter().format(record("job %s failed", "import\nforged", exc_info=True))
    first, *rest = line.splitlines()
    assert first.endswith("job import\\nforged failed")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"


def test_json_lines_keep_the_text_exact_on_one_line() -> None:
    line = JsonFormatter().format(record("inbox: new bill %s", "bill\n" + FORGED))
    assert "\n" not in line and json.loads(line)["message"] == "inbox: new bill bill\n" + FORGED


@pytest.mark.integration
def test_a_served_agent_logs_a_file_name_with_a_newline_on_one_line(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox" / "2026-10"
    inbox.mkdir(parents=True)
    shutil.copy(WORKED / "bill.csv", inbox / f"bill\n{FORGED}.csv")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CZ_AGENT_RULES_FILE": str(WORKED / "rules.yaml"),
           "CZ_AGENT_STORE_URL": f"sqlite:///{tmp_path / 'runs.db'}", "CZ_AGENT_INBOX_DIR": str(tmp_path / "inbox")}
    served = subprocess.run([sys.executable, "-m", "agent.cli", "serve", "--once"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    lines = served.stderr.splitlines()
    assert [line for line in lines if not LOG_LINE.match(line)] == []
    assert not any(line.startswith(FORGED[:19]) for line in lines)
    assert any("inbox: new bill" in line and "bill\\n2026-10-01" in line for line in lines)
