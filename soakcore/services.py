"""Real Prometheus and Alertmanager processes on 127.0.0.1, and the alert webhook.

Used by the runner (the run's own stack) and by the tests (never a mocked Prometheus).
Each process gets its own directory; nothing here is global state.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from soakcore.errors import EvaluationError, UsageError

LOCALHOST = "127.0.0.1"
PROMETHEUS_BIN = "prometheus"
PROMTOOL_BIN = "promtool"
ALERTMANAGER_BIN = "prometheus-alertmanager"  # Debian's name for alertmanager
AMTOOL_BIN = "amtool"


def find_binary(name: str) -> str:
    """Absolute path of ``name`` on PATH, or a UsageError telling how to install it."""
    path = shutil.which(name) or (name == ALERTMANAGER_BIN and shutil.which("alertmanager"))
    if not path:
        raise UsageError(f"{name} not found on PATH: apt-get install -y --no-install-recommends "
                         "prometheus prometheus-alertmanager")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def http_get_json(url: str, timeout: float = 5.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise EvaluationError(f"GET {url}: {exc}") from exc


def wait_http_ok(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EvaluationError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise EvaluationError(f"{url} not ready after {timeout:.0f}s")


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; idempotent."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Service:
    """A started server process; ``stop()`` is idempotent."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self, timeout: float = 10.0) -> None:
        terminate(self.proc, timeout)

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(name: str, argv: list[str], log_path: Path, url: str, ready_path: str,
           timeout: float) -> Service:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    # Own session: a Ctrl-C meant for the runner must not kill the stack before it judges.
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    service = Service(name, proc, url, log_path)
    try:
        wait_http_ok(url + ready_path, timeout, proc)
    except EvaluationError as exc:
        service.stop()
        tail = log_path.read_text(errors="replace")[-800:]
        raise EvaluationError(f"{name} did not start: {exc}; log tail: {tail}") from exc
    return service


def start_prometheus(config_file: Path, data_dir: Path, port: int | None = None,
                     timeout: float = 30.0, extra_args: tuple[str, ...] = ()) -> Service:
    """Start Prometheus with its TSDB in ``data_dir``; returns once /-/ready answers."""
    port = port or free_port()
    url = f"http://{LOCALHOST}:{port}"
    argv = [find_binary(PROMETHEUS_BIN), f"--config.file={config_file}",
            f"--storage.tsdb.path={data_dir}", f"--web.listen-address={LOCALHOST}:{port}",
            "--web.enable-lifecycle", "--web.enable-admin-api", *extra_args]
    return _spawn("prometheus", argv, data_dir.parent / "prometheus.log", url, "/-/ready", timeout)


def start_alertmanager(config_file: Path, data_dir: Path, port: int | None = None,
                       timeout: float = 30.0) -> Service:
    """Start Alertmanager (clustering off, so no fixed 9094 port); returns once ready."""
    port = port or free_port()
    url = f"http://{LOCALHOST}:{port}"
    argv = [find_binary(ALERTMANAGER_BIN), f"--config.file={config_file}",
            f"--storage.path={data_dir}", f"--web.listen-address={LOCALHOST}:{port}",
            "--cluster.listen-address="]
    return _spawn("alertmanager", argv, data_dir.parent / "alertmanager.log", url, "/-/ready", timeout)


class AlertWebhook:
    """An Alertmanager webhook receiver that appends every notification to ``alerts.log``.

    One JSON line per alert in each delivered notification, with the time it arrived, so
    a soak keeps a record of what people were told and when.
    """

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.log_path = log_path
        self._lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                webhook._record(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((LOCALHOST, port or 0), Handler)
        self.url = f"http://{LOCALHOST}:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _record(self, body: bytes) -> None:
        received = time.time()
        try:
            doc = json.loads(body)
            alerts = doc.get("alerts", []) if isinstance(doc, dict) else []
        except ValueError:
            alerts, doc = [], {"raw": body.decode(errors="replace")}
        lines = [json.dumps({"received_at": received, "status": a.get("status"),
                             "labels": a.get("labels", {}), "annotations": a.get("annotations", {}),
                             "startsAt": a.get("startsAt"), "endsAt": a.get("endsAt")},
                            sort_keys=True) for a in alerts] or [json.dumps({"received_at": received, "raw": doc})]
        with self._lock, open(self.log_path, "a") as fh:
            fh.write("\n".join(lines) + "\n")

    def start(self) -> "AlertWebhook":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "AlertWebhook":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_alerts_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
