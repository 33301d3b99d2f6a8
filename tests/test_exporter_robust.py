"""The exporter never blocks (issue 14.3), as real processes: a real exporter serving a real
Prometheus while clients stall with half a request, FIFOs sit among the report files (present
at start and created later), and SIGTERM ends it within a second."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from soakcore.services import Service, free_port, http_get_json, start_prometheus, wait_http_ok
from tests.test_exporter_ingest import doc

ROOT = Path(__file__).resolve().parent.parent
STALLED = 20          # connections holding half a request open for the whole test
TIMEOUT_S = 2.0       # --connection-timeout-secs of the exporter under test


def report(folder: Path, epoch: int, height: int) -> None:
    path = folder / f"epoch-{epoch}.json"
    path.write_text(json.dumps(doc(epoch, height, at_ms=int(time.time() * 1000))))


def scrape(target: str, timeout: float = 5.0) -> tuple[float, str]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=timeout) as resp:
        body = resp.read().decode()
    return time.perf_counter() - started, body


def sample(body: str, prefix: str) -> float | None:
    for line in body.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    folder = tmp_path / "report"
    folder.mkdir()
    report(folder, 0, 10)
    os.mkfifo(folder / "epoch-1.json")  # present at start: the old exporter never served at all
    target = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "exporter", "--listen", target, "--run-id", "live", "--topology", "t",
            "--node", f"n={folder}", "--report-settle-secs", "0", "--connection-timeout-secs", str(TIMEOUT_S)]
    with open(tmp_path / "exporter.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http_ok(f"http://{target}/metrics", 20, proc)
        yield proc, target, folder
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def prometheus(tmp_path: Path, exporter: tuple[subprocess.Popen[bytes], str, Path]) -> Iterator[Service]:
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                                             "evaluation_interval": "1s"},
                                  "scrape_configs": [{"job_name": "soak-exporter",
                                                      "static_configs": [{"targets": [exporter[1]]}]}]}))
    service = start_prometheus(config, tmp_path / "prom" / "data")
    try:
        yield service
    finally:
        service.stop()


def query(prom: Service, expr: str) -> list[float]:
    doc_ = http_get_json(f"{prom.url}/api/v1/query?query={urllib.parse.quote(expr)}")
    return [float(r["value"][1]) for r in doc_["data"]["result"]]


def wait_query(prom: Service, expr: str, timeout: float = 20) -> list[float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = query(prom, expr)
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{expr}: no result after {timeout}s")


def test_stalled_clients_and_fifos_never_block_a_real_prometheus_scrape_and_sigterm_ends_it_at_once(
        exporter: tuple[subprocess.Popen[bytes], str, Path], prometheus: Service) -> None:
    proc, target, folder = exporter
    host, port = target.rsplit(":", 1)
    stalled = []
    for _ in range(STALLED):  # half a request each: a request line, no end of headers
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        stalled.append(s)
    latencies = [scrape(target)[0] for _ in range(5)]
    print(f"\nscrape latency with {STALLED} stalled clients: max {max(latencies) * 1000:.1f} ms")
    assert max(latencies) < 1.0, latencies
    _, body = scrape(target)
    assert sample(body, 'soak_report_errors_total{node="n",reason="io"') == 1  # the FIFO, counted once
    assert sample(body, 'soak_reports_total{node="n"') == 1
    # Prometheus scrapes through all of it; a FIFO created later and a report after it.
    wait_query(prometheus, 'up{job="soak-exporter"} == 1')
    os.mkfifo(folder / "epoch-2.json")
    report(folder, 3, 13)
    wait_query(prometheus, 'soak_report_last_epoch_index{node="n"} == 3')
    time.sleep(2.5)  # a few more scrapes: the FIFOs are never counted again
    assert query(prometheus, 'soak_report_errors_total{node="n",reason="io"}') == [2.0]
    assert query(prometheus, 'soak_reports_total{node="n"}') == [2.0]
    assert query(prometheus, 'min_over_time(up{job="soak-exporter"}[1m])') == [1.0]
    assert query(prometheus, 'max_over_time(soak_exporter_scrape_error[1m])') == [0.0]
    worst = query(prometheus, 'max_over_time(scrape_duration_seconds{job="soak-exporter"}[1m])')[0]
    print(f"Prometheus scrape_duration_seconds, worst over the test: {worst * 1000:.1f} ms")
    assert worst < 0.5
    # The per-connection timeout frees a stalled connection's thread: the server hangs up.
    late = socket.create_connection((host, int(port)), timeout=10)
    late.sendall(b"GET /metr")
    t0 = time.monotonic()
    assert late.recv(100) == b""
    assert TIMEOUT_S - 0.5 <= time.monotonic() - t0 <= TIMEOUT_S + 2
    late.close()
    # SIGTERM while clients still hold connections (their requests half sent): gone within a second.
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    took = time.monotonic() - t0
    print(f"SIGTERM to exit with {STALLED} stalled connections open: {took * 1000:.0f} ms")
    assert took < 1.0 and proc.returncode == 0
    for s in stalled:
        s.close()


def test_sigterm_during_the_initial_catch_up_ends_the_exporter_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "report"
    folder.mkdir()
    for i in range(50):
        os.mkfifo(folder / f"epoch-{i}.json")
    target = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "--listen", target, "--node", f"n={folder}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http_ok(f"http://{target}/metrics", 20, proc)
        assert sample(scrape(target)[1], 'soak_report_errors_total{node="n",reason="io"') == 50
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert time.monotonic() - t0 < 1.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("flag", ["--connection-timeout-secs", "--report-settle-secs", "--status-interval-secs"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_non_finite_or_negative_durations_are_usage_errors(flag: str, value: str) -> None:
    done = subprocess.run([sys.executable, "-m", "exporter", flag, value], capture_output=True, text=True,
                          timeout=30, cwd=ROOT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and flag in lines[0], done.stderr
