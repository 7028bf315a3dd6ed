"""Bills put into the inbox by hand: POST /api/v1/bills and `cz-agent push` check the bill first, answer with
what the next run will see, and rename it into place whole; a refused bill leaves nothing behind."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from agent.bills import ImportOptions
from agent.cli import main
from agent.service.api import Uploads, create_app
from agent.store.runs import list_runs, open_store
from tests.support.served import served_agent
from tests.support.waiting import wait_for

TOKEN = "s3cret-token"
WORKED = Path(__file__).resolve().parents[1] / "data" / "worked"
BILL = "billingCycle,cz_container_bill,unblendedCost,currency\n2026-10,mobile,100.25,USD\n2026-10,,50,USD\n"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def client(tmp_path: Path, *, token: str | None = TOKEN, max_bytes: int = 1024 * 1024) -> TestClient:
    uploads = Uploads(inbox_dir=tmp_path / "inbox", import_options=ImportOptions, max_bytes=max_bytes)
    app = create_app(engine=open_store(f"sqlite:///{tmp_path / 'runs.db'}"), registry=CollectorRegistry(),
                     api_token=token, uploads=uploads)
    return TestClient(app)


def inbox_files(tmp_path: Path) -> list[str]:
    inbox = tmp_path / "inbox"
    return sorted(str(path.relative_to(inbox)) for path in inbox.rglob("*") if path.is_file()) if inbox.exists() else []


def test_an_uploaded_bill_is_placed_in_its_period_folder_with_what_the_next_run_will_see(tmp_path):
    answer = client(tmp_path).post("/api/v1/bills?name=cloudz.csv&period=2026-10", content=BILL, headers=AUTH)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["path"] == "2026-10/cloudz.csv" and body["format"] == "native" and not body["replaced"]
    assert (body["input_rows"], body["rejected_rows"]) == (2, 0)
    assert body["periods"] == {"2026-10": {"lines": 2, "totals": {"USD": "150.25"}}}
    assert inbox_files(tmp_path) == ["2026-10/cloudz.csv"]
    assert (tmp_path / "inbox" / "2026-10" / "cloudz.csv").read_text() == BILL
    again = client(tmp_path).post("/api/v1/bills?name=cloudz.csv&period=2026-10",
                                  content=BILL.replace("100.25", "1.00"), headers=AUTH)
    assert again.json()["replaced"] and again.json()["periods"]["2026-10"]["totals"] == {"USD": "51.00"}
    assert inbox_files(tmp_path) == ["2026-10/cloudz.csv"]


def test_a_bill_is_on_disk_before_it_is_named_and_its_name_after(tmp_path, monkeypatch):
    # A crash right after the rename must not leave a bill whose tail was never written, nor lose the rename.
    events = []
    fsync, rename = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("rename", str(a))), rename(a, b))[1])
    source = tmp_path / "pushed.csv"
    source.write_text(BILL)

    answer = client(tmp_path).post("/api/v1/bills?name=cloudz.csv&period=2026-10", content=BILL, headers=AUTH)
    assert answer.status_code == 201, answer.text
    assert main(["push", str(source), "--inbox", str(tmp_path / "inbox"), "--period", "2026-10"]) == 0

    inbox = str(tmp_path / "inbox")
    renames = [i for i, (kind, _) in enumerate(events) if kind == "rename"]
    assert len(renames) == 2
    for i in renames:
        staged = events[i][1]
        assert ("fsync", staged) in events[:i], "the staged bill is synced before the rename"
        assert events[i + 1] == ("fsync", f"{inbox}/2026-10"), "the folder is synced after it"


@pytest.mark.parametrize(("query", "content", "status", "detail"), [
    ("name=bill.csv", "not,a,bill\n1,2,3\n", 422, "bill.csv"),
    ("name=bill.csv&period=2026-11", BILL, 422, "no row of the bill is in 2026-11 (its rows are in: 2026-10)"),
    ("name=../escape.csv", BILL, 422, "must be a plain file name"),
    ("name=.hidden.csv", BILL, 422, "must be a plain file name"),
    ("name=bill.exe", BILL, 422, "ending in .csv"),
    ("name=big.csv", BILL * 2000, 413, "larger than 65536 bytes"),
])
def test_a_refused_upload_leaves_nothing_in_the_inbox(tmp_path, query, content, status, detail):
    answer = client(tmp_path, max_bytes=64 * 1024).post(f"/api/v1/bills?{query}", content=content, headers=AUTH)
    assert answer.status_code == status and detail in answer.json()["detail"]
    # Hidden staging files included.
    assert inbox_files(tmp_path) == []


def test_uploads_need_the_token_and_are_refused_when_the_api_has_none(tmp_path):
    assert client(tmp_path).post("/api/v1/bills?name=b.csv", content=BILL).status_code == 401
    assert client(tmp_path).post("/api/v1/bills?name=b.csv", content=BILL,
                                 headers={"Authorization": "Bearer wrong"}).status_code == 401
    open_api = client(tmp_path, token=None).post("/api/v1/bills?name=b.csv", content=BILL)
    assert open_api.status_code == 403 and "need an API token" in open_api.json()["detail"]
    assert inbox_files(tmp_path) == []


def test_push_into_a_local_inbox_checks_the_bill_first(tmp_path, capsys):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(BILL)
    bad.write_text("billingCycle,unblendedCost,currency\n2026-10,1,USD\n")
    inbox = tmp_path / "inbox"
    assert main(["push", str(bad), "--period", "2026-10", "--inbox", str(inbox)]) == 1
    assert "no column holds the tag key" in capsys.readouterr().err and inbox_files(tmp_path) == []
    assert main(["push", str(good), "--period", "2026-10", "--inbox", str(inbox), "--name", "portal.csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["2026-10/portal.csv: native bill, 2 rows, 0 rejected",
                                                    "  2026-10: 2 lines, 150.25 USD"]
    assert inbox_files(tmp_path) == ["2026-10/portal.csv"]


@pytest.mark.integration
def test_push_to_a_served_agent_is_allocated_at_its_next_run(tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    bill = tmp_path / "portal.csv"
    bill.write_text(BILL)
    settings = {"CZ_AGENT_RULES_FILE": str(WORKED / "rules.yaml"), "CZ_AGENT_INBOX_DIR": str(tmp_path / "inbox"),
                "CZ_AGENT_STORE_URL": f"sqlite:///{tmp_path / 'runs.db'}", "CZ_AGENT_API_TOKEN": TOKEN,
                "CZ_AGENT_INBOX_POLL_SECONDS": "1", "HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    with served_agent(settings, log_path=tmp_path / "agent.log") as agent:
        assert main(["push", str(bill), "--period", "2026-10", "--server", agent.url,
                     "--token-file", str(token_file)]) == 0
        assert capsys.readouterr().out.startswith("2026-10/portal.csv: native bill, 2 rows, 0 rejected")
        engine = open_store(agent.store)
        wait_for(lambda: list_runs(engine), what="the pushed bill's run", process=agent.process, logs=agent.log_path)
        [run] = list_runs(engine)
        assert (run.period, run.manifest.totals_json()["USD"]["bill"]) == ("2026-10", "150.25")
        assert main(["push", str(bill), "--server", agent.url]) == 1
        assert "refused (401)" in capsys.readouterr().err


@pytest.mark.integration
def test_an_upload_cut_short_leaves_nothing_and_the_agent_serves_on(tmp_path):
    settings = {"CZ_AGENT_RULES_FILE": str(WORKED / "rules.yaml"), "CZ_AGENT_INBOX_DIR": str(tmp_path / "inbox"),
                "CZ_AGENT_STORE_URL": f"sqlite:///{tmp_path / 'runs.db'}", "CZ_AGENT_API_TOKEN": TOKEN,
                "HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    with served_agent(settings, log_path=tmp_path / "agent.log") as agent:
        host, port = agent.address.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(f"POST /api/v1/bills?name=cut.csv&period=2026-10 HTTP/1.1\r\nHost: {agent.address}\r\n"
                               f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100000\r\n\r\n".encode()
                               + BILL.encode())
        wait_for(lambda: "the client went away before the body ended" in agent.log(), what="the cut upload",
                 process=agent.process, logs=agent.log_path)
        assert inbox_files(tmp_path) == []
        answer = client_upload(agent.url)
        assert answer["path"] == "2026-10/whole.csv" and inbox_files(tmp_path) == ["2026-10/whole.csv"]


def client_upload(url: str) -> dict:
    request = urllib.request.Request(f"{url}/api/v1/bills?name=whole.csv&period=2026-10", data=BILL.encode(),
                                     headers={**AUTH, "Content-Type": "application/octet-stream"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.mark.integration
def test_an_idle_agent_whose_jobs_ran_has_not_loaded_data_frames(tmp_path):
    # Its first scan and allocation (an empty inbox) leave pandas, numpy and Arrow unloaded: most of the idle
    # footprint's goal (under 150 MiB, bench/serve_footprint.py).
    settings = {"CZ_AGENT_RULES_FILE": str(WORKED / "rules.yaml"), "CZ_AGENT_INBOX_DIR": str(tmp_path / "inbox"),
                "CZ_AGENT_STORE_URL": f"sqlite:///{tmp_path / 'runs.db'}"}
    with served_agent(settings, log_path=tmp_path / "agent.log") as agent:
        wait_for(lambda: agent.runs("import", "success") and agent.runs("allocate", "success"),
                 what="the first import and allocation jobs", process=agent.process, logs=agent.log_path)
        maps = Path(f"/proc/{agent.process.pid}/maps").read_text()
    loaded = {name for name in ("pandas", "numpy", "pyarrow") if f"/site-packages/{name}" in maps}
    assert not loaded
