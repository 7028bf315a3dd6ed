"""close, diff, serve --once and the settings (config file, environment, masked secrets) from the command line."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from agent.cli import main
from agent.errors import SettingsError
from agent.settings import load_settings

WORKED = Path(__file__).resolve().parents[1] / "data" / "worked"


def allocate(store: str, out: Path, bill: Path = WORKED / "bill.csv") -> int:
    return main(["--store", store, "allocate", "--bill", str(bill), "--rules", str(WORKED / "rules.yaml"),
                 "--usage", str(WORKED / "usage.csv"), "--period", "2026-10", "--out", str(out)])


def test_close_then_diff_shows_what_a_restatement_changed(tmp_path, capsys):
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    assert allocate(store, tmp_path / "a.csv") == 0
    assert main(["--store", store, "close", "--period", "2026-10"]) == 0
    assert "period 2026-10 closed at run 1" in capsys.readouterr().out
    assert main(["--store", store, "close", "--period", "2026-10"]) == 1
    assert "already closed" in capsys.readouterr().err
    late = tmp_path / "late.csv"
    late.write_text((WORKED / "bill.csv").read_text() + "2026-10,team-mobile,ws-prod,,mobile,10,USD\n")
    assert allocate(store, tmp_path / "b.csv", bill=late) == 0
    capsys.readouterr()
    assert main(["--store", store, "diff", "1", "2"]) == 0
    printed = capsys.readouterr().out
    assert "run 1 (2026-10) -> run 2 (2026-10)" in printed
    assert "│ USD      │ alpha   │ mobile  │ 665.00 │ 672.00 │  +7.00 │" in printed
    assert "│ USD      │ beta    │ mobile  │ 285.00 │ 288.00 │  +3.00 │" in printed
    assert "gamma" not in printed
    assert "USD total: 1,600.00 -> 1,610.00 (+10.00)" in printed


def test_close_without_a_run_fails(tmp_path, capsys):
    assert main(["--store", f"sqlite:///{tmp_path / 'runs.db'}", "close", "--period", "2026-01"]) == 1
    assert "no stored run for period 2026-01" in capsys.readouterr().err


def test_serve_once_allocates_the_inbox_and_exits(tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "bill.csv").write_text((WORKED / "bill.csv").read_text())
    config = tmp_path / "agent.yaml"
    config.write_text(f"rules_file: {WORKED / 'rules.yaml'}\ninbox_dir: {inbox}\n"
                      f"store_url: sqlite:///{tmp_path / 'runs.db'}\n")
    assert main(["serve", "--config", str(config), "--once"]) == 0
    out = tmp_path / "r.csv"
    assert main(["--store", f"sqlite:///{tmp_path / 'runs.db'}", "report", "--period", "2026-10", "--out",
                 str(out)]) == 0
    assert out.read_text().count("\n") > 1


def test_environment_overrides_the_config_file_and_secrets_are_masked(tmp_path, monkeypatch):
    config = tmp_path / "agent.yaml"
    config.write_text("port: 9000\nprometheus_password: from-file\nstore_url: postgresql://u:dbsecret@db/cz\n")
    monkeypatch.setenv("CZ_AGENT_PORT", "9100")
    monkeypatch.setenv("CZ_AGENT_API_TOKEN", "tok-123")
    settings = load_settings(config)
    assert settings.port == 9100
    assert settings.prometheus_password.get_secret_value() == "from-file"
    assert settings.effective_api_token() == "tok-123"
    shown = json.dumps(settings.masked())
    assert "from-file" not in shown and "tok-123" not in shown and "dbsecret" not in shown
    assert '"port": 9100' in shown


@pytest.mark.parametrize(("text", "message"), [("prot: 1\n", "unknown setting(s) prot"),
                                                ("port: 0\n", "port: Input should be greater than or equal to 1"),
                                                ("- a\n", "expected a mapping")])
def test_bad_config_files_are_named(tmp_path, text, message):
    config = tmp_path / "agent.yaml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings(config)


def test_serve_logs_its_effective_configuration_once_without_secrets(tmp_path, monkeypatch, caplog):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.setenv("CZ_AGENT_RULES_FILE", str(WORKED / "rules.yaml"))
    monkeypatch.setenv("CZ_AGENT_INBOX_DIR", str(inbox))
    monkeypatch.setenv("CZ_AGENT_STORE_URL", f"sqlite:///{tmp_path / 'runs.db'}")
    monkeypatch.setenv("CZ_AGENT_PROMETHEUS_PASSWORD", "hunter2")
    with caplog.at_level(logging.INFO):
        assert main(["serve", "--once"]) == 0
    configuration = [r.getMessage() for r in caplog.records if r.getMessage().startswith("effective configuration")]
    assert len(configuration) == 1
    assert "hunter2" not in caplog.text and "**********" in configuration[0]
