"""The simulator's TCP side: a JSON HTTP server (status endpoints), a held listener (G1's
viewer on ``--bind``, replication listeners) and replication links that really dial their
peers, so a network cut or a closed listener shows up as disconnected peers."""
from __future__ import annotations

import collections
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from soakcore.errors import SoakError

Addr = tuple[str, int]
Routes = dict[str, Callable[[], Any]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: Addr, handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler)


def serve_http(addr: Addr, routes: Routes, not_found: dict[str, Any], failure: str) -> ThreadingHTTPServer:
    """GET/HEAD ``routes`` as JSON; other paths 404 ``not_found``, other methods 405 (like the
    G2 node's status server). ``failure`` is the message prefix when the port cannot be bound."""
    class Handler(BaseHTTPRequestHandler):
        timeout = 2   # the real server's read timeout per request

        def _answer(self, with_body: bool) -> None:
            route = routes.get(self.path.split("?")[0])
            code, doc = (200, route()) if route else (404, not_found)
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(False)

        def _refuse(self) -> None:
            body = b'{"error":"method not allowed"}'
            self.send_response(405)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

        def log_message(self, *args: object) -> None:
            return

    try:
        server = _Server(addr, Handler)
    except OSError as exc:
        raise SoakError(f"{failure} {addr[0]}:{addr[1]}: {exc.strerror or exc}") from exc
    threading.Thread(target=server.serve_forever, name="status-http", daemon=True).start()
    return server


# What a replication round trip carries here: one fetch-commit request, one commit back.
FETCH_REQUEST = b"/aw/node/replication/fetch-commit/1.0.0 latest\n"
FETCH_RESPONSE = b"c" * 1024


@dataclass
class Traffic:
    """Messages (UDP datagrams, replication requests/responses) and their payload bytes, in
    and out, since this process started (G2 ``traffic``)."""

    in_count: int = 0
    in_bytes: int = 0
    out_count: int = 0
    out_bytes: int = 0


class Listener:
    """A TCP port that is really held: each connection is answered with ``FETCH_RESPONSE``
    when ``traffic`` is given (a replication listener), then closed."""

    def __init__(self, addr: Addr, failure: str, traffic: Traffic | None = None) -> None:
        self.traffic = traffic
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(addr)
            self.sock.listen(64)
        except OSError as exc:
            self.sock.close()
            raise SoakError(f"{failure} {addr[0]}:{addr[1]}: {exc.strerror or exc}") from exc
        self.addr: Addr = self.sock.getsockname()[:2]
        self.closed = False
        threading.Thread(target=self._serve, name=f"listen-{self.addr[1]}", daemon=True).start()

    def _serve(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.traffic is not None:
                try:
                    conn.settimeout(0.2)   # a probe that sends nothing holds the accept loop this long at most
                    request = conn.recv(256)
                    if request:
                        self.traffic.in_count += 1
                        self.traffic.in_bytes += len(request)
                    conn.sendall(FETCH_RESPONSE)
                    self.traffic.out_count += 1
                    self.traffic.out_bytes += len(FETCH_RESPONSE)
                except OSError:
                    pass
            conn.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


class ReplicationLinks:
    """Dials every peer's replication address once a second (TCP connect, 0.5 s timeout):
    ``connected`` holds the peers that answered on the last round, ``errors`` recent failures."""

    def __init__(self, peers: list[Addr], interval: float = 1.0, traffic: Traffic | None = None) -> None:
        self.peers = peers
        self.traffic = traffic or Traffic()
        self.interval = interval
        self.connected: set[Addr] = set()
        self.errors: collections.deque[str] = collections.deque(maxlen=16)
        self.error_at: dict[Addr, float] = {}
        self._stop = threading.Event()
        if peers:
            threading.Thread(target=self._run, name="replication-links", daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            up = set()
            for peer in self.peers:
                try:
                    with socket.create_connection(peer, timeout=0.5) as conn:
                        up.add(peer)
                        self._fetch(conn)
                except OSError as exc:
                    self.errors.append(f"dial /ip4/{peer[0]}/tcp/{peer[1]}: {exc.strerror or exc}")
                    self.error_at[peer] = time.monotonic()
            if not self._stop.is_set():   # down() may have cleared them meanwhile
                self.connected = up
            self._stop.wait(self.interval)

    def _fetch(self, conn: socket.socket) -> None:
        """One request and what comes back (a listener that does not answer: a request only)."""
        t = self.traffic
        conn.sendall(FETCH_REQUEST)
        t.out_count += 1
        t.out_bytes += len(FETCH_REQUEST)
        got = b""
        try:
            while len(got) < len(FETCH_RESPONSE):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        if got:
            t.in_count += 1
            t.in_bytes += len(got)

    def down(self) -> None:
        """The node's replication network is down: no dials, no connected peer, every peer failed."""
        if self._stop.is_set():
            return
        self._stop.set()
        now = time.monotonic()
        for peer in self.peers:
            self.errors.append(f"dial /ip4/{peer[0]}/tcp/{peer[1]}: replication network down")
            self.error_at[peer] = now
        self.connected = set()

    def recent_errors(self, window_s: float = 30.0) -> list[str]:
        """Failures are 'recent' while any dial failed in the last ``window_s``."""
        now = time.monotonic()
        return list(self.errors) if any(now - t < window_s for t in self.error_at.values()) else []

    def stop(self) -> None:
        self._stop.set()
