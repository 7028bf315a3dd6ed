"""Path traversal through the bill inbox: only regular bill files inside it are read."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.service.inbox import inbox_files

NATIVE = Path(__file__).resolve().parents[1] / "data" / "bills" / "native.csv"


def test_symlinks_leaving_the_inbox_are_ignored_and_those_inside_it_are_read(tmp_path):
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    (inbox / "2026-10").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(NATIVE, outside / "secret.csv")
    shutil.copy(NATIVE, inbox / "2026-10" / "bill.csv")
    (inbox / "escape.csv").symlink_to(outside / "secret.csv")
    (inbox / "escape-dir").symlink_to(outside, target_is_directory=True)
    (inbox / "alias.csv").symlink_to(inbox / "2026-10" / "bill.csv")

    found = inbox_files(inbox)

    assert sorted(path.relative_to(inbox).as_posix() for path in found) == ["2026-10/bill.csv", "alias.csv"]
    assert all(path.resolve().is_relative_to(inbox.resolve()) for path in found)


def test_hidden_files_partial_uploads_and_other_suffixes_are_not_bills(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / ".staging").mkdir(parents=True)
    shutil.copy(NATIVE, inbox / ".staging" / "bill.csv")
    shutil.copy(NATIVE, inbox / ".upload.csv")
    shutil.copy(NATIVE, inbox / "notes.txt")
    shutil.copy(NATIVE, inbox / "bill.csv")

    assert [path.name for path in inbox_files(inbox)] == ["bill.csv"]
