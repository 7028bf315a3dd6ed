"""Text from input (file names, names in bills and rules) shown on one line: control characters escaped."""

from __future__ import annotations

# Control characters and Unicode line separators as backslash escapes ("\n", "\x85", "\u2028"); tabs stay.
_ESCAPES = {code: repr(chr(code))[1:-1] for code in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
            if code != 0x09}


def one_line(text: str) -> str:
    """The text with every character that would break or rewrite a line escaped."""
    return text.translate(_ESCAPES)
