"""The tag value inside JSON tag objects (FOCUS `Tags`, CUR 2.0 `resource_tags`, Azure `Tags`)."""

from __future__ import annotations

import json
from collections.abc import Iterable

# Text a tag value is missing with, besides JSON null.
_MISSING_VALUES = frozenset({"", "NULL", "null"})
# Clouds cap a resource's tags at a few kilobytes (AWS: 50 tags of 128 + 256 characters); a larger cell is
# hostile or corrupt, and parsing it would cost memory for nothing.
MAX_TAGS_CHARS = 64 * 1024
# The distinct tag texts remembered with their verdicts, in characters: real bills repeat a few thousand tag sets
# of a few hundred characters; past this, further texts are parsed each time they appear.
MAX_CACHED_TAGS_CHARS = 8 * 1024 * 1024


class TagReader:
    """Finds one tag key in JSON tag texts, parsing each distinct text once: bills repeat a few tag sets."""

    def __init__(self, tag_key: str) -> None:
        self._keys = (tag_key, f"user:{tag_key}", f"user_{tag_key}")
        self._parsed: dict[str, tuple[str | None, str | None]] = {}
        self._cached_chars = 0

    def read(self, texts: Iterable[object]) -> list[tuple[str | None, str | None]]:
        """(tag value, error) of each stripped text; non-strings are missing cells (no value, no error)."""
        return [self._read_one(text) if isinstance(text, str) else (None, None) for text in texts]

    def _read_one(self, text: str) -> tuple[str | None, str | None]:
        found = self._parsed.get(text)
        if found is None:
            found = self._parse(text)
            # Bounded: thousands of distinct large tag sets would otherwise all be kept for the whole file.
            if self._cached_chars + len(text) <= MAX_CACHED_TAGS_CHARS:
                self._parsed[text] = found
                self._cached_chars += len(text)
        return found

    def _parse(self, text: str) -> tuple[str | None, str | None]:
        # Azure EA exports drop the outer braces: `"a": "b","c": "d"`. Other texts parse as they are, so that
        # an array or a number is reported as such.
        if len(text) > MAX_TAGS_CHARS:
            return None, f"tags are {len(text)} characters long, more than {MAX_TAGS_CHARS}: {_excerpt(text)}"
        body = "{" + text + "}" if text.startswith('"') else text
        try:
            tags = json.loads(body)
        except ValueError:
            return None, f"tags are not valid JSON: {_excerpt(text)}"
        except RecursionError:
            return None, f"tags are nested too deeply: {_excerpt(text)}"
        if not isinstance(tags, dict):
            return None, f"tags are not a JSON object: {_excerpt(text)}"
        return _find_value(tags, self._keys), None


def _find_value(tags: dict[str, object], keys: tuple[str, ...]) -> str | None:
    """The first present value among `keys`, matched exactly then case-insensitively; keys are trimmed."""
    trimmed = [(name.strip(), value) for name, value in tags.items()]
    for fold in (False, True):
        for key in keys:
            wanted = key.casefold() if fold else key
            for name, value in trimmed:
                if (name.casefold() if fold else name) == wanted and (found := _clean(value)) is not None:
                    return found
    return None


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = (value if isinstance(value, str) else str(value)).strip()
    return None if text in _MISSING_VALUES else text


def _excerpt(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")
