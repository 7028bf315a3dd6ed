import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from agent.core.rules import BillColumns, Budget, Budgets, parse_rules, rules_digest
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
        (BASE.replace("}}\n", "}, web: {gamma: 1}}\n"), "services.web.gamma: unknown company"),
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


@pytest.mark.parametrize(("text", "message"), [
    (BASE + "services: {other: {alpha: 1}}\n", "found key 'services' twice (first on line 2)"),
    ("companies: {alpha: 50, beta: 30, alpha: 20}\n", "found key 'alpha' twice (first on line 1)"),
    (BASE + "common_groups:\n  g: [mobile]\n  g: [mobile]\n", "found key 'g' twice (first on line 4)"),
])
def test_a_key_given_twice_is_refused_with_its_lines(text, message):
    with pytest.raises(RulesError) as refused:
        parse_rules(text, source="rules.yaml")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_merged_keys_may_still_be_overridden():
    rules = parse_rules("companies: {a: 1, b: 1}\nservices:\n  s1: &even {a: 1, b: 1}\n  s3: {<<: *even, b: 3}\n")
    assert rules.services["s3"] == {"a": 1, "b": 3}


def test_a_service_listed_twice_in_a_group_is_refused():
    text = BASE.replace("mobile: {alpha: 70, beta: 30}", "mobile: {alpha: 70}, mcmp: {beta: 1}")
    with pytest.raises(RulesError, match="common_groups.g: service 'mobile' listed more than once"):
        parse_rules(text + "common_groups: {g: [mobile, mobile, mcmp]}\n", source="rules.yaml")


@pytest.mark.parametrize("value", ["true", "false", "'2'", "2.0"])
def test_precision_must_be_a_whole_number_not_a_boolean_or_text(value):
    with pytest.raises(RulesError, match="precision: Input should be a valid integer"):
        parse_rules(BASE + f"precision: {value}\n", source="rules.yaml")


def test_names_that_yaml_1_1_reads_as_booleans_or_octal_stay_names():
    rules = parse_rules("companies: {no: 1, on: 2, 0123: 3}\nservices: {off: {no: 1}, yes: {on: 1}}\n"
                        "common_groups: {n: [off, yes]}\n")
    assert list(rules.companies) == ["no", "on", "0123"]
    assert rules.services == {"off": {"no": Decimal(1)}, "yes": {"on": Decimal(1)}}


@pytest.mark.parametrize(("text", "message"), [
    ("companies: {'': 1, a: 1}", "companies: a name must not be empty"),
    ("companies: {a: 1}\nservices: {' ': {a: 1}}", "services: a name must not be empty"),
    ("companies: {[a, b]: 1}", "found a key that is not a name"),
])
def test_a_name_that_is_empty_or_not_text_is_refused(text, message):
    with pytest.raises(RulesError, match=re.escape(message)):
        parse_rules(text, source="rules.yaml")


@pytest.mark.parametrize("name", ["a\nb", "a\rb", "a\u2028b", "a\x85b"])
def test_an_error_about_a_name_holding_a_line_break_stays_on_one_line(name):
    with pytest.raises(RulesError) as refused:
        parse_rules(yaml.safe_dump({"companies": {name: "lots"}}), source="rules.yaml")
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and message.startswith("rules.yaml: companies.a\\")


@pytest.mark.parametrize(("bill", "error"), [
    ({"table": "hive.bills.cur"}, "set engine: trino or athena"),
    ({"engine": "trino"}, "needs table: catalog.schema.table"),
    ({"engine": "athena"}, "needs table: catalog.schema.table"),
    ({"engine": "bigquery", "table": "p.d.t"}, "'files', 'trino' or 'athena'"),
    ({"engine": "trino", "table": "bills.cur"}, "is not catalog.schema.table"),
    ({"engine": "trino", "table": "hive..cur"}, "is not catalog.schema.table"),
])
def test_a_bill_table_needs_its_engine_and_a_whole_name(bill, error):
    with pytest.raises(ValidationError, match=error):
        BillColumns(**bill)
    assert BillColumns(engine="trino", table="hive.bills.cur").table == "hive.bills.cur"
    assert BillColumns(engine="athena", table="awsdatacatalog.bills.cur").engine == "athena"


@pytest.mark.parametrize(("basis", "message"), [
    ("tpu", "clusters.prod.usage_basis: unknown resource 'tpu'; expected memory, cpu, gpu or a blend such as"),
    ("{memory: 1, disk: 2}", "clusters.prod.usage_basis: unknown resource 'disk'"),
    ("{}", "clusters.prod.usage_basis: an empty blend"),
    ("[cpu]", "clusters.prod.usage_basis: unknown resource ['cpu']"),
    ("3", "clusters.prod.usage_basis: unknown resource 3"),
    ("{memory: 0, cpu: 0}", "clusters.prod.usage_basis: weights must not all be 0"),
    ("{memory: -1, cpu: 2}", "clusters.prod.usage_basis.memory: weight must be >= 0"),
])
def test_a_usage_basis_names_known_resources_with_sound_weights(basis, message):
    with pytest.raises(RulesError) as refused:
        parse_rules(BASE + f"clusters: {{prod: {{usage_basis: {basis}}}}}\n")
    assert message in str(refused.value)


def test_a_blend_is_normalised_and_zero_weights_dropped_and_a_cluster_without_one_weighs_memory():
    rules = parse_rules(BASE + "idle: unallocated\nclusters: {prod: {usage_basis: {memory: 3, cpu: 1, gpu: 0}}}\n")
    assert rules.usage_basis("prod") == {"memory": Fraction(3, 4), "cpu": Fraction(1, 4)}
    assert rules.usage_basis("stage") == {"memory": Fraction(1)}
    assert rules.idle == "unallocated"
    with pytest.raises(RulesError, match="idle: Input should be 'spread', 'common' or 'unallocated'"):
        parse_rules(BASE + "idle: hidden\n")


BUDGETS = BASE + "budgets:\n  companies: {alpha: {amount: \"20000\", currency: USD}}\n  services: {mobile: %s}\n"


def test_budgets_are_exact_amounts_per_company_and_service_and_none_by_default():
    rules = parse_rules(BUDGETS % "{amount: 5000.10, currency: EUR}", source="rules.yaml")
    assert rules.budgets.companies == {"alpha": Budget(amount=Decimal("20000"), currency="USD")}
    assert rules.budgets.services == {"mobile": Budget(amount=Decimal("5000.10"), currency="EUR")}
    assert parse_rules(BASE).budgets == Budgets(companies={}, services={})


@pytest.mark.parametrize(("budget", "message"), [
    ("{amount: \"0\", currency: USD}", "budgets.services.mobile.amount: must be more than 0, got 0"),
    ("{amount: -5, currency: USD}", "budgets.services.mobile.amount: must be more than 0, got -5"),
    ("{amount: true, currency: USD}", "budgets.services.mobile.amount: must be an amount such as \"20000\""),
    ("{amount: [1], currency: USD}", "budgets.services.mobile.amount: must be an amount such as \"20000\""),
    ("{amount: \"1_000\", currency: USD}", "budgets.services.mobile.amount: must be an exact amount: not a number"),
    ("{amount: \"lots\", currency: USD}", "budgets.services.mobile.amount: must be an exact amount: not a number"),
    ("{amount: .inf, currency: USD}", "budgets.services.mobile.amount: must be an exact amount: not a finite number"),
    ("{amount: 1.0e30, currency: USD}", "budgets.services.mobile.amount: must be an exact amount: out of range"),
    ("{amount: 100, currency: usd}", "budgets.services.mobile.currency: must be a 3-letter ISO 4217 code, got 'usd'"),
    ("{amount: 100}", "budgets.services.mobile.currency: Field required"),
    ("{amount: 100, currency: USD, per: week}", "budgets.services.mobile.per: unknown key"),
    ("100", "budgets.services.mobile: Input should be a valid dictionary"),
])
def test_a_bad_budget_names_its_key(budget, message):
    with pytest.raises(RulesError) as refused:
        parse_rules(BUDGETS % budget, source="rules.yaml")
    assert str(refused.value).startswith("rules.yaml: ")
    assert message in str(refused.value)


@pytest.mark.parametrize(("budgets", "message"), [
    ("{companies: {gamma: {amount: 1, currency: USD}}}", "budgets.companies.gamma: unknown company (not in companies)"),
    ("{services: {web: {amount: 1, currency: USD}}}", "budgets.services.web: unknown service (not in services)"),
    ("{companies: {alpha: {amount: 1, currency: USD}, alpha: {amount: 2, currency: EUR}}}",
     "found key 'alpha' twice (first on line 3)"),
    ("{services: {mobile: {amount: 1, currency: USD}}, services: {}}", "found key 'services' twice (first on line 3)"),
    ("{teams: {}}", "budgets.teams: unknown key"),
])
def test_a_budget_of_an_unknown_name_or_a_second_budget_of_a_name_is_refused(budgets, message):
    with pytest.raises(RulesError) as refused:
        parse_rules(BASE + f"budgets: {budgets}\n", source="rules.yaml")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_budgets_leave_the_rules_digest_as_it_was_before_budgets():
    # The digest the runs made before budgets existed hold for the worked example's rules: were it to change, the
    # service would allocate every open period again after an upgrade ("rules changed").
    worked = load_rules(Path(__file__).resolve().parents[1] / "data" / "worked" / "rules.yaml")
    assert rules_digest(worked) == "90ce0574c573ddadca97eadd5c324222897b5beb898450f6e70d87ecfbe900f6"
    budgeted = parse_rules(BUDGETS % "{amount: 5000, currency: USD}")
    assert rules_digest(budgeted) == rules_digest(parse_rules(BASE))
