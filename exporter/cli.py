"""``soak-exporter`` command line."""
from __future__ import annotations

import argparse
import logging
import math
import signal
import socket
import socketserver
import threading
import time
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import zlib
from typing import Any, Callable, Iterable

from exporter import expo
from exporter.collector import HTTP_SCHEMES, Setup, SoakCollector, Source
from soakcore.errors import UsageError, run_cli
from soakcore.ids import validate_name


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in values:
        name, sep, value = raw.partition("=")
        if not sep or not value:
            raise UsageError(f"{flag} {raw!r}: expected NAME=VALUE")
        out[validate_name("node", name)] = value
    return out


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT")
    return host or "127.0.0.1", int(port)


def build_setup(a: argparse.Namespace) -> Setup:
    from alerts.profiles import get_profile
    reports, status, pids = _pairs(a.node, "--node"), _pairs(a.status, "--status"), _pairs(a.pid, "--pid")
    for node, path in reports.items():
        if not Path(path).is_dir():
            raise UsageError(f"--node {node}={path}: not a directory")
    for node, url in status.items():
        if not url.startswith(HTTP_SCHEMES):
            raise UsageError(f"--status {node}={url}: expected an http:// or https:// URL")
    if not 0 < a.status_interval_secs < math.inf:
        raise UsageError(f"--status-interval-secs {a.status_interval_secs}: must be positive")
    names = list(dict.fromkeys([*reports, *status, *pids]))
    thresholds = dict(get_profile(a.profile).thresholds) if a.profile else {}
    return Setup(run_id=validate_name("run id", a.run_id), topology=validate_name("topology", a.topology),
                 profile=a.profile or "none", thresholds=thresholds,
                 sources=tuple(Source(n, report_dir=reports.get(n), work_dir=reports.get(n), pid=pids.get(n),
                                      status_url=status.get(n))
                               for n in names))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="soak-exporter", description="Agent World soak metrics for Prometheus.")
    p.add_argument("--listen", default="127.0.0.1:9465", help="HOST:PORT to serve /metrics on")
    p.add_argument("--node", action="append", default=[], metavar="NAME=REPORT_DIR")
    p.add_argument("--status", action="append", default=[], metavar="NAME=URL", help="G2 /v1/chain/status URL")
    p.add_argument("--pid", action="append", default=[], metavar="NAME=PID_OR_PIDFILE")
    p.add_argument("--run-state", type=Path, help="the runner's run-state file (replaces the node flags)")
    p.add_argument("--run-id", default="adhoc")
    p.add_argument("--topology", default="unknown")
    p.add_argument("--profile", help="thresholds to export when the run-state has none")
    p.add_argument("--status-interval-secs", type=float, default=2.0)
    p.add_argument("--report-settle-secs", type=float, default=3.0,
                   help="an invalid report unchanged this long is counted as an error (a slow writer needs more)")
    p.add_argument("--connection-timeout-secs", type=float, default=CONNECTION_TIMEOUT_S,
                   help="drop a connection that sends nothing for this long (others are served meanwhile)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), type=str.upper)
    return p


# A connection that sends nothing (or half a request) for this long is dropped. Every
# connection has its own thread, so a stalled client never delays a scrape; the timeout
# only frees its thread. A scrape that takes longer than Prometheus's own timeout (10 s
# default) is useless anyway.
CONNECTION_TIMEOUT_S = 10.0
# At most this many connections are served at once; more are closed at once (a client
# opening thousands of stalled connections cannot exhaust threads or memory).
MAX_CONNECTIONS = 256


class _Handler(WSGIRequestHandler):
    timeout = CONNECTION_TIMEOUT_S  # StreamRequestHandler sets it on the socket

    def log_message(self, *args: object) -> None:
        return


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """A thread per connection (daemon: SIGTERM never waits for a stalled client), capped."""

    daemon_threads = True
    block_on_close = False
    # The listen backlog (socketserver's default is 5): a burst of connections while a scrape
    # holds the interpreter would otherwise see SYNs dropped and a 1 s retransmit.
    request_queue_size = 128

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that timed out or hung up is routine, not a traceback on stderr.
        logging.debug("connection from %s ended with an error", client_address, exc_info=True)


# gzip at level 1: a tenth of the time of level 9 on exposition text, and about 10x smaller
# than the text still (the label sets repeat).
GZIP_LEVEL = 1


def metrics_app(collector: SoakCollector) -> Callable[..., Iterable[bytes]]:
    """The WSGI app: every path but /favicon.ico is the exposition, text 0.0.4 or OpenMetrics
    1.0 as the Accept header prefers, gzip when accepted."""
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/favicon.ico":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b""]
        openmetrics = expo.wants_openmetrics(environ.get("HTTP_ACCEPT", ""))
        body = collector.render(openmetrics)
        headers = [("Content-Type", expo.CONTENT_TYPE_OPENMETRICS if openmetrics else expo.CONTENT_TYPE_TEXT)]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
            body = z.compress(body) + z.flush()
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body]
    return app


def _serve(collector: SoakCollector, listen: str, connection_timeout_s: float = CONNECTION_TIMEOUT_S) -> None:
    """Serve /metrics until SIGTERM or SIGINT (within a second)."""
    host, port = _listen(listen)
    handler = type("Handler", (_Handler,), {"timeout": connection_timeout_s})
    try:
        server = make_server(host, port, metrics_app(collector), server_class=_Server, handler_class=handler)
    except OSError as exc:
        raise UsageError(f"--listen {listen}: {exc.strerror}") from exc
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    logging.info("serving http://%s:%d/metrics", host, server.server_port)
    stop.wait()
    server.shutdown()
    server.server_close()


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        a = _parser().parse_args(argv)
        _listen(a.listen)  # a bad flag fails before anything starts
        if not 0 <= a.report_settle_secs < math.inf:
            raise UsageError(f"--report-settle-secs {a.report_settle_secs}: must not be negative")
        if not 0 < a.connection_timeout_secs < math.inf:
            raise UsageError(f"--connection-timeout-secs {a.connection_timeout_secs}: must be positive")
        logging.basicConfig(level=a.log_level, format="%(asctime)s soak-exporter %(levelname)s %(message)s")
        collector = SoakCollector(build_setup(a), a.run_state, a.status_interval_secs, a.report_settle_secs)
        # Catch up on the history before serving, so no scrape (and its timeout) pays for it.
        started = time.monotonic()
        collector.ingest()
        logging.info("ingested existing reports in %.1fs", time.monotonic() - started)
        collector.start_status_poller()
        try:
            _serve(collector, a.listen, a.connection_timeout_secs)
        finally:
            collector.stop()
        return 0
    run_cli("soak-exporter", body)
