from decimal import Decimal

import pytest

from agent.core.rules import parse_rules, rules_digest
from agent.errors import RulesError
from agent.sources.rules_file import load_rules

BASE = "companies: {alpha: 50, beta: 30}\nservices: {mobile: {alpha: 70, beta: 30}}\n"


def test_design_rules_parse_with_defaults_and_exact_weights():
    rules = parse_rules(BASE + "common_groups: {subcom: [mobile]}\nprecision: 3\ncurrency: KRW\n")
    assert rules.tag_key == "cz_container_bill"
    assert rules.unmapped_namespaces == "common"
    assert rules.unattributable == "unallocated"
    assert rules.services["mobile"] == {"alpha": Decimal(70), "beta": Decimal(30)}
    assert rules.precision == 3


def test_float_weights_are_read_as_exact_decimals():
    rules = parse_rules("companies: {alpha: 0.1, beta: 0.2}\n")
    assert rules.companies == {"alpha": Decimal("0.1"), "beta": Decimal("0.2")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("companies: {alpha: 50}\nservices: {mobile: {alpha: -1}}", "services.mobile.alpha: weight must be >= 0"),
        ("companies: {alpha: -5, beta: 1}", "companies.alpha: weight must be >= 0"),
        ("companies: {alpha: 0}", "companies: weights must not all be 0"),
        (BASE + "services: {web: {gamma: 1}}", "services.web.gamma: unknown company"),
        (BASE + "common_groups: {subcom: [mobile, nope]}", "common_groups.subcom: unknown service 'nope'"),
        (BASE + "common_groups: {subcom: []}", "common_groups.subcom: needs at least one service"),
        (BASE + "namespaces: {payments: nope}", "namespaces.payments: unknown service 'nope'"),
        (BASE + "unmapped_namespaces: sometimes", "unmapped_namespaces: Input should be 'common' or 'proportional'"),
        (BASE + "precision: -1", "precision: Input should be greater than or equal to 0"),
        (BASE + "currency: dollars", "currency: must be a 3-letter ISO 4217 code"),
        (BASE + "companys: {a: 1}", "companys: unknown key"),
        ("services: {}", "companies: Field required"),
        ("companies: [alpha]", "companies: Input should be a valid dictionary"),
        ("- just a list", "expected a mapping of rules at the top level"),
        ("companies: {alpha: 1", "not valid YAML"),
    ],
)
def test_invalid_rules_name_the_key_and_the_reason(text, message):
    with pytest.raises(RulesError) as raised:
        parse_rules(text, source="rules.yaml")
    assert str(raised.value).startswith("rules.yaml: ")
    assert message in str(raised.value)


def test_missing_rules_file_is_a_rules_error(tmp_path):
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "absent.yaml")


def test_digest_ignores_yaml_layout():
    compact = parse_rules("companies: {alpha: 50, beta: 30}")
    spread = parse_rules("# comment\ncompanies:\n  alpha: 50\n  beta: 30\n")
    assert rules_digest(compact) == rules_digest(spread)
    assert rules_digest(compact) != rules_digest(parse_rules("companies: {alpha: 50, beta: 31}"))
