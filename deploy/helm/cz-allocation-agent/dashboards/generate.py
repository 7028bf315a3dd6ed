"""Writes the chart's Grafana dashboard "Cost allocation" (cost-allocation.json beside this file) with
grafana-foundation-sdk: `make dashboard`, or `python generate.py [--out FILE]`. The JSON is checked in;
tests/deploy/test_dashboard.py regenerates it and expects the same bytes."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from grafana_foundation_sdk.builders import barchart, bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import (ReduceDataOptions, StackingConfig, TableSortByFieldState,
                                                    VizLegendOptions, VizTooltipOptions)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (DashboardCursorSync, DashboardLinkType, DataSourceRef,
                                                     DataTransformerConfig, DynamicConfigValue, FieldColorModeId, Panel,
                                                     Threshold, ThresholdsMode, ValueMap, ValueMappingResult,
                                                     VariableHide, VariableOption, VariableRefresh, VariableSort)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

PanelBuilder = TypeVar("PanelBuilder", bound=Builder)
# Threshold steps, lowest first: (the value a colour starts at, None for the base; the colour).
Steps = Iterable[tuple[float | None, str]]

DASHBOARD = Path(__file__).with_name("cost-allocation.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job=~"$job"'
PERIOD = 'period="$period"'
COMPANIES = 'company=~"$company", company!=""'
# Report rows with a company (the rest is unallocated).
NAMED = 'company!=""'
# The report rows the company, service and cluster variables select.
ROW_FILTERS = 'company=~"$company", service_code=~"$service", cluster=~"$cluster"'
CLUSTERS = 'cluster=~"$cluster"'
SERVICES = 'service_code=~"$service"'
COMPANY_SCOPE = 'scope="company"'
SERVICE_SCOPE = 'scope="service"'
FAILURES = 'outcome="failure"'
TOP_CHOICES = ("5", "10", "20", "50")
TOP_DEFAULT = "10"
# The agent's API as the reader's browser reaches it: the README's `kubectl port-forward` by default.
AGENT_URL = "http://127.0.0.1:8080"
# Grafana 10 and later encode a data link's variables as URI parts unless told otherwise: the base URL goes in raw.
EXPLAIN = "${agent_url:raw}/api/v1/runs/${run}/explain?company=%s"
STATEMENT = "${agent_url:raw}/api/v1/statement?run=${run}&company=%s"
# Data links name the company of the clicked series (bar gauges) or of the clicked row (tables).
SERIES_COMPANY = "${__field.labels.company:percentencode}"
ROW_COMPANY = "${__data.fields.company:percentencode}"


def series(metric: str, *matchers: str) -> str:
    """A selector of `metric` in the selected installs (every query has the job matcher, as the linter wants)."""
    return f"{metric}{{{', '.join((JOB, *matchers))}}}"


def period_total(metric: str) -> str:
    """The period's figure of `metric` in each currency."""
    return f"sum by (currency) ({series(metric, PERIOD)})"


# The figures the budget panels compare, by company (the budgets' company scope) and currency.
ACTUAL_BY_COMPANY = f"sum by (company, currency) ({series('cz_allocation_cost', PERIOD, COMPANIES)})"
BUDGET_BY_COMPANY = f"sum by (company, currency) ({series('cz_budget_amount', COMPANY_SCOPE, COMPANIES)})"
FORECAST_BY_COMPANY = f"sum by (company, currency) ({series('cz_allocation_forecast_cost', PERIOD, COMPANIES)})"
SHARE_STEPS = ((None, "green"), (0.01, "orange"), (0.05, "red"))
BUDGET_STEPS = ((None, "green"), (0.8, "orange"), (1, "red"))
FORECAST_STEPS = ((None, "green"), (0.9, "orange"), (1, "red"))
ANY_IS_BAD = ((None, "green"), (1, "red"))


def query(expr: str, legend: str = "", *, ref: str = "A", instant: bool = True,
          as_table: bool = False) -> prometheus.Dataquery:
    target = prometheus.Dataquery().ref_id(ref).expr(expr).legend_format(legend)
    target = target.instant() if instant else target.range()
    return target.format(PromQueryFormat.TABLE if as_table else PromQueryFormat.TIME_SERIES)


def thresholds(steps: Steps) -> dashboard.ThresholdsConfig:
    return dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=value, color=color) for value, color in steps])


def fixed(color: str) -> dashboard.FieldColor:
    return dashboard.FieldColor().mode(FieldColorModeId.FIXED).fixed_color(color)


def company_links(company: str) -> list[dashboard.DashboardLink]:
    return [dashboard.DashboardLink(title).type(DashboardLinkType.LINK).url(url % company).target_blank(True)
            for title, url in (("Statement", STATEMENT), ("Explanation", EXPLAIN))]


def company_column_links() -> list[DynamicConfigValue]:
    """A table's company column linking each row's company (an override's value takes built links)."""
    return [DynamicConfigValue(id_val="links", value=[link.build() for link in company_links(ROW_COMPANY)])]


def ratio_cells(steps: Steps) -> list[DynamicConfigValue]:
    """A table column of ratios shown in %, its cells coloured by `steps`."""
    return [DynamicConfigValue(id_val="unit", value="percentunit"), DynamicConfigValue(id_val="decimals", value=0),
            DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
            DynamicConfigValue(id_val="thresholds", value=thresholds(steps).build())]


def last_value() -> ReduceDataOptions:
    return ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def placed(panel: PanelBuilder, title: str, description: str, *, height: int, width: int) -> PanelBuilder:
    return panel.title(title).description(description).datasource(DATASOURCE).height(height).span(width)


def stat_panel(title: str, description: str, *targets: prometheus.Dataquery, height: int = 6, width: int = 6,
               unit: str = "short", decimals: int | None = 2,
               steps: Steps | None = None) -> stat.Panel:
    """A figure, coloured by `steps` where they are given, else uncoloured (a colour would mean nothing)."""
    panel = placed(stat.Panel(), title, description, height=height, width=width).unit(unit).targets(list(targets))
    panel = panel.graph_mode(common.BigValueGraphMode.NONE).text_mode(common.BigValueTextMode.VALUE_AND_NAME)
    panel = panel.reduce_options(last_value())
    if decimals is not None:
        panel = panel.decimals(decimals)
    if steps is None:
        return panel.color_mode(common.BigValueColorMode.NONE)
    return panel.color_mode(common.BigValueColorMode.VALUE).thresholds(thresholds(steps))


def bar_gauge(title: str, description: str, target: prometheus.Dataquery, *, height: int, width: int,
              unit: str = "short", decimals: int | None = 2,
              steps: Steps | None = None) -> bargauge.Panel:
    """Horizontal bars of the series' last values: blue, or coloured by `steps` where they are given."""
    panel = placed(bargauge.Panel(), title, description, height=height, width=width).unit(unit).with_target(target)
    panel = panel.display_mode(common.BarGaugeDisplayMode.GRADIENT).orientation(common.VizOrientation.HORIZONTAL)
    panel = panel.show_unfilled(True).reduce_options(last_value()).min(0)
    if decimals is not None:
        panel = panel.decimals(decimals)
    if steps is None:
        return panel.color_scheme(fixed("blue"))
    return panel.color_scheme(dashboard.FieldColor().mode(FieldColorModeId.THRESHOLDS)).thresholds(thresholds(steps))


def time_series(title: str, description: str, target: prometheus.Dataquery, *, unit: str, decimals: int | None = None,
                stacked: bool = False, height: int = 8, width: int = 12) -> timeseries.Panel:
    panel = placed(timeseries.Panel(), title, description, height=height, width=width).unit(unit).with_target(target)
    if decimals is not None:
        panel = panel.decimals(decimals)
    stacking = common.StackingMode.NORMAL if stacked else common.StackingMode.NONE
    return (panel.draw_style(common.GraphDrawStyle.LINE).line_width(1).fill_opacity(30 if stacked else 10)
            .stacking(StackingConfig().mode(stacking).group("A"))
            .legend(VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                    .placement(common.LegendPlacement.RIGHT).calcs(["lastNotNull"]).show_legend(True))
            .tooltip(VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)))


def table_panel(title: str, description: str, *targets: prometheus.Dataquery, unit: str, decimals: int | None = None,
                height: int, width: int) -> table.Panel:
    panel = placed(table.Panel(), title, description, height=height, width=width).unit(unit).targets(list(targets))
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel.show_header(True)


def by_month(title: str, description: str, target: prometheus.Dataquery, *, column: str, unit: str,
             decimals: int, steps: Steps | None = None) -> barchart.Panel:
    """Bars per period (the metrics keep CZ_AGENT_EXPOSED_PERIODS of them), one per value of the `column` label."""
    panel = placed(barchart.Panel(), title, description, height=8, width=8).unit(unit).decimals(decimals)
    panel = panel.with_target(target).with_transformation(DataTransformerConfig(
        id_val="groupingToMatrix", options={"columnField": column, "rowField": "period", "valueField": "Value"}))
    panel = panel.show_value(common.VisibilityMode.AUTO).fill_opacity(80).line_width(1).min(0)
    panel = panel.legend(VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                         .placement(common.LegendPlacement.BOTTOM).show_legend(True))
    if steps is None:
        return panel.color_scheme(dashboard.FieldColor().mode(FieldColorModeId.PALETTE_CLASSIC))
    return panel.color_scheme(dashboard.FieldColor().mode(FieldColorModeId.THRESHOLDS)).thresholds(thresholds(steps))


# ------------------------------------------------------------------------------------------------ variables


def label_values(name: str, label: str, selector: str, *, title: str) -> dashboard.QueryVariable:
    """A variable offering the values of `label` on the series of `selector`, asked again as the time range moves."""
    expression = f"label_values({selector}, {label})"
    return (dashboard.QueryVariable(name).label(title).datasource(DATASOURCE)
            .query({"query": expression, "refId": f"{name}-variable"})
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC))


def any_of(variable: dashboard.QueryVariable, *, all_value: str = ".*") -> dashboard.QueryVariable:
    return variable.multi(True).include_all(True).all_value(all_value)


def variables() -> list[Builder]:
    job = label_values("job", "job", "cz_agent_leader", title="Job").description(
        "The agent's scrape job (its Service's name): each install of the chart is one.")
    period = label_values("period", "period", series("cz_run_info"), title="Period").description(
        "The billing month shown; the newest first.").sort(VariableSort.ALPHABETICAL_DESC)
    rows = series("cz_allocation_cost", PERIOD)
    return [
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        any_of(job, all_value=".+"),
        period,
        any_of(label_values("company", "company", rows, title="Company")),
        any_of(label_values("service", "service_code", series("cz_allocation_cost", PERIOD, 'company=~"$company"'),
                            title="Service")),
        any_of(label_values("cluster", "cluster", rows, title="Cluster")),
        dashboard.CustomVariable("top").label("Top").values(",".join(TOP_CHOICES))
        .description("How many companies, services or namespaces the top-N panels show.")
        .current(VariableOption(selected=True, text=TOP_DEFAULT, value=TOP_DEFAULT))
        .options([VariableOption(selected=choice == TOP_DEFAULT, text=choice, value=choice)
                  for choice in TOP_CHOICES]),
        label_values("run", "run_id", series("cz_run_info", PERIOD), title="Run").hide(VariableHide.HIDE_VARIABLE)
        .description("The stored run whose figures are shown for the period: the one the company links open."),
        dashboard.TextBoxVariable("agent_url").label("Agent API").default_value(AGENT_URL)
        .description("The agent's HTTP API as your browser reaches it (kubectl port-forward, an ingress), for the "
                     "links from a company to its statement and explanation; with apiToken set, through something "
                     "that adds the token."),
    ]


# ----------------------------------------------------------------------------------------------------- rows


def chargeback() -> list[Builder]:
    bill = period_total("cz_bill_total_cost")
    companies = f"sum by (company, currency) ({series('cz_allocation_cost', PERIOD, ROW_FILTERS, NAMED)})"
    return [
        stat_panel("Bill total", "The period's accepted bill, rounded to the currency's minor unit (= allocated + "
                   "unallocated).", query(bill, "{{currency}}")),
        stat_panel("Unallocated share", "Share of the period's bill no company carries: green under 1 %, orange "
                   "from 1 %, red from 5 % (unknown services and groups, clusters without usage).",
                   query(f"{period_total('cz_unallocated_total_cost')} / {bill}", "{{currency}}"),
                   unit="percentunit", decimals=1, steps=SHARE_STEPS),
        stat_panel("Month-end forecast", "The open period's expected cost at the month's end, with the range the "
                   "actual total should fall in.",
                   *(query(period_total(metric), f"{name} {{{{currency}}}}", ref=ref)
                     for ref, name, metric in (("A", "forecast", "cz_allocation_forecast_cost"),
                                               ("B", "lower", "cz_allocation_forecast_lower_cost"),
                                               ("C", "upper", "cz_allocation_forecast_upper_cost")))),
        stat_panel("Allocated", "Cost of the period carried by companies (the bill less its unallocated cost).",
                   query(period_total("cz_allocated_total_cost"), "{{currency}}")),
        bar_gauge("Top companies", "The $top companies that owe the most for the period (report rows of the "
                  "latest run, filtered by service and cluster); a bar links to its statement and explanation.",
                  query(f"topk($top, {companies})", "{{company}} ({{currency}})"), height=8, width=12)
        .data_links(company_links(SERIES_COMPANY)),
        bar_gauge("Top services", "The $top services that cost the most for the period, summed over their "
                  "companies.",
                  query("topk($top, sum by (service_code, currency) "
                        f"({series('cz_allocation_cost', PERIOD, ROW_FILTERS)}))", "{{service_code}} ({{currency}})"),
                  height=8, width=12),
        time_series("Cost by category (stacked)", "The period's cost by category: cluster (memory shares), "
                    "service_exclusive, service_common, common and unallocated, stacked.",
                    query(f"sum by (category, currency) ({series('cz_allocation_cost', PERIOD, ROW_FILTERS)})",
                          "{{category}} ({{currency}})", instant=False), unit="short", decimals=2, stacked=True),
        time_series("Month-to-date trend per company", "The $top largest companies' cost for the period as the "
                    "agent recomputed it through the month.",
                    query(f"topk($top, {companies})", "{{company}} ({{currency}})", instant=False),
                    unit="short", decimals=2),
        table_panel("Company and service breakdown", "The period's report rows: company, service, category and "
                    "cluster; a company links to its statement and explanation.",
                    query("sum by (company, service_code, category, cluster, currency) "
                          f"({series('cz_allocation_cost', PERIOD, ROW_FILTERS)})", as_table=True),
                    unit="short", decimals=2, height=8, width=24)
        .sort_by([TableSortByFieldState().display_name("Value").desc(True)])
        .override_by_name("company", company_column_links()),
    ]


def budgets() -> list[Builder]:
    used = f"{ACTUAL_BY_COMPANY} / on (company, currency) {BUDGET_BY_COMPANY}"
    expected = f"{FORECAST_BY_COMPANY} / on (company, currency) {BUDGET_BY_COMPANY}"
    bounds = [query(f"sum by (company, currency) ({series(metric, PERIOD, COMPANIES)})", as_table=True, ref=ref)
              for ref, metric in (("D", "cz_allocation_forecast_lower_cost"),
                                  ("E", "cz_allocation_forecast_upper_cost"))]
    columns = {"Value #A": "Budget", "Value #B": "Actual", "Value #C": "Forecast", "Value #D": "Forecast low",
               "Value #E": "Forecast high", "Value #F": "Used", "Value #G": "Forecast / budget"}
    service_used = (f"topk($top, sum by (service_code, currency) ({series('cz_allocation_cost', PERIOD, SERVICES)}) "
                    "/ on (service_code, currency) sum by (service_code, currency) "
                    f"({series('cz_budget_amount', SERVICE_SCOPE, SERVICES)}))")
    return [
        table_panel("Budget, actual and forecast per company", "Each company's monthly budget, its cost so far in "
                    "the period, and the month-end forecast with its range. Used (actual / budget): orange from "
                    "80 %, red from 100 %; forecast / budget: orange from 90 %, red from 100 %.",
                    query(BUDGET_BY_COMPANY, as_table=True, ref="A"),
                    query(ACTUAL_BY_COMPANY, as_table=True, ref="B"),
                    query(FORECAST_BY_COMPANY, as_table=True, ref="C"), *bounds,
                    query(used, as_table=True, ref="F"), query(expected, as_table=True, ref="G"),
                    unit="short", decimals=2, height=8, width=24)
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True}, "renameByName": columns}))
        .override_by_name("Used", ratio_cells(BUDGET_STEPS))
        .override_by_name("Forecast / budget", ratio_cells(FORECAST_STEPS))
        .override_by_name("company", company_column_links()),
        bar_gauge("Forecast against budget", "The $top companies expected to spend the most of their budget by "
                  "the month's end: orange from 90 %, red from 100 % (over budget).",
                  query(f"topk($top, {expected})", "{{company}} ({{currency}})"), height=8, width=8,
                  unit="percentunit", decimals=0, steps=FORECAST_STEPS).data_links(company_links(SERIES_COMPANY)),
        bar_gauge("Budget used per company", "The $top companies that used the most of their monthly budget so "
                  "far: orange from 80 %, red from 100 %.",
                  query(f"topk($top, {used})", "{{company}} ({{currency}})"), height=8, width=8,
                  unit="percentunit", decimals=0, steps=BUDGET_STEPS).data_links(company_links(SERIES_COMPANY)),
        bar_gauge("Budget used per service", "The $top services that used the most of their monthly budget so "
                  "far: orange from 80 %, red from 100 %.",
                  query(service_used, "{{service_code}} ({{currency}})"), height=8, width=8,
                  unit="percentunit", decimals=0, steps=BUDGET_STEPS),
    ]


def trends() -> list[Builder]:
    top_companies = f"topk($top, sum by (company) ({series('cz_allocation_cost', PERIOD, ROW_FILTERS, NAMED)}))"
    per_company = ('label_join(sum by (period, company, currency) '
                   f'({series("cz_allocation_cost", ROW_FILTERS, NAMED)}), "company_currency", " ", "company", '
                   f'"currency") and on (company) {top_companies}')
    bills = f"sum by (period, currency) ({series('cz_bill_total_cost')})"
    unallocated = f"sum by (period, currency) ({series('cz_unallocated_total_cost')})"
    return [
        by_month("Bill by month", "The accepted bill of each period the agent exposes, by currency.",
                 query(bills, as_table=True), column="currency", unit="short", decimals=0),
        by_month("Top companies by month", "The cost of the period's $top largest companies in each exposed "
                 "period (filtered by service and cluster).",
                 query(per_company, as_table=True), column="company_currency", unit="short", decimals=0),
        by_month("Unallocated share by month", "Share of each period's bill no company carries: green under 1 %, "
                 "orange from 1 %, red from 5 %.",
                 query(f"{unallocated} / {bills}", as_table=True), column="currency", unit="percentunit",
                 decimals=1, steps=SHARE_STEPS),
    ]


def clusters() -> list[Builder]:
    shares = series("cz_namespace_memory_share_ratio", PERIOD, CLUSTERS)
    service_shares = series("cz_namespace_memory_share_ratio", PERIOD, CLUSTERS, SERVICES)
    return [
        bar_gauge("Memory share by namespace", "The $top namespaces of each cluster with the largest share of its "
                  "memory byte-seconds over the period (the cluster cost key).",
                  query(f"topk by (cluster) ($top, {shares})", "{{cluster}} / {{cluster_namespace}}"),
                  height=8, width=9, unit="percentunit", decimals=None),
        bar_gauge("Memory share by service", "The $top services of each cluster with the largest share of its "
                  "memory over the period; empty service: namespaces mapped to none.",
                  query(f"topk by (cluster) ($top, sum by (cluster, service_code) ({service_shares}))",
                        "{{cluster}} / {{service_code}}"),
                  height=8, width=9, unit="percentunit", decimals=None),
        bar_gauge("Usage coverage", "Fraction of the period so far the cluster's usage data covers (live runs); "
                  "the shares rest on this part of the month. Red under 90 % (where the agent warns), orange "
                  "under 99 %.",
                  query(series("cz_usage_coverage_ratio", PERIOD, CLUSTERS), "{{cluster}}"),
                  height=8, width=6, unit="percentunit", decimals=None,
                  steps=((None, "red"), (0.9, "orange"), (0.99, "green"))),
    ]


def unallocated() -> list[Builder]:
    totals = {name: period_total(metric) for name, metric in (
        ("bill", "cz_bill_total_cost"), ("allocated", "cz_allocated_total_cost"),
        ("unallocated", "cz_unallocated_total_cost"))}
    difference = f"{totals['bill']} - {totals['allocated']} - {totals['unallocated']}"
    return [
        stat_panel("Unallocated", "Cost of the period that could not be attributed to a company.",
                   query(totals["unallocated"], "{{currency}}"), height=7),
        bar_gauge("Unallocated by reason", "Why cost stayed unallocated: unknown service, unknown common group, a "
                  "cluster without usage.",
                  query(f"sum by (reason, currency) ({series('cz_unallocated_cost', PERIOD)})",
                        "{{reason}} ({{currency}})"), height=7, width=9),
        table_panel("Reconciliation", "Allocated + unallocated = bill: the difference is 0 when the report adds up "
                    "to the bill.",
                    *(query(expr, name, ref=ref) for ref, (name, expr) in
                      zip("ABCD", [*totals.items(), ("difference", difference)], strict=True)),
                    unit="short", decimals=2, height=7, width=9),
        bar_gauge("Bill rows by status", "Rows of the period's bills: accepted, rejected (unreadable, red) and out "
                  "of period.",
                  query(f"sum by (status) ({series('cz_bill_rows', PERIOD)})", "{{status}}"),
                  height=6, width=12, decimals=None)
        .override_by_name("rejected", [DynamicConfigValue(id_val="color", value={"mode": "thresholds"}),
                                       DynamicConfigValue(id_val="thresholds", value=thresholds(ANY_IS_BAD).build())]),
        table_panel("Exposed run", "The stored run whose figures are shown for the period, and when it was made.",
                    query(f"max by (period) ({series('cz_run_timestamp_seconds', PERIOD)}) * 1000", as_table=True),
                    query(f"max by (period, run_id) ({series('cz_run_info', PERIOD)})", as_table=True, ref="B"),
                    unit="dateTimeAsIso", height=6, width=12),
    ]


def agent_health() -> list[Builder]:
    up_down = ValueMap(options={"0": ValueMappingResult(text="down", color="red"),
                                "1": ValueMappingResult(text="up", color="green")})
    return [
        stat_panel("Since last success", "Time since each agent job last finished successfully; the allocation "
                   "job runs every allocation interval.",
                   query(f"time() - max by (agent_job) ({series('cz_agent_last_success_timestamp_seconds')})",
                         "{{agent_job}}"), height=7, unit="s", decimals=None),
        stat_panel("Failed runs", "Failed runs of each agent job over the dashboard's time range (red from one); "
                   "the last good results stay served.",
                   query("sum by (agent_job) "
                         f"(increase({series('cz_agent_runs_total', FAILURES)}[$__range]))",
                         "{{agent_job}}"), height=7, decimals=0, steps=ANY_IS_BAD),
        time_series("Runs by outcome", "Rate of agent job runs by outcome.",
                    query(f"sum by (agent_job, outcome) (rate({series('cz_agent_runs_total')}[$__rate_interval]))",
                          "{{agent_job}} {{outcome}}", instant=False), unit="ops", height=7, width=6),
        time_series("Run duration", "Duration of each job's last run.",
                    query(f"max by (agent_job) ({series('cz_agent_run_duration_seconds')})", "{{agent_job}}",
                          instant=False), unit="s", height=7, width=6),
        stat_panel("Run store", "Whether the last scrape could read the run store.",
                   query(f"min({series('cz_agent_store_up')})", "store"), height=4, unit="none", decimals=None)
        .color_mode(common.BigValueColorMode.VALUE).mappings([up_down]),
    ]


def bill_split() -> list[Builder]:
    return [
        bar_gauge("Cost by workspace", "The period's accepted bill by workspace: the largest per period, the rest "
                  "in 'other'; '(none)' for lines without a workspace.",
                  query(f"sum by (workspace, currency) ({series('cz_workspace_cost', PERIOD)})",
                        "{{workspace}} ({{currency}})"), height=8, width=12, decimals=None),
        bar_gauge("Cost by API key", "The period's accepted bill by workspace and API key: the largest per period, "
                  "the rest in 'other'.",
                  query(f"sum by (workspace, api_key, currency) ({series('cz_api_key_cost', PERIOD)})",
                        "{{workspace}} / {{api_key}} ({{currency}})"), height=8, width=12, decimals=None),
    ]


ROWS_IN_ORDER = (("Chargeback", chargeback), ("Budget and forecast", budgets), ("Month over month", trends),
                 ("Clusters", clusters), ("Unallocated and reconciliation", unallocated),
                 ("Agent health", agent_health), ("Bill split: workspaces and API keys", bill_split))


def cost_allocation() -> dashboard.Dashboard:
    board = (dashboard.Dashboard("Cost allocation").uid("cz-cost-allocation")
             .description("Chargeback of the cloud bill to companies and services by cz-allocation-agent: the "
                          "period's cost, its breakdown, budgets and the month-end forecast, the trend over the "
                          "exposed months, cluster memory shares, unallocated cost, reconciliation and the agent's "
                          "health.")
             .tags(["cz-allocation-agent", "cost"]).readonly().tooltip(DashboardCursorSync.CROSSHAIR)
             .timezone("utc").refresh("5m").time("now-30d", "now").version(1).variables(variables())
             .annotations([]).links([]))
    for title, panels in ROWS_IN_ORDER:
        board = board.with_row(dashboard.Row(title))
        for panel in panels():
            board = board.with_panel(panel)
    return board


def render() -> str:
    """The dashboard's JSON: keys sorted, two-space indent, a final newline, panels numbered in order."""
    model = cost_allocation().build()
    panels: list[Panel] = model.panels or []
    for number, panel in enumerate(panels, start=1):
        panel.id_val = number
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                     delete=False) as temporary:
        temporary.write(text)
    os.replace(temporary.name, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DASHBOARD, help=f"where to write it (default: {DASHBOARD.name})")
    args = parser.parse_args(argv)
    write_atomically(args.out, render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
