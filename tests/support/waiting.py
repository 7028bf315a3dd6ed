"""Waiting for a condition: a server ready, a metric changed, a leader elected. Fails the test (never skips it)
with the tail of the logs that explain why."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.logs import tails

T = TypeVar("T")
# On a loaded 2-core machine a process may stall for a while: the deadlines are generous.
WAIT_SECONDS = 60


def wait_for(condition: Callable[[], T], *, what: str, timeout: float = WAIT_SECONDS, interval: float = 0.3,
             process: subprocess.Popen | None = None, logs: Path | Iterable[Path] = (),
             ignoring: tuple[type[Exception], ...] = (OSError,)) -> T:
    """Call `condition` every `interval` seconds until it returns something truthy, and return that.

    An exception of the `ignoring` types counts as "not yet" (by default OSError: a server not listening yet, a
    refused or reset connection; urllib's URLError is one). The test fails with the tail of `logs` when the time
    runs out or when `process` exits first."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if process is not None and process.poll() is not None:
            pytest.fail(f"{command_name(process)} exited with {process.returncode} while waiting for {what}\n"
                        f"{tails(logs)}", pytrace=False)
        try:
            result = condition()
        except ignoring as error:
            result, last_error = None, error
        if result:
            return result
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    error = f" (last error: {last_error!r})" if last_error is not None else ""
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}{error}\n{tails(logs)}", pytrace=False)


def command_name(process: subprocess.Popen) -> str:
    """`etcd`, `python3 -m agent.cli serve`: the program's name and, for an interpreter, what it runs."""
    args = [str(arg) for arg in process.args] if isinstance(process.args, (list, tuple)) else [str(process.args)]
    name = Path(args[0]).name
    return " ".join([name, *args[1:4]])[:80] if name.startswith("python") else name
