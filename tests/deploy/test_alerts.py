"""The chart's alerts: the PrometheusRule rendered with tests/deploy/promtool/values.yaml (every alert's defaults) and
with promtool/overrides-values.yaml (one alert disabled, two alerts' `for` and severity overridden),
checked and unit-tested by `promtool test rules`, where every alert has a case that fires and one that does not; and
every alert's runbook, a section of the chart's RUNBOOKS.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import ALL_ON_VALUES, CHART, REPO, ChartTools
from tests.support.fixtures_prom import ensure_prometheus

pytestmark = pytest.mark.deploy

PROMTOOL_DIR = Path(__file__).parent / "promtool"
ALERT_TESTS = PROMTOOL_DIR / "alerts-test.yaml"
OVERRIDE_TESTS = PROMTOOL_DIR / "overrides-test.yaml"
RUNBOOKS = CHART / "RUNBOOKS.md"
ALERTS = {"CzAgentAllocationStale", "CzAgentRunsFailing", "CzAgentUnallocatedShareHigh", "CzAgentUsageCoverageLow",
          "CzAgentCompanyOverBudget", "CzAgentServiceOverBudget", "CzAgentCompanyForecastOverBudget",
          "CzAgentServiceForecastOverBudget"}
RUNBOOK_PARTS = ["Meaning", "Impact", "Diagnosis", "Fix"]


def rendered_rules(chart_tools: ChartTools, *values: Path) -> list[dict]:
    """The PrometheusRule's groups."""
    arguments = [argument for path in values for argument in ("--values", str(path))]
    (rule,) = chart_tools.render(*arguments, "--show-only", "templates/prometheusrule.yaml")
    return rule["spec"]["groups"]


def alert_rules(groups: list[dict]) -> list[dict]:
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def workdir(chart_tools: ChartTools, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rules files the promtool tests name, beside copies of those tests."""
    directory = tmp_path_factory.mktemp("promtool")
    for values, rules in (("values.yaml", "rules.yaml"), ("overrides-values.yaml", "overrides-rules.yaml")):
        groups = rendered_rules(chart_tools, PROMTOOL_DIR / values)
        (directory / rules).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    for tests in (ALERT_TESTS, OVERRIDE_TESTS):
        shutil.copy(tests, directory / tests.name)
    return directory


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    _, binary = ensure_prometheus()
    return subprocess.run([binary, *args], capture_output=True, text=True)


def test_rules_are_valid_without_duplicates(workdir: Path):
    result = promtool("check", "rules", str(workdir / "rules.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    # promtool reports duplicate rules (an alert with the same name and labels twice) without failing.
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout, result.stdout + result.stderr
    assert "duplicate" not in result.stdout + result.stderr


@pytest.mark.parametrize("tests", [ALERT_TESTS, OVERRIDE_TESTS], ids=lambda path: path.stem)
def test_alert_unit_tests_pass(workdir: Path, tests: Path):
    result = promtool("test", "rules", str(workdir / tests.name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_case(workdir: Path):
    alerts = {rule["alert"] for rule in alert_rules(yaml.safe_load((workdir / "rules.yaml").read_text())["groups"])}
    assert alerts == ALERTS
    cases = [case for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert alerts - fires == set(), "alerts without a test that fires them"
    assert alerts - silent == set(), "alerts without a test where they stay silent"


def test_a_disabled_alert_is_left_out(workdir: Path):
    rules = alert_rules(yaml.safe_load((workdir / "overrides-rules.yaml").read_text())["groups"])
    assert {rule["alert"] for rule in rules} == ALERTS - {"CzAgentRunsFailing"}


def test_every_alert_waits_has_a_severity_and_links_its_runbook(chart_tools: ChartTools):
    rules = alert_rules(rendered_rules(chart_tools, ALL_ON_VALUES))
    assert {rule["alert"] for rule in rules} == ALERTS
    base = default_runbook_url()
    anchors = runbook_anchors(RUNBOOKS.read_text())
    for rule in rules:
        assert rule["for"], rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        url, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert url == base, rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in {RUNBOOKS.name}"


def default_runbook_url() -> str:
    """With no `runbookBaseUrl`, the runbooks file at the chart's home."""
    assert yaml.safe_load((CHART / "values.yaml").read_text())["prometheusRule"]["runbookBaseUrl"] == ""
    home = yaml.safe_load((CHART / "Chart.yaml").read_text())["home"]
    return f"{home}/blob/main/{RUNBOOKS.relative_to(REPO)}"


def test_the_default_runbook_url_is_the_runbooks_file_at_the_charts_home(chart_tools: ChartTools):
    [rule, *_] = alert_rules(rendered_rules(chart_tools, ALL_ON_VALUES))
    assert rule["annotations"]["runbook_url"].startswith(default_runbook_url() + "#")


def test_each_alert_has_one_runbook_section_with_meaning_impact_diagnosis_and_fix():
    sections = re.split(r"^## ", RUNBOOKS.read_text(), flags=re.MULTILINE)[1:]
    by_alert = {section.splitlines()[0].strip(): section for section in sections}
    assert set(by_alert) == ALERTS
    for alert, section in by_alert.items():
        parts = re.findall(r"^### (.+)$", section, flags=re.MULTILINE)
        assert parts == RUNBOOK_PARTS, alert


def runbook_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}
