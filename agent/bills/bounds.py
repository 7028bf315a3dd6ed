"""Bill files held to their size limits (agent.core.bill_limits) as they are read, so that a small hostile
file (a gzip of one huge cell, an XLSX of one huge shared string) is refused before the readers hold it."""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from agent.core.bill_limits import BillLimits
from agent.errors import BillFormatError

QUOTE, LF, CR, LESS_THAN = ord('"'), ord("\n"), ord("\r"), ord("<")
# Bytes that hold no data in a CSV record: a record of only these is a blank line, whatever its columns. As a
# table by byte value: one lookup per byte finds them, and the quotes and line breaks among them.
_NO_DATA = np.zeros(256, dtype=bool)
_NO_DATA[[ord(","), ord(" "), ord("\t"), QUOTE, LF, CR]] = True
PART_BLOCK_BYTES = 1 << 20
_SHEET = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?sheet[\s/>]")
# A cell's formula, `<f>` or `<x:f ...>`; a namespace prefix longer than this would split it unseen.
_FORMULA = re.compile(rb"<(?:[A-Za-z_][\w.-]{0,30}:)?f[\s/>]")
FORMULA_TAG_BYTES = 34


class BoundedCsv(io.RawIOBase):
    """A CSV bill's bytes (decompressed), refused as they are read once a record runs past max_row_bytes or
    the file past max_decompressed_bytes: CSV parsers grow their buffer to hold a record whole.

    A record ends at a line break outside quotes, and every quote opens or closes a quoted cell, as RFC 4180
    writes them: a stray quote in an unquoted cell makes the rest of the file look quoted until the next one,
    so such a file is refused only if that stretch is longer than a record may be."""

    def __init__(self, raw: BinaryIO, *, limits: BillLimits, source: str) -> None:
        super().__init__()
        self._raw = raw
        self._limits = limits
        self._source = source
        self._size = 0
        self._quoted = False
        # Bytes of the record being read, records ended so far, and whether the last byte ended one with a CR.
        self._record_bytes = 0
        self._records = 0
        self._after_cr = False
        # Data bytes of the record being read, and the rows (the header is row 1) of the records without any:
        # the readers skip a record as blank only if it is one of these, so that a record with data only in
        # columns the import does not read is rejected, not dropped.
        self._record_data = 0
        self.blank_rows: set[int] = set()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        data = self._raw.read(len(buffer))
        if not data and self._record_bytes and not self._record_data:
            # A last line of bare separators, without a line break.
            self.blank_rows.add(self._records + 1)
        self._check(np.frombuffer(data, dtype=np.uint8))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()

    def _check(self, block: np.ndarray) -> None:
        self._size += len(block)
        if self._size > self._limits.max_decompressed_bytes:
            raise BillFormatError("the file holds, once decompressed, "
                                  + self._limits.more_than("max_decompressed_bytes", "bytes"), source=self._source)
        no_data = np.flatnonzero(_NO_DATA.take(block))
        kinds = block[no_data]
        quotes = no_data[kinds == QUOTE]
        breaks = no_data[(kinds == LF) | (kinds == CR)]
        # A line break ends a record when an even number of quotes (counting an open one carried over) precede it.
        ends = breaks[(np.searchsorted(quotes, breaks) + self._quoted) % 2 == 0]
        self._quoted = bool((len(quotes) + self._quoted) % 2)
        lengths = np.diff(ends, prepend=-1) - 1
        if len(ends):
            lengths[0] += self._record_bytes
        tail = self._record_bytes + len(block) if not len(ends) else len(block) - int(ends[-1]) - 1
        # The LF of a CRLF ends no further record.
        previous = np.concatenate(([-1 if self._after_cr else -2], ends[:-1]))
        follows_cr = np.concatenate(([self._after_cr], block[ends[:-1]] == CR)) & (ends - previous == 1)
        counted = ~((block[ends] == LF) & follows_cr)
        self._note_blank_rows(no_data, ends, counted, size=len(block))
        over = np.flatnonzero(lengths > self._limits.max_row_bytes)
        if len(over):
            self._refuse(row=self._records + int(counted[:over[0]].sum()) + 1, quoted=False)
        self._records += int(counted.sum())
        self._record_bytes = tail
        self._after_cr = bool(len(ends)) and int(ends[-1]) == len(block) - 1 and block[-1] == CR
        if tail > self._limits.max_row_bytes:
            self._refuse(row=self._records + 1, quoted=self._quoted)

    def _note_blank_rows(self, no_data: np.ndarray, ends: np.ndarray, counted: np.ndarray, *, size: int) -> None:
        """Note the blank records among those ending at `ends`, from the positions of the block's bytes that hold
        no data: the data bytes up to a position are the bytes up to it less those."""
        if not len(ends):
            self._record_data += size - len(no_data)
            return
        at_ends = ends + 1 - np.searchsorted(no_data, ends, side="right")
        in_record = np.diff(at_ends, prepend=0)
        in_record[0] += self._record_data
        blank = in_record[counted] == 0
        first_row = self._records + 1
        self.blank_rows.update((first_row + np.flatnonzero(blank)).tolist())
        self._record_data = int(size - len(no_data) - at_ends[-1])

    def _refuse(self, *, row: int, quoted: bool) -> None:
        where = ", from a quoted cell on (is a quote left open?)," if quoted else ""
        raise BillFormatError(f"the record{where} holds " + self._limits.more_than("max_row_bytes", "bytes"),
                              source=self._source, row=row)


def check_table_cells(table: pa.Table, rows: np.ndarray, *, limits: BillLimits, source: str) -> None:
    """Refuse a cell longer than max_cell_chars, naming its row and column."""
    for name in table.column_names:
        for chunk in table[name].chunks:
            values = chunk.dictionary if pa.types.is_dictionary(chunk.type) else chunk
            if not pa.types.is_string(values.type) or not len(values):
                continue
            longest = pc.max(pc.utf8_length(values)).as_py()
            if longest is not None and longest > limits.max_cell_chars:
                lengths = pc.utf8_length(pc.cast(table[name], pa.string())).fill_null(0).to_numpy()
                _refuse_cell(row=int(rows[np.argmax(lengths > limits.max_cell_chars)]), column=name,
                             limits=limits, source=source)


def check_frame_cells(chunk: pd.DataFrame, *, limits: BillLimits, source: str) -> None:
    """Refuse a cell longer than max_cell_chars, naming its row (the frame's index) and column."""
    for name in chunk.columns:
        over = chunk[name].str.len() > limits.max_cell_chars
        if over.any():
            _refuse_cell(row=int(over.idxmax()), column=name, limits=limits, source=source)


def _refuse_cell(*, row: int, column: str, limits: BillLimits, source: str) -> None:
    raise BillFormatError("the cell holds " + limits.more_than("max_cell_chars", "characters"), source=source,
                          row=row, column=column)


def check_xlsx(path: str, *, limits: BillLimits, source: str) -> bool:
    """Refuse an XLSX archive whose parts the XLSX reader would hold past the limits: it loads the shared
    strings and every part but the worksheets whole, and sets up every sheet, when it opens the file. Each part
    is decompressed here as the reader will, its sizes as written in the archive not trusted.

    Whether a worksheet holds formulas (whose values the writer may not have computed)."""
    with zipfile.ZipFile(path) as archive:
        parts = _XlsxParts(archive, limits=limits, source=source)
        sheets = len(_SHEET.findall(parts.read(parts.workbook)))
        if sheets > limits.max_xlsx_sheets:
            raise BillFormatError("the workbook has " + limits.more_than("max_xlsx_sheets", "sheets"), source=source)
        size = 0
        for info in archive.infolist():
            size += parts.check(info.filename) if parts.is_read(info.filename) else info.file_size
            if size > limits.max_decompressed_bytes:
                raise BillFormatError("the file holds, once decompressed, "
                                      + limits.more_than("max_decompressed_bytes", "bytes"), source=source)
    return parts.formulas


class _XlsxParts:
    """The parts of an XLSX archive by how the XLSX reader reads them: worksheets streamed, the shared strings
    and the others whole."""

    def __init__(self, archive: zipfile.ZipFile, *, limits: BillLimits, source: str) -> None:
        # openpyxl is loaded here, with the first XLSX bill: it takes a tenth of a second to import.
        from openpyxl.packaging.manifest import Manifest
        from openpyxl.packaging.relationship import get_dependents, get_rels_path
        from openpyxl.xml.constants import ARC_CONTENT_TYPES, ARC_WORKBOOK, SHARED_STRINGS, XLSM, XLSX, XLTM, XLTX
        from openpyxl.xml.functions import fromstring

        self._archive = archive
        self._limits = limits
        self._source = source
        self.sheets: set[str] = set()
        self.formulas = False
        manifest = Manifest.from_tree(fromstring(self.read(ARC_CONTENT_TYPES)))
        self.shared_strings = {part.PartName[1:] for part in manifest.Override if part.ContentType == SHARED_STRINGS}
        workbook_types = {XLSX, XLSM, XLTX, XLTM}
        self.workbook = next((part.PartName[1:] for part in manifest.Override if part.ContentType in workbook_types),
                             ARC_WORKBOOK)
        # Without its relationships the workbook cannot be opened: the XLSX reader says so in its own words.
        rels = get_rels_path(self.workbook)
        relations = [relation for relation in get_dependents(self, rels) if relation.TargetMode != "External"] \
            if rels in archive.namelist() else []
        sheets = {relation.target for relation in relations if relation.Type.endswith("/worksheet")}
        self.whole = {relation.target for relation in relations if not relation.Type.endswith("/worksheet")}
        self.sheets = sheets - self.whole - self.shared_strings

    def is_read(self, name: str) -> bool:
        return name in self.sheets or name in self.whole or name.endswith((".xml", ".rels"))

    def read(self, name: str) -> bytes:
        """A part read whole, within max_xlsx_part_bytes (as openpyxl's ZipFile.read, for get_dependents)."""
        blocks = []
        self._scan(name, limit="max_xlsx_part_bytes", blocks=blocks)
        return b"".join(blocks)

    def check(self, name: str) -> int:
        """The part's size, once checked against its limits."""
        limit = "max_xlsx_shared_strings_bytes" if name in self.shared_strings else \
            None if name in self.sheets else "max_xlsx_part_bytes"
        return self._scan(name, limit=limit, blocks=None)

    def _scan(self, name: str, *, limit: str | None, blocks: list[bytes] | None) -> int:
        """Decompress a part, refusing it past `limit` bytes or past max_row_bytes between two tags (one cell's
        text, or one tag, is held whole by the XML parser)."""
        size, since_tag, previous = 0, 0, b""
        with self._archive.open(posixpath.normpath(name)) as part:
            while block := part.read(PART_BLOCK_BYTES):
                # The end of the previous block, for a formula tag cut in two.
                self.formulas |= name in self.sheets and _FORMULA.search(previous + block) is not None
                previous = block[-FORMULA_TAG_BYTES:]
                size += len(block)
                if limit is not None and size > getattr(self._limits, limit):
                    raise BillFormatError(f"the part {name} holds, once decompressed, "
                                          + self._limits.more_than(limit, "bytes"), source=self._source)
                tags = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == LESS_THAN)
                longest = max(since_tag + (int(tags[0]) if len(tags) else len(block)),
                              int(np.diff(tags).max(initial=0)))
                since_tag = len(block) - int(tags[-1]) if len(tags) else since_tag + len(block)
                if max(longest, since_tag) > self._limits.max_row_bytes:
                    raise BillFormatError(f"the part {name} holds a text or tag of "
                                          + self._limits.more_than("max_row_bytes", "bytes"), source=self._source)
                if blocks is not None:
                    blocks.append(block)
        return size
