"""The chart's alerts: the PrometheusRule rendered with tests/deploy/promtool/values.yaml, checked and unit-tested
by `promtool test rules` (promtool/alerts-test.yaml), where every alert has a case that fires and one that does not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import ChartTools
from tests.support.fixtures_prom import ensure_prometheus

pytestmark = pytest.mark.deploy

PROMTOOL_DIR = Path(__file__).parent / "promtool"
ALERT_TESTS = PROMTOOL_DIR / "alerts-test.yaml"


@pytest.fixture(scope="module")
def rules_file(chart_tools: ChartTools, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PrometheusRule's groups as a plain rules file, beside a copy of the test file that names it."""
    (rule,) = chart_tools.render("--values", str(PROMTOOL_DIR / "values.yaml"),
                                 "--show-only", "templates/prometheusrule.yaml")
    workdir = tmp_path_factory.mktemp("promtool")
    path = workdir / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    shutil.copy(ALERT_TESTS, workdir / ALERT_TESTS.name)
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    _, binary = ensure_prometheus()
    return subprocess.run([binary, *args], capture_output=True, text=True)


def test_rules_are_valid(rules_file: Path):
    result = promtool("check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_alert_unit_tests_pass(rules_file: Path):
    result = promtool("test", "rules", str(rules_file.parent / ALERT_TESTS.name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_case(rules_file: Path):
    alerts = {rule["alert"] for group in yaml.safe_load(rules_file.read_text())["groups"] for rule in group["rules"]}
    assert alerts == {"CzAgentAllocationStale", "CzAgentRunsFailing", "CzAgentUnallocatedShareHigh",
                      "CzAgentUsageCoverageLow", "CzAgentCompanyOverBudget"}
    cases = [case for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert alerts - fires == set(), "alerts without a test that fires them"
    assert alerts - silent == set(), "alerts without a test where they stay silent"
