"""The shared pieces of the bill import: date months, tag lookup, column matching, read-ahead."""

from __future__ import annotations

import itertools
import json
import threading
import tracemalloc

import pandas as pd
import pytest

from agent.bills.columns import find_column
from agent.bills.dates import months
from agent.bills.reader import prefetched
from agent.bills.tags import MAX_CACHED_TAGS_CHARS, TagReader


@pytest.mark.parametrize(("text", "month"), [
    ("2024-09-01 00:00:00", "2024-09"),
    ("2024-09-30T23:00:00.000Z", "2024-09"),
    ("2024-09-30T23:00:00-05:00", "2024-09"),  # the literal date, no time-zone conversion
    ("2024-09-01", "2024-09"),
    ("20240901", "2024-09"),
    ("2024-09", "2024-09"),
    ("9/1/2023", "2023-09"),
    ("12/31/2023", "2023-12"),
    ("2024-13-01", None),
    ("31/12/2023", None),
    ("yesterday", None),
])
def test_months(text, month):
    result = months(pd.Series([text, None], dtype="str"))
    assert (None if pd.isna(result[0]) else result[0]) == month
    assert pd.isna(result[1])


@pytest.mark.parametrize(("text", "value"), [
    ('{"cz_container_bill": "mobile"}', "mobile"),
    ('{" cz_container_bill ": " mobile "}', "mobile"),
    ('{"user:cz_container_bill": "a"}', "a"),
    ('{"user_cz_container_bill": "b"}', "b"),
    ('{"CZ_CONTAINER_BILL": "c"}', "c"),
    ('{"CZ_CONTAINER_BILL": "ci", "user_cz_container_bill": "exact"}', "exact"),
    ('{"cz_container_bill": "NULL", "Cz_Container_Bill": "fallback"}', "fallback"),
    ('{"cz_container_bill": null}', None),
    ('{"cz_container_bill": "   "}', None),
    ('{"cz_container_bill": 7}', "7"),
    ('"cz_container_bill": "braceless", "x": "y"', "braceless"),
    ("{}", None),
])
def test_tag_reader_values(text, value):
    assert TagReader("cz_container_bill").read([text]) == [(value, None)]


@pytest.mark.parametrize("text", ['{"a": ', "[1, 2]", '"just text"', "{'a': 'b'}", "null", "42"])
def test_tag_reader_broken(text):
    [(value, error)] = TagReader("cz_container_bill").read([text])
    assert value is None
    assert error is not None and error.startswith("tags are not")


def test_tag_reader_missing_cell_is_no_tag_and_no_error():
    assert TagReader("k").read([float("nan"), None]) == [(None, None), (None, None)]


def test_find_column_prefers_exact_spelling_then_ignores_case():
    assert find_column(["tags", "Tags"], ["Tags"]) == "Tags"
    assert find_column(["TAGS"], ["Tags", "resource_tags"]) == "TAGS"
    assert find_column([" EffectiveCost "], ["effectivecost"]) == " EffectiveCost "
    assert find_column(["a", "b"], ["c"]) is None


def test_prefetched_gives_every_item_in_order():
    assert list(prefetched(iter(range(1000)))) == list(range(1000))


def test_prefetched_raises_the_producers_error_after_its_items():
    def items():
        yield 1
        raise ValueError("bad block")
    consumed = []
    with pytest.raises(ValueError, match="bad block"):
        for item in prefetched(items()):
            consumed.append(item)
    assert consumed == [1]


def test_prefetched_stops_and_closes_the_source_when_the_consumer_stops():
    closed = threading.Event()

    def items():
        try:
            yield from itertools.count()
        finally:
            closed.set()
    stream = prefetched(items())
    assert next(stream) == 0
    stream.close()
    assert closed.is_set()
    assert not any(thread.name == "bill-reader" for thread in threading.enumerate())


def test_the_tag_texts_remembered_are_bounded_however_many_distinct_ones_a_bill_has():
    reader = TagReader("cz_container_bill")
    padding = "x" * 60_000
    tracemalloc.start()
    try:
        for number in range(600):  # 36 MB of distinct tag texts, more than four times the bound
            [(value, error)] = reader.read([json.dumps({"cz_container_bill": f"svc-{number}", "note": padding})])
            assert (value, error) == (f"svc-{number}", None)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 2 * MAX_CACHED_TAGS_CHARS
    # A text seen again after the bound is still read right.
    assert reader.read([json.dumps({"cz_container_bill": "svc-599", "note": padding})]) == [("svc-599", None)]
