"""The forecast of a period from its stored runs (agent.outputs.forecast), and the same forecast as `cz-agent forecast`,
the API's /forecast, the forecast metrics and the statement show it."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.cli import main
from agent.core.model import DailyCost
from agent.core.periods import Period
from agent.core.rules import Budgets
from agent.outputs.forecast import CSV_COLUMNS, forecast_day, forecast_records, period_forecast
from agent.outputs.statement import statement_context
from agent.store.runs import LocalRuns, list_runs, open_store
from tests.support.store import allocate_run, api_client

HEADER = ("identity/LineItemId,bill/BillingPeriodStartDate,lineItem/UsageStartDate,lineItem/LineItemType,"
          "lineItem/UnblendedCost,lineItem/CurrencyCode,resourceTags/user:cz_container_bill")


def cur_bill(path: Path, period: Period, lines: list[tuple[int, str, str, str]]) -> Path:
    """A CUR bill of `period`: (day of the month, line item type, cost, tag) per line."""
    start = period.start.date()
    rows = [f"line-{number},{start}T00:00:00Z,{start + timedelta(days=day - 1)}T00:00:00Z,{kind},{cost},USD,{tag}"
            for number, (day, kind, cost, tag) in enumerate(lines)]
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def latest_of(store: str):
    runs = LocalRuns(open_store(store))

    def latest(period: str):
        found = [run.id for run in runs.list_runs(period=period)]
        return runs.load_run(max(found)) if found else None

    return latest


@pytest.fixture
def store(tmp_path: Path) -> str:
    """October: mobile 10.00 a day and mcmp 62.00; November, to the 14th: mobile 10.00 a day and a 5.00 fee."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    october, november = Period(2026, 10), Period(2026, 11)
    allocate_run(url, period=str(october), out=tmp_path / "oct.csv", bill=cur_bill(
        tmp_path / "oct.csv.bill.csv", october,
        [*((day, "Usage", "10.00", "mobile") for day in range(1, 32)), (1, "Usage", "62.00", "mcmp")]))
    allocate_run(url, period=str(november), out=tmp_path / "nov.csv", bill=cur_bill(
        tmp_path / "nov.csv.bill.csv", november,
        [*((day, "Usage", "10.00", "mobile") for day in range(1, 15)), (3, "Fee", "5.00", "mobile")]))
    return url


def test_a_flat_month_is_forecast_exactly_and_shared_as_the_runs_share_it(store: str):
    forecast = period_forecast("2026-11", latest=latest_of(store), today=date(2026, 11, 16))

    # The 14th is the latest day billed and may be partial: the 13th is the last complete one.
    assert forecast.as_of == date(2026, 11, 13)
    expected = {(row.company, row.service): row.expected for row in forecast.rows}
    # mobile: 30 days at 10.00 plus the fee once, 70/30; mcmp, absent so far, is October's 62.00, all gamma's.
    assert expected == {("alpha", "mobile"): Decimal("213.50"), ("beta", "mobile"): Decimal("91.50"),
                        ("gamma", "mcmp"): Decimal("62.00")}
    for row in forecast.rows:
        assert row.lower <= row.expected <= row.upper
    alpha = next(row for row in forecast.rows if row.company == "alpha")
    assert alpha.lower >= Decimal("0.7") * (14 * 10 + 5)  # never below what is billed


def test_rows_summed_by_one_dimension_keep_the_totals(store: str):
    forecast = period_forecast("2026-11", latest=latest_of(store), today=date(2026, 11, 16))
    by_company = forecast.aggregated("company")

    assert [(row.company, row.service, row.category) for row in by_company] == [
        ("alpha", "", ""), ("beta", "", ""), ("gamma", "", "")]
    for bound in ("expected", "lower", "upper"):
        assert sum(getattr(r, bound) for r in by_company) == sum(getattr(r, bound) for r in forecast.rows)


def test_a_month_that_is_over_is_what_its_bill_holds(store: str):
    forecast = period_forecast("2026-10", latest=latest_of(store), today=date(2026, 12, 4))

    assert forecast.as_of == date(2026, 10, 31)
    assert all(row.lower == row.expected == row.upper for row in forecast.rows)
    assert sum(row.expected for row in forecast.rows) == Decimal("372.00")


@pytest.mark.parametrize(("days", "today", "as_of"), [
    ((14,), date(2026, 11, 16), date(2026, 11, 13)),
    ((14, 20), date(2026, 11, 16), date(2026, 11, 15)),  # a line dated after today: today is not complete
    ((), date(2026, 11, 16), date(2026, 10, 31)),  # nothing dated: the forecast comes from earlier months
    ((30,), date(2026, 12, 1), date(2026, 11, 30)),  # the month is over
])
def test_the_forecast_starts_from_the_last_complete_day(days, today, as_of):
    daily = [DailyCost(currency="USD", tag="t", day=date(2026, 11, d), kind="usage", amount=Decimal(1), line_count=1)
             for d in days]
    assert forecast_day(Period(2026, 11), daily, today=today) == as_of


def test_the_cli_and_the_api_give_the_forecast_of_the_runs(store: str, tmp_path: Path, capsys):
    today = datetime.now(UTC).date()
    forecast = period_forecast("2026-11", latest=latest_of(store), today=today)
    out = tmp_path / "forecast.csv"

    assert main(["--store", store, "forecast", "--period", "2026-11", "--aggregate", "company",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    written = list(csv.reader(io.StringIO(out.read_text())))
    api = api_client(store).get("/api/v1/forecast", params={"period": "2026-11", "aggregate": "company"})

    records = [list(record) for record in forecast_records(forecast.aggregated("company"))]
    assert written == [list(CSV_COLUMNS), *records]
    assert api.status_code == 200
    assert api.json()["rows"] == [dict(zip(CSV_COLUMNS, record)) for record in records]
    assert api.json()["as_of"] == forecast.as_of.isoformat()
    assert f"as of {forecast.as_of}" in printed and "gamma" in printed


def test_the_api_refuses_a_period_without_a_run_and_an_unknown_dimension(store: str):
    client = api_client(store)
    assert client.get("/api/v1/forecast", params={"period": "2026-08"}).status_code == 404
    assert client.get("/api/v1/forecast", params={"period": "2026-11", "aggregate": "cluster"}).status_code == 422


def test_the_metrics_expose_the_open_month_s_forecast(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    today = datetime.now(UTC).date()
    month = Period.of(datetime.now(UTC))
    days = max(1, today.day - 1)
    allocate_run(url, period=str(month), out=tmp_path / "now.csv", bill=cur_bill(
        tmp_path / "now.bill.csv", month, [(day, "Usage", "3.00", "mobile") for day in range(1, days + 1)]))
    forecast = period_forecast(str(month), latest=latest_of(url), today=today)

    text = api_client(url).get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name, bound in (("cz_allocation_forecast_cost", "expected"), ("cz_allocation_forecast_lower_cost", "lower"),
                        ("cz_allocation_forecast_upper_cost", "upper")):
        exposed = {(s.labels["company"], s.labels["service_code"]): s.value for s in families[name].samples}
        assert exposed == {(row.company, row.service): float(getattr(row, bound)) for row in forecast.rows}
        assert {s.labels["period"] for s in families[name].samples} == {str(month)}


def test_the_statement_of_the_open_month_carries_its_budget_and_forecast(store: str):
    latest = latest_of(store)
    run = latest("2026-11")
    budgets = Budgets.model_validate({"companies": {"alpha": {"amount": "200", "currency": "USD"}}})

    context = statement_context(run, company="alpha", latest=latest, today=date(2026, 11, 16), budgets=budgets)
    closed = statement_context(run, company="alpha", latest=latest, today=date(2026, 12, 4), budgets=budgets)

    assert context.budget is not None and context.budget.amount == Decimal(200)
    assert context.forecast is not None and context.forecast.expected == Decimal("213.50")
    assert context.previous is not None and context.previous.totals == {"USD": Decimal("217.00")}
    assert closed.forecast is None  # the month is over: its statement is the bill
    assert list_runs(open_store(store))[-1].id == run.summary.id
