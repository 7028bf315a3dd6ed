"""Bills in object storage (real S3, Azure Blob and Google Cloud Storage servers): mirrored into the inbox and
allocated like any bill; unchanged objects are not copied again; a source that cannot be read keeps its copies
and the last good runs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.errors import SettingsError
from agent.service.metrics import JobStats
from agent.service.serve import AgentService
from agent.settings import Settings
from agent.sources.objectstore import BillSource, Mirror, parse_sources
from agent.store.runs import list_runs, open_store
from tests.support.faultproxy import HttpFaultProxy, HttpFaults
from tests.support.fixtures_objectstore import S3_CREDENTIALS, ObjectStore

RULES = "companies: {alpha: 60, beta: 40}\nservices: {mobile: {alpha: 1}}\n"
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def bill(period: str, amount: str) -> bytes:
    return f"billingCycle,cz_container_bill,unblendedCost,currency\n{period},mobile,{amount},USD\n".encode()


FEES = b"unblendedCost,currency,cz_container_bill\n12.00,USD,\n"


@pytest.fixture(params=["s3_server", "azure_server", "gcs_server"])
def store(request, monkeypatch) -> ObjectStore:
    found: ObjectStore = request.getfixturevalue(request.param)
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return found


def settings_for(store: ObjectStore, tmp_path: Path, *sources: str, **changes: str) -> Settings:
    (tmp_path / "rules.yaml").write_text(RULES)
    values = {name.removeprefix("CZ_AGENT_").lower(): value for name, value in store.settings.items()
              if name.startswith("CZ_AGENT_")}
    return Settings(rules_file=tmp_path / "rules.yaml", inbox_dir=tmp_path / "inbox", bill_sources=list(sources),
                    object_store_timeout_seconds=5, **{**values, **changes})


def new_bucket(store: ObjectStore) -> str:
    bucket = f"bills-{uuid.uuid4().hex[:12]}"
    store.admin().create_dir(bucket)
    return bucket


def totals(engine) -> list[tuple[str, str]]:
    return [(run.period, run.manifest.totals_json().get("USD", {}).get("bill", "0")) for run in list_runs(engine)]


@pytest.mark.integration
def test_bills_in_object_storage_are_allocated_and_follow_the_source(store, tmp_path):
    bucket = new_bucket(store)
    store.put(f"{bucket}/exports/2026-10/bill.csv", bill("2026-10", "150.00"))
    store.put(f"{bucket}/exports/2026-09/fees.csv", FEES)
    store.put(f"{bucket}/exports/notes.txt", b"not a bill")
    store.put(f"{bucket}/elsewhere/2026-10/other.csv", bill("2026-10", "999.00"))
    settings = settings_for(store, tmp_path, f"{store.scheme}://{bucket}/exports")
    engine = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    service = AgentService(settings=settings, engine=engine, job_stats=JobStats(), clock=lambda: NOW)
    assert service.import_job() and service.allocate_job()
    assert totals(engine) == [("2026-09", "12.00"), ("2026-10", "150.00")]

    mirror = Mirror(parse_sources(settings.bill_sources), inbox_dir=settings.inbox_dir, settings=settings)
    # Objects keep their time to the second: a copy made within two seconds of it is made again, once.
    time.sleep(2.1)
    mirror.sync()
    unchanged = mirror.sync()
    assert (unchanged.copied, unchanged.removed, unchanged.failures) == ([], [], {})

    store.put(f"{bucket}/exports/2026-10/bill.csv", bill("2026-10", "175.50"))
    store.admin().delete_file(f"{bucket}/exports/2026-09/fees.csv")
    assert service.import_job() and service.allocate_job()
    assert totals(engine) == [("2026-09", "12.00"), ("2026-10", "150.00"), ("2026-10", "175.50"), ("2026-09", "0")]
    copies = sorted(str(path.relative_to(settings.inbox_dir)) for path in settings.inbox_dir.rglob("*") if path.is_file())
    assert copies == [f"remote/{store.scheme}/{bucket}/exports/2026-10/bill.csv"]


@pytest.mark.integration
def test_a_source_that_cannot_be_listed_keeps_its_copies_and_the_last_runs(store, tmp_path, caplog):
    bucket = new_bucket(store)
    store.put(f"{bucket}/2026-10/bill.csv", bill("2026-10", "10.00"))
    engine = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    good = settings_for(store, tmp_path, f"{store.scheme}://{bucket}")
    service = AgentService(settings=good, engine=engine, job_stats=JobStats(), clock=lambda: NOW)
    assert service.import_job() and service.allocate_job()
    broken = settings_for(store, tmp_path, f"{store.scheme}://{bucket}", f"{store.scheme}://no-such-{bucket}")
    service = AgentService(settings=broken, engine=engine, job_stats=JobStats(), clock=lambda: NOW)
    store.put(f"{bucket}/2026-10/bill.csv", bill("2026-10", "20.00"))
    assert not service.import_job()
    failed = [record.getMessage() for record in caplog.records if "job import failed" in record.getMessage()]
    assert len(failed) == 1 and f"{store.scheme}://no-such-{bucket}: cannot list the bills:" in failed[0]
    assert service.allocate_job()
    assert totals(engine) == [("2026-10", "10.00"), ("2026-10", "20.00")]


@pytest.mark.integration
def test_wrong_credentials_fail_in_one_line_and_change_nothing(azure_server, tmp_path):
    bucket = new_bucket(azure_server)
    azure_server.put(f"{bucket}/2026-10/bill.csv", bill("2026-10", "10.00"))
    settings = settings_for(azure_server, tmp_path, f"az://{bucket}", azure_storage_key="d3Jvbmc=")
    result = Mirror(parse_sources(settings.bill_sources), inbox_dir=settings.inbox_dir, settings=settings).sync()
    [message] = result.failures.values()
    assert message.startswith(f"az://{bucket}: cannot list the bills: ") and "\n" not in message
    assert result.copied == [] and not settings.inbox_dir.exists()


@pytest.fixture
def cutting_proxy(s3_server) -> Iterator[HttpFaultProxy]:
    with HttpFaultProxy(s3_server.endpoint).running() as proxy:
        yield proxy


@pytest.mark.integration
def test_a_transfer_cut_mid_file_keeps_the_previous_copy(s3_server, cutting_proxy, tmp_path, monkeypatch):
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = new_bucket(s3_server)
    first = bill("2026-10", "10.00") + b"2026-10,,1.00,USD\n" * 2000
    s3_server.put(f"{bucket}/2026-10/bill.csv", first)
    settings = settings_for(s3_server, tmp_path, f"s3://{bucket}", s3_endpoint_url=cutting_proxy.url)
    mirror = Mirror(parse_sources(settings.bill_sources), inbox_dir=settings.inbox_dir, settings=settings)
    assert mirror.sync().copied == [f"s3://{bucket}/2026-10/bill.csv"]
    s3_server.put(f"{bucket}/2026-10/bill.csv", first + b"2026-10,,2.00,USD\n")
    cutting_proxy.set_faults(HttpFaults(cut_after_bytes=1000))
    result = mirror.sync()
    assert result.copied == [] and list(result.failures) == [f"s3://{bucket}/2026-10/bill.csv"]
    assert result.failures[f"s3://{bucket}/2026-10/bill.csv"].startswith(f"s3://{bucket}/2026-10/bill.csv: cannot copy:")
    copy = settings.inbox_dir / "remote" / "s3" / bucket / "2026-10" / "bill.csv"
    assert copy.read_bytes() == first
    assert [path.name for path in copy.parent.iterdir()] == ["bill.csv"]
    cutting_proxy.set_faults(HttpFaults())
    assert mirror.sync().copied == [f"s3://{bucket}/2026-10/bill.csv"]
    assert copy.read_bytes().endswith(b"2.00,USD\n")


@pytest.mark.parametrize("url", ["s3:/bucket", "ftp://bucket/x", "s3://Bucket/x", "gs://b/../x", "s3://", "az:/"])
def test_a_malformed_bill_source_is_a_settings_error(url):
    with pytest.raises(SettingsError, match="is not s3://BUCKET/PREFIX"):
        BillSource.parse(url)


def test_a_bill_source_given_twice_is_refused():
    with pytest.raises(SettingsError, match="given twice"):
        parse_sources(["s3://bills/cur", "s3://bills/cur/"])
