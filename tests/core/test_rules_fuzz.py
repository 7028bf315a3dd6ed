"""Property-based fuzzing of the rules parser: any bytes, mutated real rules files and hostile YAML give Rules
or a one-line RulesError; never another exception, never a hang.

CZ_AGENT_FUZZ_EXAMPLES raises the number of examples per property (the default keeps `make test` short).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.rules import Rules, parse_rules
from agent.errors import RulesError
from agent.sources.rules_file import load_rules
from tests.support.fuzz import EXAMPLE_SECONDS, time_limit

ROOT = Path(__file__).resolve().parents[2]
REAL_RULES = [ROOT / "demo" / "rules.yaml", ROOT / "tests" / "data" / "worked" / "rules.yaml"]
EXAMPLES = int(os.environ.get("CZ_AGENT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="CZ_AGENT_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KEYS = ["companies", "services", "common_groups", "namespaces", "attribution", "bill", "clusters", "currency",
        "precision", "tag_key", "unattributable", "unmapped_namespaces", "match", "service", "company", "budgets",
        "amount"]


def rules_outcome(content: bytes) -> Rules | RulesError:
    """Load `content` as a rules file: the rules, or the RulesError it raised (any other error fails)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "rules.yaml"
        path.write_bytes(content)
        try:
            with time_limit(EXAMPLE_SECONDS):
                return load_rules(path)
        except RulesError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e), repr(str(e))
            return e


yaml_scalars = st.one_of(
    st.text(max_size=20), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.sampled_from([".inf", "-.inf", ".nan", "1e999999999", "1e-999999999", "9" * 5000, "0x1F", "0o17", "1_000.5",
                     "190:20:30.15", "2020-01-01", "!!binary aGk=", "!!python/object:os.system ls", "*undefined",
                     "&a x", "~", "<<: *a", "'", '"', "{", "[", "- -", ": :"]),
)


def yaml_values(depth: int = 3) -> st.SearchStrategy:
    return st.recursive(yaml_scalars, lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=4)),
        max_leaves=depth * 6)


@FUZZ
@given(content=st.binary(max_size=2048))
def test_random_bytes_give_rules_error(content: bytes) -> None:
    rules_outcome(content)


@FUZZ
@given(document=st.dictionaries(st.sampled_from(KEYS), yaml_values(), max_size=6))
def test_documents_of_known_keys_with_hostile_values(document: dict) -> None:
    rules_outcome(yaml.safe_dump(document, allow_unicode=True).encode())


@FUZZ
@given(data=st.data(), source=st.sampled_from(REAL_RULES))
def test_mutated_real_rules_files(data: st.DataObject, source: Path) -> None:
    content = bytearray(source.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(content)))
        action = data.draw(st.sampled_from(["cut", "insert", "delete"]))
        if action == "cut":
            del content[at:]
        elif action == "insert":
            content[at:at] = data.draw(st.one_of(st.binary(max_size=8), st.text(max_size=8).map(str.encode),
                                                 st.sampled_from([b"\t", b": ", b"- ", b"&a ", b"*a", b"!!", b"{",
                                                                  b"\xff", b"\x00", b"1e99999999"])))
        else:
            del content[at:at + data.draw(st.integers(1, 20))]
    rules_outcome(bytes(content))


@pytest.mark.parametrize("text, reason", [
    # Past about 1000 levels PyYAML (6.0.4 on) refuses flow nesting itself, in its own words: the agent only
    # promises that the file is refused as invalid YAML, in one line and in bounded time.
    ("companies: " + "[" * 100_000 + "]" * 100_000, "not valid YAML"),
    ("companies: " + "{a: " * 50_000 + "1" + "}" * 50_000, "not valid YAML"),
    ("companies: " + "[" * 150 + "]" * 150, "nested too deeply (more than 64 levels)"),
    ("companies:\n" + "".join(" " * level + "- \n" for level in range(100)), "nested too deeply"),
    ("a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
     "companies: {a: 1}\ncommon_groups: {g: *e}\n", "expands to"),
    ("companies: {a: .inf}", "companies.a: Input should be a finite number"),
    ("companies: {a: .nan, b: 1}", "companies.a: Input should be a finite number"),
    ("companies: {a: 1.0e999999999}", "companies.a: Decimal input should have no more than 30 digits"),
    ("companies: {a: 1.0e-999999999}", "companies.a: Decimal input should have no more than"),
    ("companies: {a: " + "9" * 5000 + "}", "not valid YAML"),
    ("companies: {a: 1}\n---\ncompanies: {b: 1}\n", "expected a single document"),
    ("companies: !!python/object/apply:os.system [echo pwned]", "not valid YAML"),
])
def test_hostile_yaml_is_refused_in_one_line_and_bounded_time(text: str, reason: str) -> None:
    started = time.monotonic()
    with time_limit(EXAMPLE_SECONDS), pytest.raises(RulesError) as refused:
        parse_rules(text, source="rules.yaml")
    assert reason in str(refused.value) and "\n" not in str(refused.value)
    assert len(str(refused.value)) < 2000
    assert time.monotonic() - started < EXAMPLE_SECONDS


def test_a_rules_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    error = rules_outcome("companies: {café: 1}\n".encode("latin-1"))
    assert isinstance(error, RulesError) and "is not UTF-8 text (byte 15" in str(error)


def test_anchors_and_merge_keys_of_ordinary_size_still_work() -> None:
    rules = parse_rules("companies: {a: 1, b: 1}\nservices:\n  s1: &even {a: 1, b: 1}\n  s2: *even\n"
                        "  s3: {<<: *even, b: 3}\n")
    assert rules.services["s3"] == {"a": 1, "b": 3}
