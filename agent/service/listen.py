"""The HTTP server's listening socket: `::` is every address, IPv6 and IPv4 alike, where the kernel has IPv6."""

from __future__ import annotations

import logging
import socket

from agent.errors import SettingsError

log = logging.getLogger(__name__)

EVERY_ADDRESS = "::"
EVERY_IPV4_ADDRESS = "0.0.0.0"


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket. `::` is one dual-stack socket (IPV6_V6ONLY off, so IPv4 clients arrive as
    mapped addresses), or 0.0.0.0 on a kernel without IPv6; any other host is bound as given."""
    try:
        if host == EVERY_ADDRESS:
            if socket.has_dualstack_ipv6():
                return socket.create_server((host, port), family=socket.AF_INET6, dualstack_ipv6=True)
            log.info("this host has no dual-stack IPv6: listening on %s only", EVERY_IPV4_ADDRESS)
            host = EVERY_IPV4_ADDRESS
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
        return socket.create_server(address, family=family)
    except OSError as e:
        raise SettingsError(f"cannot listen on host {host!r} (CZ_AGENT_HOST), port {port} (CZ_AGENT_PORT): "
                            f"{e.strerror or e}") from e
