"""The HTTP API over real stored runs: allocations equal the CLI report, explanations, statements equal the CLI's,
errors, auth, OpenAPI."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine

from agent import __version__
from agent.cli import main
from agent.service.api import create_app
from agent.store.runs import open_store
from tests.support.store import allocate_run, api_client

ROOT = Path(__file__).resolve().parents[2]
WORKED = ROOT / "tests" / "data" / "worked"
DEMO = ROOT / "demo"
TOKEN = "s3cret-token"
DIMENSIONS = ("company", "service", "category", "cluster")
PATHS = {"/api/v1/allocations", "/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/runs/{run_id}/explain",
         "/api/v1/runs/{run_id}/document", "/api/v1/statement", "/api/v1/forecast",
         "/api/v1/periods", "/api/v1/split", "/healthz", "/readyz", "/metrics"}


def read_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@dataclass(frozen=True)
class Stores:
    worked: str
    worked_report: Path
    worked_run: int
    september_runs: tuple[int, int]
    demo: str
    demo_report: Path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Stores:
    directory = tmp_path_factory.mktemp("api")
    worked = f"sqlite:///{directory / 'worked.db'}"
    worked_run = allocate_run(worked, bill=WORKED / "bill.csv", period="2026-10", out=directory / "worked.csv")
    september = []
    for scale in (1, 2):
        bill = directory / f"bill-2026-09-{scale}.csv"
        bill.write_text("billingCycle,cz_container_bill,unblendedCost,currency\n"
                        f"2026-09,mobile,{10 * scale}.10,USD\n2026-09,legacy-crm,7.5,USD\n2026-09,,3,USD\n")
        september.append(allocate_run(worked, bill=bill, period="2026-09", out=directory / f"sep-{scale}.csv"))
    demo = f"sqlite:///{directory / 'demo.db'}"
    allocate_run(demo, bill=DEMO / "bill-2026-10.csv", period="2026-10", out=directory / "demo.csv",
             rules=DEMO / "rules.yaml", usage=DEMO / "usage-2026-10.csv")
    return Stores(worked=worked, worked_report=directory / "worked.csv", worked_run=worked_run,
                  september_runs=(september[0], september[1]), demo=demo, demo_report=directory / "demo.csv")


@pytest.fixture(scope="module")
def demo(stores) -> TestClient:
    return api_client(stores.demo)


@pytest.fixture(scope="module")
def worked(stores) -> TestClient:
    return api_client(stores.worked)


# ------------------------------------------------------------------------------------------ allocations


def test_allocations_csv_is_the_cli_report(demo, stores):
    response = demo.get("/api/v1/allocations", params={"period": "2026-10", "format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.content == stores.demo_report.read_bytes()


def test_allocations_json_rows_are_the_cli_report_rows(demo, stores):
    body = demo.get("/api/v1/allocations", params={"period": "2026-10"}).json()
    assert body["period"] == "2026-10"
    assert body["run_id"] == 1
    assert body["rows"] == read_rows(stores.demo_report.read_text())


def expected_sums(report: Path, kept: tuple[str, ...]) -> dict[tuple[str, ...], Decimal]:
    sums: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    for row in read_rows(report.read_text()):
        sums[(row["period"], *(row[name] for name in kept), row["currency"])] += Decimal(row["amount"])
    return dict(sums)


@pytest.mark.parametrize("aggregate", ["company", "company,service", "category,cluster", "service", ""])
def test_aggregate_sums_the_other_dimensions_exactly(demo, stores, aggregate):
    kept = tuple(name for name in DIMENSIONS if name in aggregate.split(","))
    body = demo.get("/api/v1/allocations", params={"period": "2026-10", "aggregate": aggregate}).json()
    got = {(row["period"], *(row[name] for name in kept), row["currency"]): Decimal(row["amount"])
           for row in body["rows"]}
    assert got == expected_sums(stores.demo_report, kept)
    assert all(set(row) == {"period", *kept, "amount", "currency"} for row in body["rows"])


def test_aggregate_company_amounts_are_exact_strings(worked):
    body = worked.get("/api/v1/allocations", params={"period": "2026-10", "aggregate": "company"}).json()
    assert body["rows"] == [
        {"period": "2026-10", "company": company, "amount": amount, "currency": "USD"}
        for company, amount in (("alpha", "765.00"), ("beta", "345.00"), ("gamma", "490.00"))
    ]


def test_aggregate_as_csv(demo, stores):
    response = demo.get("/api/v1/allocations", params={"period": "2026-10", "aggregate": "company",
                                                       "format": "csv"})
    assert response.text.splitlines()[0] == "period,company,amount,currency"
    rows = read_rows(response.text)
    assert {(r["period"], r["company"], r["currency"]): Decimal(r["amount"]) for r in rows} == \
        expected_sums(stores.demo_report, ("company",))


def test_the_latest_run_of_the_period_or_the_run_given(worked, stores):
    first, second = stores.september_runs
    assert worked.get("/api/v1/allocations", params={"period": "2026-09"}).json()["run_id"] == second
    older = worked.get("/api/v1/allocations", params={"run": first, "aggregate": ""}).json()
    assert older["run_id"] == first and older["period"] == "2026-09"
    assert older["rows"] == [{"period": "2026-09", "amount": "20.60", "currency": "USD"}]
    both = worked.get("/api/v1/allocations", params={"run": first, "period": "2026-09"}).json()
    assert both["run_id"] == first


# ------------------------------------------------------------------------------------------ by namespace


def test_namespace_rows_add_up_to_each_report_row_of_the_demo(demo, stores):
    every = ",".join((*DIMENSIONS, "namespace"))
    rows = demo.get("/api/v1/allocations", params={"period": "2026-10", "aggregate": every}).json()["rows"]
    assert {row["namespace"] for row in rows if row["category"] == "cluster"} >= {"payments-api", "payments-legacy"}
    assert all(row["namespace"] == row["memory_share"] == "" for row in rows if not row["cluster"])
    summed: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    for row in rows:
        summed[(row["period"], *(row[name] for name in DIMENSIONS), row["currency"])] += Decimal(row["amount"])
        assert row["amount"] == format(Decimal(row["amount"]).quantize(Decimal("0.01")), "f")
    assert summed == expected_sums(stores.demo_report, DIMENSIONS)


def test_aggregate_namespace_keeps_service_and_cluster_with_the_memory_share(worked):
    body = worked.get("/api/v1/allocations", params={"period": "2026-10", "aggregate": "namespace"}).json()
    assert body["rows"] == [
        {"period": "2026-10", "service": service, "cluster": cluster, "namespace": namespace, "memory_share": share,
         "memory_share_ratio": ratio, "amount": amount, "currency": "USD"}
        for service, cluster, namespace, share, ratio, amount in (
            ("mobile", "prod", "mobile-api", "3/5", "0.6", "600.00"),
            ("mcmp", "prod", "mcmp", "3/10", "0.3", "300.00"),
            ("mobile", "", "", "", "", "350.00"),
            ("mcmp", "", "", "", "", "150.00"),
            ("", "", "", "", "", "100.00"),
            # kube-system maps to no service: its share went to the common pool.
            ("", "prod", "kube-system", "1/10", "0.1", "100.00"),
        )]


def test_aggregate_company_namespace_as_csv(demo, stores):
    response = demo.get("/api/v1/allocations", params={"period": "2026-10", "aggregate": "company,namespace",
                                                       "format": "csv"})
    assert response.status_code == 200
    assert response.text.splitlines()[0] == \
        "period,company,service,cluster,namespace,memory_share,memory_share_ratio,amount,currency"
    rows = read_rows(response.text)
    payments = {row["namespace"]: row for row in rows if (row["company"], row["service"], row["cluster"])
                == ("acme", "payments", "prod")}
    assert set(payments) == {"payments-api", "payments-legacy"}
    for row in payments.values():
        share = Fraction(row["memory_share"])
        assert abs(Fraction(row["memory_share_ratio"]) - share) <= Fraction(1, 2 * 10**12)
    summed: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    for row in rows:
        summed[(row["period"], row["company"], row["currency"])] += Decimal(row["amount"])
    assert summed == expected_sums(stores.demo_report, ("company",))


def test_openapi_describes_the_namespace_drill_down(worked):
    document = worked.get("/openapi.json").json()
    parameters = document["paths"]["/api/v1/allocations"]["get"]["parameters"]
    aggregate = next(parameter for parameter in parameters if parameter["name"] == "aggregate")
    assert "namespace" in aggregate["description"] and "memory_share" in aggregate["description"]
    schemas = document["components"]["schemas"]
    assert "memory_share" in schemas["AllocationsOut"]["properties"]["rows"]["description"]
    assert schemas["ExplanationOut"]["properties"]["namespaces"]["items"] == {"$ref": "#/components/schemas/NamespaceOut"}
    assert {"namespace", "memory_share", "amount"} <= set(schemas["NamespaceOut"]["properties"])


def test_a_window_of_months_by_namespace(worked):
    listed = worked.get("/api/v1/allocations", params={"window": "2026-09,2026-10", "aggregate": "namespace"}).json()
    october = worked.get("/api/v1/allocations", params={"period": "2026-10", "aggregate": "namespace"}).json()
    assert [row for row in listed["rows"] if row["period"] == "2026-10"] == october["rows"]
    assert {row["namespace"] for row in listed["rows"] if row["period"] == "2026-09"} == {""}


# ------------------------------------------------------------------------------------------------ windows


def monthly(client: TestClient, month: str) -> dict[tuple[str, str], Decimal]:
    rows = client.get("/api/v1/allocations", params={"period": month, "aggregate": "company"}).json()["rows"]
    return {(row["company"], row["currency"]): Decimal(row["amount"]) for row in rows}


def test_a_window_of_one_month_is_that_months_latest_run(worked, stores):
    by_period = worked.get("/api/v1/allocations", params={"period": "2026-09"}).json()
    for params in ({"window": "2026-09"}, {"from": "2026-09", "to": "2026-09"}, {"window": "2026-09,2026-09"}):
        body = worked.get("/api/v1/allocations", params=params).json()
        assert body["rows"] == by_period["rows"]
        assert body["run_id"] == stores.september_runs[1] == by_period["run_id"]
        assert body["runs"] == [{"period": "2026-09", "run_id": stores.september_runs[1]}]


def test_a_window_lists_each_months_rows_or_sums_them_exactly(worked, stores):
    params = {"from": "2026-08", "to": "2026-10", "aggregate": "company"}
    listed = worked.get("/api/v1/allocations", params=params).json()
    assert listed["period"] == "2026-08..2026-10" and listed["run_id"] is None and not listed["accumulate"]
    assert listed["missing"] == ["2026-08"]
    assert [run["period"] for run in listed["runs"]] == ["2026-09", "2026-10"]
    september, october = monthly(worked, "2026-09"), monthly(worked, "2026-10")
    assert {(row["period"], row["company"]): Decimal(row["amount"]) for row in listed["rows"]} == {
        **{("2026-09", company): amount for (company, _), amount in september.items()},
        **{("2026-10", company): amount for (company, _), amount in october.items()}}

    summed = worked.get("/api/v1/allocations", params={**params, "accumulate": "true"}).json()
    assert summed["accumulate"] and {row["period"] for row in summed["rows"]} == {"2026-08..2026-10"}
    got = {(row["company"], row["currency"]): Decimal(row["amount"]) for row in summed["rows"]}
    assert got == {key: september.get(key, Decimal(0)) + october.get(key, Decimal(0))
                   for key in september.keys() | october.keys()}


def test_a_window_as_csv_names_the_window(worked):
    response = worked.get("/api/v1/allocations", params={"window": "2026-09,2026-10", "aggregate": "company",
                                                         "accumulate": "true", "format": "csv"})
    assert response.status_code == 200
    assert 'filename="allocations-2026-09..2026-10.csv"' in response.headers["content-disposition"]
    assert {row["period"] for row in read_rows(response.text)} == {"2026-09..2026-10"}


def test_month_and_lastmonth_are_the_current_and_previous_months(worked):
    from datetime import UTC, datetime

    from agent.core.periods import Period

    current = Period.of(datetime.now(UTC))
    for word, month in (("month", current), ("lastmonth", current.previous())):
        response = worked.get("/api/v1/allocations", params={"window": word})
        assert response.status_code == 404 and response.json()["detail"] == f"no stored run in {month}"


@pytest.mark.parametrize(("params", "named"), [
    ({"window": "2026-10", "period": "2026-10"}, "window"),
    ({"window": "2026-10", "from": "2026-09", "to": "2026-10"}, "window"),
    ({"from": "2026-09"}, "to"),
    ({"to": "2026-09"}, "from"),
    ({"from": "2026-10", "to": "2026-09"}, "to"),
    ({"window": "2026-13"}, "window"),
    ({"window": "yesterday"}, "window"),
    ({"window": "2026-01,2026-02,2026-03"}, "window"),
    ({"from": "2000-01", "to": "2026-10"}, "to"),
    ({"from": "2026-9", "to": "2026-10"}, "from"),
    ({"window": "2026-10", "run": "1"}, "window"),
])
def test_a_bad_window_is_422_naming_the_parameter(worked, params, named):
    response = worked.get("/api/v1/allocations", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", named]


@pytest.mark.parametrize(("path", "params", "unknown"), [
    ("/api/v1/allocations", {"period": "2026-10", "accumulat": "true"}, "accumulat"),
    ("/api/v1/allocations", {"period": "2026-10", "shareIdle": "true", "idle": "x"}, "idle, shareIdle"),
    ("/api/v1/runs", {"limit": "5"}, "limit"),
    ("/api/v1/runs/1", {"period": "2026-10"}, "period"),
])
def test_an_unknown_query_parameter_is_400_listing_the_accepted_ones(worked, path, params, unknown):
    response = worked.get(path, params=params)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith(f"unknown query parameter(s) {unknown}; ")
    if path == "/api/v1/allocations":
        assert detail.endswith("takes accumulate, aggregate, format, from, period, run, to, window")
    if path == "/api/v1/runs/1":
        assert detail.endswith("takes none")


def test_openapi_describes_the_window_parameters(worked):
    operation = worked.get("/openapi.json").json()["paths"]["/api/v1/allocations"]["get"]
    names = {parameter["name"] for parameter in operation["parameters"]}
    assert {"window", "from", "to", "accumulate", "period", "run", "aggregate", "format"} == names
    assert "400" in operation["responses"]


# ---------------------------------------------------------------------------------------------- explain


def test_explain_shows_the_worked_example_shares(worked, stores):
    body = worked.get(f"/api/v1/runs/{stores.worked_run}/explain",
                      params={"company": "alpha", "service": "mobile"}).json()
    cluster = [c for c in body["contributions"] if c["category"] == "cluster"]
    assert len(cluster) == 1
    piece = cluster[0]
    assert (piece["tag"], piece["cluster"], piece["namespace"]) == ("cz_cluster_prod", "prod", "mobile-api")
    assert Fraction(piece["target_share"]["fraction"]) == Fraction(6, 10)
    assert Decimal(piece["target_share"]["ratio"]) == Decimal("0.6")
    assert Fraction(piece["company_share"]["fraction"]) == Fraction(7, 10)
    assert Decimal(piece["company_share"]["ratio"]) == Decimal("0.7")
    assert piece["amount"] == "420.000000"
    amounts = {c["category"]: c["amount"] for c in body["contributions"]}
    assert amounts == {"cluster": "420.000000", "service_common": "105.000000", "service_exclusive": "140.000000"}
    assert {(r["category"], r["amount"]) for r in body["rows"]} == {
        ("cluster", "420.00"), ("service_common", "105.00"), ("service_exclusive", "140.00")}
    assert body["namespaces"] == [
        {"service": "mobile", "category": "cluster", "cluster": "prod", "namespace": "mobile-api",
         "memory_share": {"fraction": "3/5", "ratio": "0.6"}, "amount": "420.00", "currency": "USD"},
        {"service": "mobile", "category": "service_common", "cluster": "", "namespace": "", "memory_share": None,
         "amount": "105.00", "currency": "USD"},
        {"service": "mobile", "category": "service_exclusive", "cluster": "", "namespace": "", "memory_share": None,
         "amount": "140.00", "currency": "USD"}]
    lines = {line["tag"]: line for line in body["bill_lines"]}
    assert set(lines) == {"cz_cluster_prod", "cz_common_subcom", "mobile"}
    assert lines["cz_cluster_prod"]["line_count"] == 2
    assert lines["cz_cluster_prod"]["amount"] == "1000"
    assert list(lines["cz_cluster_prod"]["rows_by_source"].values()) == ["2-3"]


def test_explain_unallocated_cost_names_its_reason(worked, stores):
    body = worked.get(f"/api/v1/runs/{stores.september_runs[1]}/explain", params={"company": ""}).json()
    assert [(c["reason"], c["amount"]) for c in body["contributions"]] == [
        ("unknown service 'legacy-crm'", "7.500000")]
    assert body["service"] is None


# -------------------------------------------------------------------------------------------- statement


def test_statement_is_the_page_the_cli_writes_beside_the_month_before(worked, stores, tmp_path):
    response = worked.get("/api/v1/statement", params={"period": "2026-10", "company": "alpha"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    page = tmp_path / "alpha.html"
    assert main(["--store", stores.worked, "statement", "--period", "2026-10", "--company", "alpha", "--out",
                 str(page)]) == 0
    assert response.text == page.read_text()
    assert f"CZ-2026-10-alpha-{stores.worked_run}" in response.text
    assert f"run {stores.september_runs[1]}, the latest of 2026-09" in response.text


def test_statement_of_a_given_run(worked, stores):
    response = worked.get("/api/v1/statement", params={"run": stores.september_runs[0], "company": "beta"})
    assert response.status_code == 200
    assert f"CZ-2026-09-beta-{stores.september_runs[0]}" in response.text
    assert "No run of 2026-08 is stored" in response.text


# -------------------------------------------------------------------------------------- runs and periods


def test_runs_list_and_detail(worked, stores):
    runs = worked.get("/api/v1/runs").json()["runs"]
    assert [r["id"] for r in runs] == [stores.worked_run, *stores.september_runs]
    assert worked.get("/api/v1/runs", params={"period": "2026-09"}).json()["runs"][-1]["id"] == \
        stores.september_runs[1]
    detail = worked.get(f"/api/v1/runs/{stores.worked_run}").json()
    assert detail["period"] == "2026-10"
    assert detail["manifest"]["namespace_shares"]["prod"]["mobile-api"] == "3/5"
    assert detail["totals"]["USD"]["bill_rounded"] == "1600.00"


def test_periods_with_their_latest_run_and_totals(worked, stores):
    periods = worked.get("/api/v1/periods").json()["periods"]
    assert [(p["period"], p["latest_run_id"], p["runs"]) for p in periods] == [
        ("2026-10", stores.worked_run, 1), ("2026-09", stores.september_runs[1], 2)]
    assert periods[0]["totals"]["USD"]["allocated"] == "1600.00"
    assert periods[1]["totals"]["USD"]["unallocated"] == "7.50"


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("path", "params", "named"), [
    ("/api/v1/allocations", {"period": "2031-01"}, "2031-01"),
    ("/api/v1/allocations", {"run": 999}, "999"),
    ("/api/v1/allocations", {"run": 1, "period": "2026-09"}, "2026-09"),
    ("/api/v1/runs/999", {}, "999"),
    ("/api/v1/runs/999/explain", {"company": "alpha"}, "999"),
    ("/api/v1/runs/1/explain", {"company": "nobody"}, "nobody"),
    ("/api/v1/statement", {"period": "2026-10", "company": "nobody"}, "nobody"),
    ("/api/v1/statement", {"period": "2031-01", "company": "alpha"}, "2031-01"),
])
def test_missing_runs_and_periods_are_404_naming_them(worked, path, params, named):
    response = worked.get(path, params=params)
    assert response.status_code == 404
    assert named in response.json()["detail"]


@pytest.mark.parametrize("params", [
    {"period": "2026-13"},
    {"period": "2026/10"},
    {"period": "2026-10", "aggregate": "company,tenant"},
    {"period": "2026-10", "format": "xml"},
    {"run": "abc"},
    {},
])
def test_bad_parameters_are_422(worked, params):
    assert worked.get("/api/v1/allocations", params=params).status_code == 422


def test_unknown_dimension_is_named(worked):
    response = worked.get("/api/v1/allocations", params={"period": "2026-10", "aggregate": "tenant"})
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "aggregate"] and "tenant" in error["msg"]


def test_a_store_error_is_503_with_its_message(tmp_path):
    broken = create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'runs.db'}")
    client = TestClient(create_app(engine=broken, registry=CollectorRegistry()))
    for path in ("/api/v1/runs", "/api/v1/periods", "/api/v1/allocations?period=2026-10"):
        response = client.get(path)
        assert response.status_code == 503
        assert "run store" in response.json()["detail"]
    assert client.get("/healthz").status_code == 200


# ------------------------------------------------------------------------------------------- operations


def test_healthz_and_readyz(stores):
    engine = open_store(stores.worked)
    ready = {"value": False}
    client = TestClient(create_app(engine=engine, registry=CollectorRegistry(), ready=lambda: ready["value"]))
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    ready["value"] = True
    assert client.get("/readyz").status_code == 200


def test_metrics_exposes_the_registry(worked):
    response = worked.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'cz_allocation_cost{category="cluster",cluster="prod",company="alpha"' in response.text
    assert "cz_agent_store_up 1.0" in response.text


# ------------------------------------------------------------------------------------------------ auth


API_PATHS = ["/api/v1/runs", "/api/v1/runs/1/document", "/api/v1/periods", "/api/v1/split?period=2026-10", "/api/v1/allocations?period=2026-10", "/api/v1/runs/1",
             "/api/v1/runs/1/explain?company=alpha", "/api/v1/statement?period=2026-10&company=alpha"]


@pytest.mark.parametrize("path", API_PATHS)
def test_token_guards_every_api_endpoint(stores, path):
    client = api_client(stores.worked, api_token=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": "Bearer"}):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_health_and_metrics_stay_open_unless_metrics_need_the_token(stores):
    client = api_client(stores.worked, api_token=TOKEN)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200
    guarded = api_client(stores.worked, api_token=TOKEN, metrics_token_required=True)
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert guarded.get("/healthz").status_code == 200


def test_without_a_token_the_api_is_open(worked):
    assert worked.get("/api/v1/runs").status_code == 200


def test_metrics_token_required_needs_a_token(stores):
    with pytest.raises(ValueError, match="api_token"):
        create_app(engine=open_store(stores.worked), registry=CollectorRegistry(), metrics_token_required=True)


# --------------------------------------------------------------------------------------------- openapi


def test_openapi_lists_every_path_with_title_and_version(worked):
    document = worked.get("/openapi.json").json()
    assert set(document["paths"]) == PATHS
    assert document["info"] == {**document["info"], "title": "cz-allocation-agent", "version": __version__}
    assert "securitySchemes" not in document.get("components", {})


def test_openapi_declares_the_bearer_scheme_when_a_token_is_set(stores):
    client = api_client(stores.worked, api_token=TOKEN)
    assert client.get("/openapi.json").status_code == 401
    document = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert set(document["paths"]) == PATHS
    schemes = document["components"]["securitySchemes"]
    assert [s for s in schemes.values() if s["type"] == "http" and s["scheme"] == "bearer"]
    name = next(iter(schemes))
    for path in PATHS - {"/healthz", "/readyz", "/metrics"}:
        assert document["paths"][path]["get"]["security"] == [{name: []}]
    assert "security" not in document["paths"]["/healthz"]["get"]
    assert "security" not in document["paths"]["/metrics"]["get"]
