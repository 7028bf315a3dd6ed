"""A run store for the tests: runs allocated into it by the command line (in process), and the HTTP API over it
as the agent builds it (the allocation collector registered on a fresh registry)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine

from agent.cli import main
from agent.service.api import create_app
from agent.service.metrics import AllocationCollector, JobStats
from agent.store.runs import list_runs, open_store

WORKED = Path(__file__).resolve().parents[1] / "data" / "worked"


def allocate_run(store: str, *, bill: Path, period: str, out: Path, rules: Path = WORKED / "rules.yaml",
                 usage: Path = WORKED / "usage.csv") -> int:
    """`cz-agent --store STORE allocate` of the bill (the worked example's rules and usage unless given), which
    must succeed; the id of the run it stored."""
    assert main(["--store", store, "allocate", "--bill", str(bill), "--rules", str(rules), "--usage", str(usage),
                 "--period", period, "--out", str(out)]) == 0
    return list_runs(open_store(store))[-1].id


def api_app(store: str | Engine, **app_options: object) -> FastAPI:
    """The agent's app over the store (a URL or an open engine), /metrics from an AllocationCollector of it."""
    engine = open_store(store) if isinstance(store, str) else store
    registry = CollectorRegistry()
    registry.register(AllocationCollector(engine=engine, job_stats=JobStats()))
    return create_app(engine=engine, registry=registry, **app_options)


def api_client(store: str | Engine, **app_options: object) -> TestClient:
    return TestClient(api_app(store, **app_options))
