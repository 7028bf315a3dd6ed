"""The group of each key of value numbers, as the import's accumulator finds it for a chunk at once
(agent.bills.totals._KeyCodes): against a plain dictionary of keys, over chunks whose numbers outgrow their bit
fields, keys wider than 62 bits, and numberings started afresh."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.bills.totals import _KeyCodes

FIELDS = 4


@st.composite
def chunks(draw: st.DrawFn) -> list[tuple[tuple[int, ...], list[int], list[tuple[int, ...]]]]:
    """Chunks of distinct keys, each with its numbering's generation and field sizes; sizes only grow within a
    generation, up to past 2**20 (four such fields need 84 bits)."""
    result = []
    generation = (0,)
    sizes = [1] * FIELDS
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()) and draw(st.booleans()):
            generation = (generation[0] + 1,)
            sizes = [1] * FIELDS
        sizes = [size + draw(st.sampled_from([0, 0, 1, 3, 50, 2**21])) for size in sizes]
        keys = draw(st.lists(st.tuples(*(st.integers(0, size - 1) for size in sizes)), min_size=1, max_size=40,
                             unique=True))
        result.append((generation, list(sizes), keys))
    return result


@settings(max_examples=300, deadline=None)
@given(chunks())
def test_each_key_gets_the_group_a_dictionary_gives_it(drawn: list) -> None:
    codes = _KeyCodes()
    reference: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}

    for generation, sizes, keys in drawn:
        def add(new: list[tuple[int, ...]], generation: tuple[int, ...] = generation) -> list[int]:
            return [reference.setdefault((generation, key), len(reference)) for key in new]

        columns = [np.array(column, dtype=np.int64) for column in zip(*keys)]
        found = codes.groups(codes.encode(columns, sizes=sizes, generation=generation), add)

        assert found.tolist() == [reference[(generation, key)] for key in keys]


def test_a_key_is_added_once_while_its_fields_hold_and_again_after_they_are_outgrown() -> None:
    codes = _KeyCodes()
    added: list[tuple[int, ...]] = []

    def add(new: list[tuple[int, ...]]) -> list[int]:
        added.extend(new)
        return [sum(key) for key in new]

    def groups(keys: list[tuple[int, int]], sizes: list[int]) -> list[int]:
        columns = [np.array(column, dtype=np.int64) for column in zip(*keys)]
        return codes.groups(codes.encode(columns, sizes=sizes, generation=(1,)), add).tolist()

    assert groups([(1, 2), (0, 3)], sizes=[2, 4]) == [3, 3]
    assert groups([(0, 3), (1, 5)], sizes=[2, 8]) == [3, 6]
    assert added == [(1, 2), (0, 3), (1, 5)]
    # The first field's numbers reach 16: its 3 bits no longer hold them, and the codes start afresh.
    assert groups([(16, 3), (1, 2)], sizes=[17, 8]) == [19, 3]
    assert added[3:] == [(16, 3), (1, 2)]
