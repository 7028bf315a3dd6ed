"""The listening socket: the default `::` answers IPv4 and IPv6 clients alike, falls back to IPv4 on a kernel
without IPv6, and an explicit host is bound as given."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.errors import SettingsError
from agent.service.listen import listening_socket
from agent.settings import Settings
from tests.support.http import http_get
from tests.support.served import served_agent

WORKED = Path(__file__).resolve().parents[1] / "data" / "worked"

def accepts(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def test_the_default_host_listens_on_ipv4_and_ipv6():
    with listening_socket(Settings().host, 0) as listener:
        port = listener.getsockname()[1]
        assert listener.family == socket.AF_INET6
        assert listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        assert accepts("127.0.0.1", port)
        assert accepts("::1", port)


def test_without_ipv6_the_default_host_listens_on_every_ipv4_address(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(socket, "has_dualstack_ipv6", lambda: False)
    with listening_socket("::", 0) as listener:
        assert listener.family == socket.AF_INET
        assert listener.getsockname()[0] == "0.0.0.0"
        assert accepts("127.0.0.1", listener.getsockname()[1])


def test_an_ipv4_host_listens_on_ipv4_only():
    with listening_socket("0.0.0.0", 0) as listener:
        port = listener.getsockname()[1]
        assert accepts("127.0.0.1", port)
        assert not accepts("::1", port)


def test_a_port_in_use_is_one_line_naming_the_settings():
    with listening_socket("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError) as refused:
            listening_socket("127.0.0.1", port)
    message = str(refused.value)
    assert message.startswith(f"cannot listen on host '127.0.0.1' (CZ_AGENT_HOST), port {port} (CZ_AGENT_PORT): "
                              "Address already in use")
    assert "\n" not in message


@pytest.mark.integration
def test_a_served_agent_answers_on_ipv4_and_ipv6_by_default(tmp_path: Path):
    (tmp_path / "inbox").mkdir()
    settings = {"CZ_AGENT_RULES_FILE": str(WORKED / "rules.yaml"), "CZ_AGENT_INBOX_DIR": str(tmp_path / "inbox"),
                "CZ_AGENT_STORE_URL": f"sqlite:///{tmp_path / 'runs.db'}"}
    with served_agent(settings, log_path=tmp_path / "agent.log", host=None) as agent:
        port = agent.settings["CZ_AGENT_PORT"]
        assert "CZ_AGENT_HOST" not in agent.settings
        assert http_get(f"http://127.0.0.1:{port}/healthz")
        assert http_get(f"http://[::1]:{port}/healthz")
