"""The CSV reader a test runs total_bill with: Arrow's, or the row-by-row one it falls back on for a file Arrow
cannot parse (ragged rows, invalid UTF-8), which must read every file the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.bills import reader
from agent.errors import FastReadError


@pytest.fixture(params=["arrow", "fallback"])
def csv_reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "arrow":
        yield request.param
        return
    fallen_back: list[Path] = []

    def refuse(path: Path, *_args: object, **_kwargs: object) -> None:
        fallen_back.append(path)
        raise FastReadError("refused by the test")

    monkeypatch.setattr(reader, "_arrow_csv_batches", refuse)
    yield request.param
    assert fallen_back, "no CSV file was read: the test did not reach the fallback reader"
