"""The chart itself: helm lint, the helm-unittest suites (one or more per template), the values schema and the
README's values table."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
import yaml

from tests.deploy.tools import ALL_ON_VALUES, CHART, REPO, ChartTools

pytestmark = pytest.mark.deploy

VALUES_TABLE = REPO / "deploy" / "helm" / "values_table.py"
# The project has no public home yet: the address reserved for it.
HOME = "https://github.com/cz-allocation-agent/cz-allocation-agent"


@pytest.mark.parametrize("values", [[], ["--values", str(ALL_ON_VALUES)]], ids=["default", "all-on"])
def test_helm_lint_passes_strictly(chart_tools: ChartTools, values: list[str]):
    result = chart_tools.run_helm("lint", "--strict", str(CHART), *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_unittest_suites_pass_and_cover_every_template(chart_tools: ChartTools, tmp_path):
    report = tmp_path / "unittest.xml"
    result = chart_tools.run_helm("unittest", "--strict", "--output-type", "JUnit", "--output-file", str(report),
                                  str(CHART), check=False)
    assert result.returncode == 0, f"helm unittest failed:\n{result.stdout}\n{result.stderr}"
    assert 'failures="0"' in report.read_text()

    tested = set()
    for suite in (CHART / "tests").glob("*_test.yaml"):
        tested.update(yaml.safe_load(suite.read_text())["templates"])
    templates = {path.name for path in (CHART / "templates").iterdir() if not path.name.startswith("_")}
    assert templates - tested == set(), "templates without a helm-unittest suite"


@pytest.mark.parametrize(("setting", "complaint"), [
    (["--set", "agent.usageBasis=peak"], "usageBasis"),
    (["--set", "agent.allocationIntervalSeconds=0"], "allocationIntervalSeconds"),
    (["--set", "persistence.size=lots"], "size"),
    (["--set", "prometheus.url=thanos:9090"], "url"),
    (["--set", "serviceMonitor.enabled=yes"], "enabled"),
    (["--set", "agnet.logLevel=DEBUG"], "agnet"),
    (["--set", "image.digest=latest"], "digest"),
    (["--set", "image.registry=https://registry.example.com/"], "registry"),
    (["--set", "networkPolicy.kubernetesApi.cidrs={10.0.0.1}"], "cidrs"),
    (["--set-json", "networkPolicy.egress=[{}]"], "egress"),
    (["--set", "prometheusRule.customRules.CzAgentRunsFailing.for=soon"], "for"),
    (["--set", "prometheusRule.customRules.CzAgentStale.for=1h"], "CzAgentStale"),
    # The per-alert settings of old are customRules now: a values file still using them is told so.
    (["--set", "prometheusRule.stale.severity=critical"], "stale"),
    # Budgets live in the rules now: a values file still setting them is told where.
    (["--set-json", 'prometheusRule.budget.companies=[{"company":"acme","currency":"USD","amount":10}]'],
     "budgets live in the rules file"),
])
def test_the_schema_rejects_bad_values(chart_tools: ChartTools, setting: list[str], complaint: str):
    result = chart_tools.run_helm("template", "cz", str(CHART), *setting, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


def test_every_object_carries_the_chart_labels(chart_tools: ChartTools):
    objects = chart_tools.render("--values", str(ALL_ON_VALUES))
    assert {o["kind"] for o in objects} == {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "PersistentVolumeClaim", "Service",
        "Deployment", "ServiceMonitor", "PrometheusRule", "NetworkPolicy"}
    for o in objects:
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "cz-allocation-agent", o["kind"]
        assert labels["app.kubernetes.io/instance"] == "cz", o["kind"]
        assert labels["helm.sh/chart"] == "cz-allocation-agent-0.1.0", o["kind"]


def test_chart_metadata_names_the_project_its_license_and_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["home"] == HOME
    assert chart["sources"] == [HOME]
    assert chart["maintainers"] == [{"name": "cz-allocation-agent maintainers", "url": HOME}]
    assert chart["annotations"]["artifacthub.io/license"] == project["license"]
    assert chart["appVersion"] == project["version"]
    links = yaml.safe_load(chart["annotations"]["artifacthub.io/links"])
    assert all(link["url"].startswith(f"{HOME}/") for link in links)


def test_readme_lists_every_value():
    result = subprocess.run([sys.executable, str(VALUES_TABLE), "--check", str(CHART)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
