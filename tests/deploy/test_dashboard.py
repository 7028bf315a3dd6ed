"""The Grafana dashboard: the checked-in JSON is what its generator writes, grafana/dashboard-linter (pinned build)
passes, and every variable and panel query returns data from a Prometheus that scrapes a real `cz-agent serve` the
way the chart's ServiceMonitor tells the Prometheus Operator to (honor_labels and the operator's target labels), as
two installs would be; the links from a company open its statement and explanation in that agent's API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.core.periods import Period
from tests.deploy.tools import CHART, ChartTools
from tests.support.fixtures_live import BILL
from tests.support.fixtures_prom import running_prometheus
from tests.support.http import http_get
from tests.support.served import ServedAgent, drop_bill
from tests.support.waiting import wait_for

pytestmark = pytest.mark.deploy

DASHBOARD = CHART / "dashboards" / "cost-allocation.json"
GENERATOR = CHART / "dashboards" / "generate.py"
PERIOD = "2026-09"
# An unknown service leaves cost unallocated, so the unallocated panels have something to show.
BILL_WITH_UNKNOWN_SERVICE = BILL + f"{PERIOD},unknown-service,5.00,USD\n"
BILL_TOTAL = 1328.33
# Grafana's built-in intervals, as it would substitute them for a recent time range.
BUILT_INS = {"__range": "1h", "__rate_interval": "1m"}
# A second install's scrape job: the same agent scraped again, whose figures the dashboard must not add in.
OTHER_INSTALL = "other-cz-allocation-agent"
# The month-end forecast is of the current month only: a bill of it gives the forecast panels their data.
OPEN_PERIOD = str(Period.of(datetime.now(UTC)))
OPEN_BILL = f"billingCycle,cz_container_bill,unblendedCost,currency\n{OPEN_PERIOD},mobile,12.00,USD\n"
FORECAST_FAMILIES = {"cz_allocation_forecast_cost", "cz_allocation_forecast_lower_cost",
                     "cz_allocation_forecast_upper_cost"}
# The panels that list companies, services or namespaces: each shows the top $top, never every series.
TOP_N_LABELS = ("company", "service_code", "cluster_namespace")


def test_the_checked_in_dashboard_is_what_its_generator_writes(tmp_path: Path):
    regenerated = tmp_path / DASHBOARD.name
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(regenerated)], check=True)
    assert regenerated.read_bytes() == DASHBOARD.read_bytes(), "run `make dashboard` and commit the JSON"


def test_panels_listing_companies_services_or_namespaces_show_the_top_n():
    listing = [(panel["title"], target["expr"]) for panel in panels(json.loads(DASHBOARD.read_text()))
               if panel["type"] in ("bargauge", "timeseries", "barchart") for target in panel["targets"]
               if re.search(rf"\bby \([^)]*\b({'|'.join(TOP_N_LABELS)})\b", target["expr"])
               or "cz_namespace_memory_share_ratio" in target["expr"]]
    assert len(listing) >= 8
    assert [title for title, expr in listing if "topk" not in expr] == []


def test_dashboard_passes_the_linter(chart_tools: ChartTools):
    # The linter reads its exclusions from dashboards/.lint, each with its reason.
    result = subprocess.run([str(chart_tools.dashboard_linter), "lint", "--strict", str(DASHBOARD)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# `agent` (tests/support/fixtures_live.py): a real `cz-agent serve` on the backfilled Prometheus and the API server.
@pytest.mark.integration
def test_every_variable_and_panel_query_returns_data(agent: ServedAgent, chart_tools: ChartTools, tmp_path: Path):
    dashboard = json.loads(DASHBOARD.read_text())
    (service_monitor,) = chart_tools.render("--set", "serviceMonitor.enabled=true",
                                            "--show-only", "templates/servicemonitor.yaml")
    job = service_monitor["metadata"]["name"]
    drop_bill(tmp_path / "inbox", BILL_WITH_UNKNOWN_SERVICE)
    drop_bill(tmp_path / "inbox", OPEN_BILL, name=f"bill-{OPEN_PERIOD}.csv")
    with operator_like_scraper(agent.url.removeprefix("http://"), service_monitor=service_monitor,
                               workdir=tmp_path) as prometheus:
        for period in (PERIOD, OPEN_PERIOD):
            wait_for(lambda: instant(prometheus, f'cz_bill_total_cost{{period="{period}"}}'),
                     what=f"the scraped bill of {period}", logs=agent.log_path)
        # rate() and increase() need a few samples in their window.
        wait_for(lambda: instant(prometheus, "count_over_time(cz_agent_store_up[1m]) >= 3"),
                 what="three scrapes", logs=agent.log_path)
        # The target's labels are kept as the operator sets them, and none of the agent's is renamed.
        query = urllib.parse.urlencode({"match[]": '{__name__=~"cz_.+"}'})
        scraped = json.loads(http_get(f"{prometheus}/api/v1/labels?{query}"))["data"]
        assert {"job", "namespace", "service", "pod", "agent_job", "service_code"} <= set(scraped)
        assert [label for label in scraped if label.startswith("exported_")] == []
        variables = resolve_variables(prometheus, dashboard["templating"]["list"], job=job)
        assert variables["job"] == {job, OTHER_INSTALL}
        assert variables["company"] == {"alpha", "beta"}
        # The service codes of the bill, never the scrape target's Service name (the operator's `service` label).
        assert "mobile" in variables["service"] and job not in variables["service"]
        assert variables["cluster"] == {"prod", "stage"}
        (run,) = variables["run"]

        substitutions = {"job": job, "period": PERIOD, "company": ".*", "service": ".*", "cluster": ".*",
                         "top": defaults(dashboard)["top"], **BUILT_INS}
        # A target of the forecast is asked of the open month, the others of the backfilled month.
        results = {(panel["title"], target["refId"]): run_target(
            prometheus, target, {**substitutions, "period": OPEN_PERIOD}
            if families_in(target["expr"]) & FORECAST_FAMILIES else substitutions)
            for panel in panels(dashboard) for target in panel["targets"]}
    empty = [key for key, result in results.items() if not result]
    assert not empty, f"panel targets without data: {empty}"

    data = results
    # The bill once: the other install's scrape of the same figures is not added in.
    assert values(data["Bill total", "A"]) == [pytest.approx(BILL_TOTAL)]
    assert values(data["Unallocated share", "A"]) == [pytest.approx(5 / BILL_TOTAL)]
    assert values(data["Reconciliation", "D"]) == [pytest.approx(0, abs=1e-6)]
    assert sum(values(data["Top companies", "A"])) == pytest.approx(BILL_TOTAL - 5)
    assert {r["metric"]["period"] for r in data["Bill by month", "A"]} >= {PERIOD}
    assert [r["metric"]["reason"] for r in data["Unallocated by reason", "A"]] == ["unknown service 'unknown-service'"]
    assert {r["metric"]["agent_job"] for r in data["Since last success", "A"]} == {"allocate", "import"}

    # Each link from a company opens a page of the agent's API: its statement (HTML) and its explanation (JSON).
    links = company_links(dashboard)
    assert {link["title"] for link in links} == {"Statement", "Explanation"} and len(links) >= 6
    for link in links:
        url = substituted(link["url"], {"agent_url:raw": agent.url, "run": run, "__field.labels.company:percentencode":
                                        "alpha", "__data.fields.company:percentencode": "alpha"})
        page = http_get(url)
        assert ("<html" in page) if link["title"] == "Statement" else (json.loads(page)["company"] == "alpha"), url


def families_in(expression: str) -> set[str]:
    return set(re.findall(r"\b(cz_\w+)\{", expression))


def defaults(dashboard: dict) -> dict[str, str]:
    """The value each variable with a preset one starts with."""
    return {variable["name"]: variable["current"]["value"] for variable in dashboard["templating"]["list"]
            if "current" in variable}


def company_links(dashboard: dict) -> list[dict]:
    """The data links of every panel: on its series, or on a table's company column."""
    found = []
    for panel in panels(dashboard):
        field_config = panel["fieldConfig"]
        found += field_config["defaults"].get("links", [])
        found += [link for override in field_config["overrides"] for setting in override["properties"]
                  if setting["id"] == "links" for link in setting["value"]]
    return found


def panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def substituted(expression: str, substitutions: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match["name"] or match["bare"]
        assert name in substitutions, f"no value for ${name} in {expression}"
        return substitutions[name]
    return re.sub(r"\$\{(?P<name>[\w.:]+)\}|\$(?P<bare>\w+)", value, expression)


def resolve_variables(prometheus: str, variables: list[dict], *, job: str) -> dict[str, set[str]]:
    """Every query variable's options, asked as Grafana asks (label values of the matching series) with `job`
    selected; the period offers the bill's month, and each multi-value variable's "All" is `.*` (the job's `.+`, as
    the linter wants). The others: the data source is Prometheus, `top` starts at one of its choices, and the agent's
    URL is a text box with a default."""
    resolved: dict[str, set[str]] = {}
    for variable in variables:
        if variable["type"] == "datasource":
            assert variable["query"] == "prometheus"
            continue
        if variable["type"] == "custom":
            assert variable["current"]["value"] in variable["query"].split(",")
            continue
        if variable["type"] == "textbox":
            assert variable["query"].startswith("http")
            continue
        match = re.fullmatch(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)", variable["query"]["query"])
        assert match, f"variable {variable['name']} is not a label_values() query"
        selector = substituted(match["selector"], {"job": job, "period": PERIOD, "company": ".*"})
        url = (f"{prometheus}/api/v1/label/{match['label']}/values?"
               f"{urllib.parse.urlencode({'match[]': selector})}")
        options = set(json.loads(http_get(url))["data"])
        assert options, f"variable {variable['name']} ({selector}) offers nothing"
        assert not variable["includeAll"] or variable["allValue"] == (".+" if variable["name"] == "job" else ".*")
        resolved[variable["name"]] = options
    assert PERIOD in resolved["period"]
    return resolved


def run_target(prometheus: str, target: dict, substitutions: dict[str, str]) -> list[dict]:
    expression = substituted(target["expr"], substitutions)
    if target["instant"]:
        return instant(prometheus, expression)
    end = time.time()
    query = urllib.parse.urlencode({"query": expression, "start": end - 60, "end": end, "step": 2})
    return json.loads(http_get(f"{prometheus}/api/v1/query_range?{query}"))["data"]["result"]


def instant(prometheus: str, expression: str) -> list[dict]:
    query = urllib.parse.urlencode({"query": expression})
    return json.loads(http_get(f"{prometheus}/api/v1/query?{query}"))["data"]["result"]


def values(result: list[dict]) -> list[float]:
    return [float(series["value"][1]) for series in result]


@contextmanager
def operator_like_scraper(target: str, *, service_monitor: dict, workdir: Path) -> Iterator[str]:
    """A Prometheus scraping `target` every second as the Prometheus Operator would from the chart's
    ServiceMonitor: its endpoint's path and honorLabels, and the operator's target labels (job = the Service,
    namespace, service, pod, container, endpoint); and again as another install's ServiceMonitor would."""
    endpoint = service_monitor["spec"]["endpoints"][0]
    scrape_configs = []
    for service in (service_monitor["metadata"]["name"], OTHER_INSTALL):
        labels = {"namespace": service_monitor["metadata"]["namespace"], "service": service, "pod": f"{service}-0",
                  "container": "agent", "endpoint": endpoint["port"]}
        scrape_configs.append({"job_name": service, "honor_labels": endpoint["honorLabels"],
                               "metrics_path": endpoint["path"],
                               "static_configs": [{"targets": [target], "labels": labels}]})
    with running_prometheus(scrape_configs, workdir=workdir, name="operator-scraper") as url:
        yield url
