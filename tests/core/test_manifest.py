"""The typed run manifest: its JSON form round-trips exactly, unversioned manifests migrate, newer ones are refused."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.manifest import (MANIFEST_VERSION, BillInput, CostCarrying, CurrencyTotals, ReportDigest, RowCounts,
                                 RunManifest, UsageInput)
from agent.errors import StoreError

amounts = st.integers(0, 12).flatmap(lambda places: st.decimals(allow_nan=False, allow_infinity=False, places=places,
                                                               min_value=-10**12, max_value=10**12))
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


def currency_totals() -> st.SearchStrategy[CurrencyTotals]:
    return st.builds(CurrencyTotals, bill=amounts, bill_rounded=amounts, allocated=amounts, unallocated=amounts,
                     out_of_period=amounts)


manifests = st.builds(
    RunManifest,
    period=st.just("2026-10"),
    tool_version=st.just("0.1.0"),
    rules_digest=st.text("0123456789abcdef", min_size=64, max_size=64),
    usage=st.none() | st.builds(UsageInput, digest=st.text("0123456789abcdef", min_size=64, max_size=64),
                                namespaces=st.integers(0, 10**6), source=st.sampled_from(["file", "prometheus"]),
                                coverage=st.none() | st.dictionaries(names, st.floats(0, 1), max_size=3)),
    bills=st.lists(st.builds(BillInput, path=names, sha256=names, format=st.sampled_from(["native", "focus"]),
                             input_rows=st.integers(0, 10**9), accepted_rows=st.integers(0, 10**9),
                             rejected_rows=st.integers(0, 10**9), out_of_period_rows=st.integers(0, 10**9),
                             cost_column=st.none() | names),
                   max_size=3).map(tuple),
    rows=st.builds(RowCounts, input=st.integers(0, 10**9), accepted=st.integers(0, 10**9),
                   rejected=st.integers(0, 10**9), out_of_period=st.integers(0, 10**9)),
    totals=st.dictionaries(st.sampled_from(["USD", "KRW", "JPY", "KWD"]), currency_totals(), max_size=4),
    namespace_map=st.dictionaries(names, st.dictionaries(names, st.none() | names, max_size=3), max_size=3),
    namespace_shares=st.dictionaries(names, st.dictionaries(names, st.fractions(0, 1), max_size=3), max_size=3),
    report=st.builds(ReportDigest, format=st.sampled_from(["csv", "json", "parquet"]), sha256=names,
                     rows=st.integers(0, 10**6)),
    carrying=st.none() | st.builds(CostCarrying, unattributable=st.sampled_from(["unallocated", "common"]),
                                   idle=st.sampled_from(["spread", "common", "unallocated"])),
)


@given(manifest=manifests)
def test_the_stored_form_reads_back_to_an_equal_manifest_with_the_same_text(manifest: RunManifest) -> None:
    stored = json.dumps(manifest.to_json(), sort_keys=True)
    read = RunManifest.from_json(json.loads(stored))
    assert read == manifest
    assert json.dumps(read.to_json(), sort_keys=True) == stored
    for currency, totals in manifest.totals.items():
        assert read.totals[currency].bill.as_tuple() == totals.bill.as_tuple()  # exponent kept: "1600" vs "1600.00"


def test_an_unversioned_manifest_migrates_and_keeps_every_figure() -> None:
    version_1 = {
        "period": "2026-10", "tool_version": "0.1.0", "rules_digest": "ab" * 32,
        # Before live usage existed, the usage entry had no coverage.
        "usage": {"digest": "cd" * 32, "namespaces": 3, "source": "file"},
        "bills": [{"path": "bill.csv", "sha256": "ef" * 32, "format": "native", "input_rows": 5, "accepted_rows": 5,
                   "rejected_rows": 0, "out_of_period_rows": 0}],
        "rows": {"input": 5, "accepted": 5, "rejected": 0, "out_of_period": 0},
        "totals": {"USD": {"bill": "1600", "bill_rounded": "1600.00", "allocated": "1600.00", "unallocated": "0.00",
                           "out_of_period": "0"}},
        "namespace_map": {"prod": {"kube-system": None, "mobile-api": "mobile"}},
        "namespace_shares": {"prod": {"kube-system": "1/10", "mobile-api": "9/10"}},
        "report": {"format": "csv", "sha256": "01" * 32, "rows": 7},
    }
    manifest = RunManifest.from_json(version_1)
    assert manifest.version == MANIFEST_VERSION
    assert manifest.usage == UsageInput(digest="cd" * 32, namespaces=3, source="file", coverage=None)
    assert manifest.totals["USD"].bill_rounded == Decimal("1600.00") and manifest.totals["USD"].reconciles()
    assert manifest.namespace_shares["prod"]["mobile-api"] == Fraction(9, 10)
    assert manifest.rows.count("accepted") == 5
    migrated = manifest.to_json()
    assert migrated.pop("version") == MANIFEST_VERSION
    # What version 3 added is unknown for an earlier run, and said so: None.
    assert migrated == {**version_1, "usage": {**version_1["usage"], "coverage": None},
                        "bills": [{**version_1["bills"][0], "cost_column": None}], "carrying": None}


def test_a_manifest_from_a_newer_agent_is_refused_in_words() -> None:
    with pytest.raises(StoreError, match=f"run manifest version 99 is newer than this agent's {MANIFEST_VERSION}"):
        RunManifest.from_json({"version": 99})
