"""Line identities across the bill files of one period: a line found in two files is the same charge delivered
twice (a re-delivered or copied bill), not two charges.

A line's identity is its ID and, where the format has one, its time interval (CUR repeats an ID per hour);
each is kept as a 64-bit hash, so that millions of lines cost 8 bytes each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from agent.bills import reader
from agent.bills.columns import find_column
from agent.bills.convert import month_cells, text_cells
from agent.bills.detect import SPECS
from agent.bills.importer import header_and_format
from agent.bills.options import ImportOptions
from agent.errors import BillFormatError, DuplicateLinesError

if TYPE_CHECKING:
    from agent.bills.totals import BillTotals


@dataclass(frozen=True)
class _IdentityColumns:
    line_id: str
    interval: str | None
    billing_period: str | None
    charge_period: str | None

    def used(self) -> list[str]:
        names = (self.line_id, self.interval, self.billing_period, self.charge_period)
        return list(dict.fromkeys(name for name in names if name is not None))


def refuse_repeated_lines(paths: list[Path], *, options: ImportOptions, period: str) -> None:
    """DuplicateLinesError naming both files if a line identity of `period` is in two of the bills."""
    if options.duplicates == "allow" or len(paths) < 2:
        return
    seen: list[tuple[Path, np.ndarray]] = []
    for path in paths:
        columns = _identity_columns(path, options=options)
        if columns is None:
            continue
        hashes = np.unique(np.concatenate([_hashes(chunk, columns, period=period)[0] for chunk in
                                           reader.read_chunks(path, columns=columns.used(), source=str(path),
                                                              limits=options.limits)]
                                          or [np.empty(0, dtype=np.uint64)]))
        for earlier, earlier_hashes in seen:
            common = np.intersect1d(earlier_hashes, hashes, assume_unique=True)
            if len(common):
                raise DuplicateLinesError(
                    f"{len(common)} line(s) of {period} are in both {earlier} and {path} (the first: "
                    f"{_first_line(path, columns, period=period, among=common, options=options)}): the same charges "
                    "delivered twice. "
                    "Remove the older file, or set `duplicates: allow` in the rules' bill: section if the provider "
                    "repeats line identities on purpose")
        seen.append((path, hashes))


def refuse_same_lines(imports: list[BillTotals], *, period: str, options: ImportOptions) -> None:
    """DuplicateLinesError if two bills of different file types give `period` the same lines: the same totals and
    line counts per tag, currency, sub-account, workspace and API key (a bill saved as CSV and as XLSX). Files of
    one type are not compared: the parts of one delivery may hold equal lines, and a copy is byte-identical."""
    if options.duplicates == "allow":
        return
    seen: dict[tuple, tuple[str, str]] = {}
    for bill in imports:
        content = _content(bill, period=period)
        if not content:
            continue
        kind = reader.file_kind(Path(bill.source))
        earlier, earlier_kind = seen.setdefault(content, (bill.source, kind))
        if earlier_kind != kind:
            raise DuplicateLinesError(
                f"{earlier} and {bill.source} give {period} the same lines (the same totals and line counts per tag, "
                "currency and account): the same bill in two file types. Remove one, or set "
                "`duplicates: allow` in the rules' bill: section if they are two bills")


def _content(bill: BillTotals, *, period: str) -> tuple:
    """The bill's lines in `period`, as its group totals; amounts compared by value (12.50 and 12.5 alike)."""
    def groups(found: dict) -> frozenset:
        return frozenset((key, group.amount.normalize(), group.lines) for key, group in found.items()
                         if key[0] == period)

    return (groups(bill.tag_groups), groups(bill.split_groups)) if bill.accepted_rows else ()


def _identity_columns(path: Path, *, options: ImportOptions) -> _IdentityColumns | None:
    source = str(path)
    header, bill_format = header_and_format(path, options=options)
    spec = SPECS[bill_format]
    if options.line_id_column is not None:
        line_id = find_column(header, (options.line_id_column,))
        if line_id is None:
            raise BillFormatError(f"the line identity column given ({options.line_id_column!r}) is not in the header",
                                  source=source, column=options.line_id_column)
    else:
        line_id = find_column(header, spec.line_id)
    if line_id is None:
        return None
    return _IdentityColumns(line_id=line_id, interval=find_column(header, spec.line_interval),
                            billing_period=find_column(header, spec.billing_period),
                            charge_period=find_column(header, spec.charge_period))


def _hashes(chunk: pd.DataFrame, columns: _IdentityColumns, *, period: str) -> tuple[np.ndarray, pd.Series]:
    """The hashes of the chunk's line identities in `period` (lines without a date count as in it), and the
    identities themselves as text."""
    billing, _ = month_cells(chunk, columns.billing_period)
    charge, _ = month_cells(chunk, columns.charge_period)
    in_period = billing.fillna(charge).fillna(period) == period
    identity = text_cells(chunk, columns.line_id)
    if columns.interval is not None:
        identity = identity + "|" + text_cells(chunk, columns.interval).fillna("")
    identity = identity[in_period & identity.notna()]
    return pd.util.hash_array(identity.to_numpy(dtype=object)), identity


def _first_line(path: Path, columns: _IdentityColumns, *, period: str, among: np.ndarray,
                options: ImportOptions) -> str:
    """Row and identity of the file's first line whose identity hash is in `among`."""
    for chunk in reader.read_chunks(path, columns=columns.used(), source=str(path), limits=options.limits):
        hashes, identity = _hashes(chunk, columns, period=period)
        found = np.isin(hashes, among)
        if found.any():
            row = identity.index[found.argmax()]
            return f"row {row}, {columns.line_id} {identity.loc[row]!r}"
    return "no line left"
