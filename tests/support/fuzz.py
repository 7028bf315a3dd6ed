"""What the fuzz tests share: a time limit per example, so that a hang fails the example instead of the run."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

# Per example: generous for a loaded 2-core machine, far below what a hang would take.
EXAMPLE_SECONDS = 20


class ExampleTimeout(Exception):
    """An example ran past its time limit: a hang as far as a user is concerned."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """SIGALRM interrupts the example; a C loop that never returns to Python would still hang the test run,
    which fails it just the same."""
    def expire(_signum: int, _frame: object) -> None:
        raise ExampleTimeout(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
