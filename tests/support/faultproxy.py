"""Fault-injecting proxies in front of the real Prometheus (HTTP) and the real API server (TCP, TLS passed through).

The servers behind them are the real ones; the proxies only do to the traffic what a network, a load
balancer or a dying server does: answer late, trickle, cut, rewrite, refuse or swallow connections.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# (request path, upstream body) -> the body sent on; the status and headers stay the upstream's.
Rewrite = Callable[[str, bytes], bytes]


@dataclass
class HttpFaults:
    """What the HTTP proxy does to the next requests; tests change it while the agent runs."""

    delay_seconds: float = 0  # before the answer's headers
    trickle_seconds: float = 0  # between the body's bytes, after prompt headers
    rewrite: Rewrite | None = None
    # Called with the 1-based count of each request before it is forwarded (e.g. to stop the server).
    before_forward: Callable[[int], None] | None = None
    released: threading.Event = field(default_factory=threading.Event)  # set: stop delaying at once
    # Answers longer than this are cut after that many bytes of their body: the connection closes mid-transfer.
    cut_after_bytes: int | None = None


class HttpFaultProxy:
    """An HTTP proxy to `upstream` that counts requests and applies `faults`. When the upstream refuses the
    connection, the client's connection is closed without an answer, as a server that went away does."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults = HttpFaults()
        self.requests = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def set_faults(self, faults: HttpFaults) -> None:
        self.faults.released.set()
        self.faults = faults

    def _count(self) -> int:
        with self._lock:
            self.requests += 1
            return self.requests

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                proxy._serve(self)

            def do_HEAD(self) -> None:  # noqa: N802 - the http.server API
                proxy._serve(self)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        faults = self.faults
        count = self._count()
        if faults.before_forward is not None:
            faults.before_forward(count)
        try:
            status, headers, body = self._forward(handler.command, handler.path, dict(handler.headers))
        except OSError:
            handler.close_connection = True
            return
        if faults.rewrite is not None:
            body = faults.rewrite(handler.path, body)
        if faults.delay_seconds:
            faults.released.wait(faults.delay_seconds)  # set when the test changes the faults or ends
        try:
            self._answer(handler, status=status, headers=headers, body=body, faults=faults)
        except OSError:
            handler.close_connection = True  # the client gave up (its timeout): nothing left to do

    def _forward(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            # Without Accept-Encoding the body comes uncompressed, so faults can rewrite it.
            forwarded = {k: v for k, v in headers.items() if k.lower() not in ("host", "accept-encoding")}
            connection.request(method, path, headers=forwarded)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, *, status: int, headers: list[tuple[str, str]], body: bytes,
                faults: HttpFaults) -> None:
        handler.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                handler.send_header(name, value)
        length = dict((name.lower(), value) for name, value in headers).get("content-length", "0")
        handler.send_header("Content-Length", length if handler.command == "HEAD" else str(len(body)))
        handler.end_headers()
        if faults.cut_after_bytes is not None and len(body) > faults.cut_after_bytes:
            handler.wfile.write(body[:faults.cut_after_bytes])
            handler.wfile.flush()
            handler.close_connection = True
            return
        if not faults.trickle_seconds:
            handler.wfile.write(body)
            return
        for offset in range(len(body)):
            handler.wfile.write(body[offset:offset + 1])
            handler.wfile.flush()
            if faults.released.wait(faults.trickle_seconds):
                handler.wfile.write(body[offset + 1:])
                return

    @contextmanager
    def running(self) -> Iterator[HttpFaultProxy]:
        thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.faults.released.set()
            self._httpd.shutdown()
            self._httpd.server_close()


class TcpFaultProxy:
    """A TCP proxy to `upstream` (TLS passes through untouched) on a fixed port of `host` that can be `stopped`
    (connections refused, open ones cut: a stopped server), `hung` (connections accepted, nothing
    forwarded: a frozen server) and resumed on the same port."""

    def __init__(self, upstream: tuple[str, int], *, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.hung = False
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self.port = self._listen(0)

    def _listen(self, port: int) -> int:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener.getsockname()[1]

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for connection in self._connections:
                _close(connection)
            self._connections.clear()

    def resume(self) -> None:
        self.hung = False
        if self._listener is None:
            self._listen(self.port)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: stopped
            with self._lock:
                self._connections.append(client)
            if not self.hung:
                threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _close(client)
            return
        with self._lock:
            self._connections.append(server)
        sockets = [client, server]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 1.0)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (server if source is client else client).sendall(data)
        except (OSError, ValueError):
            return  # cut by stop(), or the peer went away
        finally:
            _close(client)
            _close(server)


def _close(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or never connected
    connection.close()
