"""``soak-exporter`` command line."""
from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

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
    if not a.status_interval_secs > 0:
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
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), type=str.upper)
    return p


def _serve(collector: SoakCollector, listen: str) -> None:
    """Serve /metrics until SIGTERM or SIGINT."""
    host, port = _listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            return

    try:
        server = make_server(host, port, make_wsgi_app(registry), handler_class=Quiet)
    except OSError as exc:
        raise UsageError(f"--listen {listen}: {exc.strerror}") from exc
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    logging.info("serving http://%s:%d/metrics", host, server.server_port)
    stop.wait()
    server.shutdown()


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        a = _parser().parse_args(argv)
        _listen(a.listen)  # a bad flag fails before anything starts
        if not a.report_settle_secs >= 0:
            raise UsageError(f"--report-settle-secs {a.report_settle_secs}: must not be negative")
        logging.basicConfig(level=a.log_level, format="%(asctime)s soak-exporter %(levelname)s %(message)s")
        collector = SoakCollector(build_setup(a), a.run_state, a.status_interval_secs, a.report_settle_secs)
        # Catch up on the history before serving, so no scrape (and its timeout) pays for it.
        started = time.monotonic()
        collector.ingest()
        logging.info("ingested existing reports in %.1fs", time.monotonic() - started)
        collector.start_status_poller()
        try:
            _serve(collector, a.listen)
        finally:
            collector.stop()
        return 0
    run_cli("soak-exporter", body)
