"""Starting a server process with its output in a log file, and stopping it: a signal, then kill."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.support.logs import last_lines


def start_logged(command: Sequence[str | Path], *, log_path: Path, append: bool = False,
                 env: Mapping[str, str] | None = None, **popen: object) -> subprocess.Popen[bytes]:
    """The process, its stdout and stderr going to `log_path` (appended to when `append`: a restarted server
    keeps its earlier log)."""
    with log_path.open("ab" if append else "wb") as log:
        return subprocess.Popen([str(part) for part in command], stdout=log, stderr=subprocess.STDOUT,
                                env=None if env is None else dict(env), **popen)


def stop_process(process: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    """Send `sig` (SIGTERM: a clean shutdown), wait up to `timeout` seconds, then kill; the exit status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def setup_script_output(script: Path, *args: str) -> str:
    """The stdout of a set-up script of scripts/ (a build or an install, a no-op once done); its failure fails the
    test with the end of its stderr."""
    done = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"{script.relative_to(script.parents[1])} {' '.join(args)} failed ({done.returncode}):\n"
                    f"{last_lines(done.stderr)}", pytrace=False)
    return done.stdout
