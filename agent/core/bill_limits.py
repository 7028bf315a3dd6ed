"""The sizes past which a bill file is refused as hostile or corrupt: one list that the settings
(CZ_AGENT_BILL_*) and the bill readers share.

Each default is far above what real bills hold (the public samples' largest cell is under 1 KB, their longest
row under 3 KB, AWS caps a resource's tags at about 20 KB), and low enough that reading stays within the
agent's memory budget."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class BillLimits:
    # Characters in one cell of a column the import reads.
    max_cell_chars: int = MIB
    # Bytes of one CSV record as written, or of one piece of XLSX markup (a tag or the text between two).
    max_row_bytes: int = 8 * MIB
    # Bytes of the bill once decompressed: a gzip stream, the parts of an XLSX archive, a plain CSV's size.
    max_decompressed_bytes: int = 32 << 30
    # Bytes of the XLSX shared strings, which the XLSX reader loads whole.
    max_xlsx_shared_strings_bytes: int = 64 * MIB
    # Bytes of any other XLSX part read whole (workbook, styles, relationships, properties).
    max_xlsx_part_bytes: int = 4 * MIB
    # Sheets in a workbook (only the first is read; the reader still sets up every one).
    max_xlsx_sheets: int = 256
    # The sheet's rows and columns, counted as the reader yields them (gaps included): Excel's own row limit,
    # and a sixteenth of its columns.
    max_xlsx_rows: int = 1_048_576
    max_xlsx_columns: int = 1_024

    def more_than(self, limit: str, unit: str) -> str:
        """A refusal's words for the limit passed, and how to raise it for a genuine bill."""
        setting = setting_name(limit)
        return f"more than {getattr(self, limit)} {unit} (the limit {setting}; raise CZ_AGENT_{setting.upper()} if " \
            "the bill is genuine)"


def setting_name(limit: str) -> str:
    """The setting (agent.settings) of a BillLimits field."""
    return f"bill_{limit}"
