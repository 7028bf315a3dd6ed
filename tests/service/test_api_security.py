"""API hardening over a real stored run: every route the app has (found by enumerating them, so a new one
cannot be forgotten) refuses a missing or wrong token, and oversized requests are refused with 4xx."""

from __future__ import annotations

import re
from pathlib import Path

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from agent.service.api import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_QUERY_BYTES
from tests.support.store import allocate_run, api_client

WORKED = Path(__file__).resolve().parents[1] / "data" / "worked"
TOKEN = "tok-3f9a1c-secret"
WRONG = ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"},
         {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}, {"Authorization": "Bearer "})
HEALTH = {"/healthz", "/readyz"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("api-security")
    url = f"sqlite:///{directory / 'runs.db'}"
    allocate_run(url, bill=WORKED / "bill.csv", period="2026-10", out=directory / "report.csv")
    return url


def all_routes(app: FastAPI) -> list:
    """The app's routes with included routers flattened: FastAPI >= 0.16x nests them, older ones list them."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(flatten(app.routes)) if flatten else list(app.routes)


def concrete_paths(app_client: TestClient) -> list[str]:
    """Every GET route of the app, path parameters filled with run 1 (the stored run)."""
    routes = [route for route in all_routes(app_client.app) if "GET" in (getattr(route, "methods", None) or ())]
    return sorted(re.sub(r"\{[^}]+\}", "1", route.path) for route in routes)


def query_for(path: str) -> dict[str, str]:
    # Enough for the authorised request to succeed: a 200 proves the 401 was the token, not the input.
    return {"period": "2026-10"} if path.endswith(("/allocations", "/split", "/forecast")) else \
        {"period": "2026-10", "company": "alpha"} if path.endswith("/statement") else \
        {"company": "alpha"} if path.endswith("/explain") else {}


@pytest.mark.parametrize("metrics_token_required", [False, True])
def test_every_route_but_health_refuses_a_missing_or_wrong_token(store: str, metrics_token_required: bool) -> None:
    app_client = api_client(store, api_token=TOKEN, metrics_token_required=metrics_token_required)
    paths = concrete_paths(app_client)
    public = HEALTH | (set() if metrics_token_required else {"/metrics"})
    assert {"/api/v1/runs", "/api/v1/runs/1/explain", "/openapi.json", "/metrics"} <= set(paths)
    for path in paths:
        if path in public:
            assert app_client.get(path).status_code == 200, path
            continue
        for headers in WRONG:
            response = app_client.get(path, params=query_for(path), headers=headers)
            assert response.status_code == 401, (path, headers, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert TOKEN not in response.text
        granted = app_client.get(path, params=query_for(path), headers={"Authorization": f"Bearer {TOKEN}"})
        assert granted.status_code == 200, (path, granted.text)


def test_without_a_token_the_documents_and_api_are_open(store: str) -> None:
    app_client = api_client(store)
    for path in ("/openapi.json", "/docs", "/api/v1/runs"):
        assert app_client.get(path).status_code == 200, path


@pytest.mark.parametrize("kind", ["query", "headers", "body", "chunked body"])
def test_oversized_requests_are_refused_with_4xx(store: str, kind: str) -> None:
    app_client = api_client(store, api_token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    if kind == "query":
        response = app_client.get("/api/v1/runs", params={"x": "a" * (MAX_QUERY_BYTES + 1)}, headers=auth)
        expected = 414
    elif kind == "headers":
        response = app_client.get("/api/v1/runs", headers={**auth, "X-Pad": "a" * MAX_HEADER_BYTES})
        expected = 431
    elif kind == "body":
        response = app_client.request("GET", "/api/v1/runs", content=b"a" * (MAX_BODY_BYTES + 1), headers=auth)
        expected = 413
    else:
        chunks = (b"a" * 1024 for _ in range(MAX_BODY_BYTES // 1024 + 2))
        response = app_client.request("GET", "/healthz", content=chunks)
        expected = 200  # a route that never reads its body is not slowed by one; nothing was buffered
    assert response.status_code == expected, response.text
    # Just under the limits, the same request reaches the endpoint (which names the parameter it does not take).
    served = app_client.get("/api/v1/runs", params={"x": "a" * (MAX_QUERY_BYTES - 10)}, headers=auth)
    assert served.status_code == 400 and served.json()["detail"].startswith("unknown query parameter(s) x;")


def test_a_negative_or_garbage_content_length_is_refused(store: str) -> None:
    app_client = api_client(store)
    response = app_client.get("/healthz", headers={"Content-Length": "-1"})
    assert response.status_code in (400, 413)
