"""Versions replace: where a provider's delivery manifest is in the inbox (legacy AWS CUR, AWS Data Exports,
Azure cost exports, synced from the bucket), a month's bill is the newest delivery's files only."""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.bill_limits import BillLimits
from agent.pipeline import import_options_for
from agent.service.inbox import Inbox
from agent.service.metrics import JobStats
from agent.service.serve import AgentService
from agent.settings import Settings
from agent.sources.rules_file import load_rules
from agent.store.runs import open_store
from tests.service.test_inbox_ledger import bills_of
from tests.service.test_serve import RULES, setup  # noqa: F401 - `setup` is a fixture

# The inbox holds the bucket from this prefix on: `aws s3 sync s3://cz-billing/exports/ inbox/`.
BUCKET, PREFIX = "cz-billing", "exports"
_gzip_stamps = itertools.count(1_790_000_000)


def part(amount: str) -> bytes:
    """A bill part; the gzip header's time tells parts apart as the providers' different contents would."""
    text = f"billingCycle,cz_container_bill,unblendedCost,currency\n2026-10,mobile,{amount},USD\n"
    return gzip.compress(text.encode(), mtime=next(_gzip_stamps))


def put(path: Path, data: bytes | str) -> Path:
    """Written as a sync writes a file: to a hidden temporary name, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(temporary, path)
    return path


@dataclass(frozen=True)
class Delivered:
    manifest: Path
    files: list[Path]


class LegacyCur:
    """`<prefix>/<report>/<YYYYMMDD-YYYYMMDD>/<assemblyId>/` per update; the period folder's manifest is rewritten
    each time and a copy stays in the assembly's folder (AWS CUR user guide, "Cost and Usage Reports manifest
    files")."""

    required_key = "reportKeys"
    folder = "cz-cur/20261001-20261101"

    def deliver(self, inbox: Path, version: int, amounts: list[str]) -> Delivered:
        assembly = f"{version:08d}-4b1e-4c2f-9d3a-5e6f7a8b9c0d"
        keys = [f"{PREFIX}/{self.folder}/{assembly}/cz-cur-{i:05d}.csv.gz" for i in range(1, len(amounts) + 1)]
        files = [put(inbox / key.removeprefix(f"{PREFIX}/"), part(amount)) for key, amount in zip(keys, amounts)]
        manifest = json.dumps({
            "assemblyId": assembly, "account": "123456789012",
            "columns": [{"category": "bill", "name": "BillingPeriodStartDate", "type": "DateTime"},
                        {"category": "lineItem", "name": "UnblendedCost", "type": "BigDecimal"}],
            "charset": "UTF-8", "compression": "GZIP", "contentType": "text/csv",
            "reportId": "7d1e0b3c9a2f4e5d8c6b", "reportName": "cz-cur",
            "billingPeriod": {"start": "20261001T000000.000Z", "end": "20261101T000000.000Z"},
            "bucket": BUCKET, "reportKeys": keys, "additionalArtifactKeys": [],
        })
        put(inbox / self.folder / assembly / "cz-cur-Manifest.json", manifest)
        return Delivered(put(inbox / self.folder / "cz-cur-Manifest.json", manifest), files)


class DataExports:
    """CUR 2.0 or FOCUS with the "create new" option: `data/BILLING_PERIOD=YYYY-MM/<executionId>/` per execution,
    and the period's one manifest under `metadata/`, rewritten once the data files are delivered (AWS Data
    Exports, "Understanding export delivery" and "Data Exports manifest file reference")."""

    required_key = "dataFiles"

    def deliver(self, inbox: Path, version: int, amounts: list[str]) -> Delivered:
        execution = f"{version:08x}-93c1-4d7e-a2b8-0f5e6d7c8b9a"
        keys = [f"{PREFIX}/cz-focus/data/BILLING_PERIOD=2026-10/{execution}/cz-focus-{i:05d}.csv.gz"
                for i in range(1, len(amounts) + 1)]
        files = [put(inbox / key.removeprefix(f"{PREFIX}/"), part(amount)) for key, amount in zip(keys, amounts)]
        manifest = json.dumps({
            "executionId": execution,
            "exportArn": "arn:aws:bcm-data-exports:us-east-1:123456789012:export/cz-focus-3f2a9c1e",
            "columns": [{"name": "BilledCost", "type": "decimal(38,10)"}, {"name": "Tags", "type": "string"}],
            "dataFiles": [f"s3://{BUCKET}/{key}" for key in keys],
            "additionalOutputFiles": [],
            "billingPeriod": {"start": "2026-10-01T00:00:00.000Z", "end": "2026-11-01T00:00:00.000Z"},
        })
        return Delivered(put(inbox / "cz-focus/metadata/BILLING_PERIOD=2026-10/cz-focus-Manifest.json", manifest),
                         files)


class AzureExport:
    """A run folder per export run, `<directory>/<export>/<YYYYMMDD-YYYYMMDD>/<runId>/`, with its manifest.json
    (Microsoft Learn, "Tutorial: Create and manage exported data", Manifest file)."""

    required_key = "blobs"
    folder = "costs/cz-daily/20261001-20261031"

    def deliver(self, inbox: Path, version: int, amounts: list[str]) -> Delivered:
        run_id = f"{version:08x}-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
        submitted = datetime(2026, 10, 1, 6, 12, 44, 123456, tzinfo=UTC) + timedelta(hours=version)
        names = [f"{self.folder}/{run_id}/part_0_{i:04d}.csv.gz" for i in range(1, len(amounts) + 1)]
        files = [put(inbox / name, part(amount)) for name, amount in zip(names, amounts)]
        manifest = json.dumps({
            "manifestVersion": "2024-04-01", "byteCount": sum(file.stat().st_size for file in files),
            "blobCount": len(files), "dataRowCount": len(files),
            "exportConfig": {"exportName": "cz-daily", "dataVersion": "2023-05-01", "apiVersion": "2023-07-01-preview",
                             "resourceId": "/subscriptions/00000000-0000-0000-0000-000000000000/providers/"
                                           "Microsoft.CostManagement/exports/cz-daily",
                             "type": "ActualCost", "timeFrame": "MonthToDate", "granularity": "Daily"},
            "deliveryConfig": {"partitionData": True, "dataOverwriteBehavior": "CreateNewReport", "fileFormat": "Csv",
                               "compressionMode": "Gzip", "rootFolderPath": "costs",
                               "containerUri": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/"
                                               "billing/providers/Microsoft.Storage/storageAccounts/czbilling"},
            "runInfo": {"executionType": "Scheduled", "submittedTime": submitted.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
                        "runId": run_id, "startDate": "2026-10-01T00:00:00",
                        "endDate": f"{submitted:%Y-%m-%d}T00:00:00Z"},
            "blobs": [{"blobName": name, "byteCount": file.stat().st_size, "dataRowCount": 1}
                      for name, file in zip(names, files)],
        })
        return Delivered(put(inbox / self.folder / run_id / "manifest.json", manifest), files)


SHAPES = [LegacyCur(), DataExports(), AzureExport()]
shapes = pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: type(shape).__name__)


def october_bills(engine) -> list[str]:
    return [total for period, total in bills_of(engine) if period == "2026-10"]


def scan_of(inbox: Path, engine, rules: Path):
    return Inbox(inbox, engine=engine, options=import_options_for(load_rules(rules), period=None,
                                                                  limits=BillLimits())).scan()


@shapes
def test_only_the_newest_of_two_deliveries_is_the_bill_and_the_older_files_are_reported(setup, shape, caplog):
    service, inbox, engine, _, _, rules = setup
    older = shape.deliver(inbox, 1, ["100.00", "20.00"])
    newer = shape.deliver(inbox, 2, ["130.00", "25.00"])
    with caplog.at_level(logging.INFO, logger="agent.service.inbox"):
        assert service.import_job() and service.allocate_job()
        ignored = [record.getMessage() for record in caplog.records if "superseded" in record.getMessage()]
        caplog.clear()
        assert service.import_job()
        assert not [record for record in caplog.records if "superseded" in record.getMessage()]
    assert october_bills(engine) == ["155.00"]
    assert ignored == [f"inbox: {file} ignored: superseded by the newer delivery of {newer.manifest}"
                       for file in sorted(older.files)]
    assert scan_of(inbox, engine, rules).superseded == {file: newer.manifest for file in older.files}


@shapes
def test_a_newer_delivery_restates_the_month(setup, shape):
    service, inbox, engine, *_ = setup
    shape.deliver(inbox, 1, ["100.00"])
    assert service.import_job() and service.allocate_job()
    shape.deliver(inbox, 2, ["140.00", "2.50"])
    assert service.import_job() and service.allocate_job()
    assert october_bills(engine) == ["100.00", "142.50"]


@shapes
def test_a_file_the_newest_manifest_lists_but_the_inbox_lacks_fails_the_period(setup, shape):
    service, inbox, engine, stats, _, _ = setup
    (inbox / "november.csv").write_text("billingCycle,cz_container_bill,unblendedCost,currency\n"
                                        "2026-11,mobile,7.00,USD\n")
    shape.deliver(inbox, 1, ["100.00"])
    partial = shape.deliver(inbox, 2, ["130.00", "25.00"])
    partial.files[1].unlink()
    assert not service.import_job()
    assert not service.allocate_job()
    assert bills_of(engine) == [("2026-11", "7.00")]
    partial.files[1].write_bytes(part("25.00"))
    assert service.import_job() and service.allocate_job()
    assert october_bills(engine) == ["155.00"]


@shapes
def test_the_missing_file_is_named_in_one_line(setup, shape, caplog):
    service, inbox, *_ = setup
    delivered = shape.deliver(inbox, 1, ["100.00", "20.00"])
    delivered.files[0].unlink()
    with caplog.at_level(logging.ERROR):
        assert not service.import_job()
    (line,) = [record.getMessage() for record in caplog.records if record.name == "agent.service.inbox"]
    assert f"{delivered.manifest} lists {delivered.files[0]} not in the inbox" in line
    assert "2026-10 is not allocated until they arrive" in line and "\n" not in line


@shapes
@pytest.mark.parametrize("broken", ["missing key", "not json"])
def test_a_malformed_manifest_fails_its_period_with_one_line_naming_the_file_and_the_key(setup, shape, broken,
                                                                                       caplog):
    service, inbox, engine, *_ = setup
    shape.deliver(inbox, 1, ["100.00"])
    assert service.import_job() and service.allocate_job()
    manifest = shape.deliver(inbox, 2, ["130.00"]).manifest
    document = json.loads(manifest.read_text())
    del document[shape.required_key]
    put(manifest, json.dumps(document) if broken == "missing key" else manifest.read_text()[:-20])
    with caplog.at_level(logging.ERROR):
        assert not service.import_job()
        assert not service.allocate_job()
    assert october_bills(engine) == ["100.00"]
    lines = [record.getMessage() for record in caplog.records if str(manifest) in record.getMessage()]
    assert lines and all("\n" not in line for line in lines)
    expected = f"key {shape.required_key!r} is missing" if broken == "missing key" else "not valid JSON"
    assert f"{manifest}: {expected}" in lines[0]


def test_an_older_azure_run_synced_after_a_newer_one_does_not_replace_it(setup):
    service, inbox, engine, *_ = setup
    AzureExport().deliver(inbox, 5, ["150.00"])
    assert service.import_job() and service.allocate_job()
    AzureExport().deliver(inbox, 4, ["90.00"])
    assert service.import_job() and service.allocate_job()
    assert october_bills(engine) == ["150.00"]


def test_bills_no_manifest_governs_keep_counting_beside_a_delivery(setup):
    service, inbox, engine, *_ = setup
    LegacyCur().deliver(inbox, 1, ["100.00"])
    LegacyCur().deliver(inbox, 2, ["110.00"])
    put(inbox / "by-hand" / "credits-2026-10.csv", "billingCycle,cz_container_bill,unblendedCost,currency\n"
                                                   "2026-10,mobile,-10.00,USD\n")
    assert service.import_job() and service.allocate_job()
    assert october_bills(engine) == ["100.00"]


def test_a_manifest_larger_than_any_delivery_manifest_is_not_read(setup):
    service, inbox, engine, *_ = setup
    manifest = LegacyCur().deliver(inbox, 1, ["100.00"]).manifest
    put(manifest, manifest.read_text() + " " * (5 * 1024 * 1024))
    assert not service.import_job()
    assert october_bills(engine) == []


amounts = st.lists(st.decimals(min_value=Decimal("0.01"), max_value=Decimal(9999), places=2), min_size=1,
                   max_size=3)


@settings(max_examples=12, deadline=None)
@given(shape=st.sampled_from(SHAPES), deliveries=st.lists(st.tuples(amounts, st.booleans()), min_size=1, max_size=5))
def test_the_stored_bill_is_always_the_newest_delivery(shape, deliveries):
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        inbox, rules = root / "inbox", root / "rules.yaml"
        inbox.mkdir()
        rules.write_text(RULES)
        engine = open_store(f"sqlite:///{root / 'runs.db'}")
        service = AgentService(settings=Settings(rules_file=rules, inbox_dir=inbox), engine=engine,
                               job_stats=JobStats(), clock=lambda: datetime(2026, 11, 23, 12, tzinfo=UTC))
        for version, (delivered, allocate_now) in enumerate(deliveries, start=1):
            shape.deliver(inbox, version, [str(amount) for amount in delivered])
            if allocate_now or version == len(deliveries):
                assert service.import_job() and service.allocate_job()
                assert Decimal(october_bills(engine)[-1]) == sum(delivered, Decimal(0))
        engine.dispose()
