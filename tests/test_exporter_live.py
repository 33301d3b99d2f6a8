"""The exporter as a real process: its command line, and a real Prometheus scraping it while
it watches running simulator nodes."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Iterator

import pytest

from alerts.profiles import get_profile
from exporter.reports import ReportError, parse_report
from soakcore.services import Service, free_port, http_get_json, start_prometheus, wait_http_ok

ROLES = ("sequencer", "storage", "observer")
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv, says", [
    (["--node", "../evil=/tmp"], "invalid node"),
    (["--node", "n"], "expected NAME=VALUE"),
    (["--node", "n=/does/not/exist"], "not a directory"),
    (["--listen", "localhost"], "expected HOST:PORT"),
    (["--profile", "soak_nope"], "unknown profile"),
    (["--run-id", "a/b"], "invalid run id"),
    (["--status", "n=file:///etc/passwd"], "expected an http:// or https:// URL"),
    (["--status-interval-secs", "0"], "must be positive"),
])
def test_bad_flags_exit_2_with_one_line_naming_the_problem(argv: list[str], says: str) -> None:
    done = subprocess.run([sys.executable, "-m", "exporter", *argv], capture_output=True, text=True, timeout=30,
                          cwd=ROOT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and says in lines[0], done.stderr


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def triad(tmp_path: Path) -> Iterator[dict[str, tuple[subprocess.Popen[bytes], Path]]]:
    """Three simulator processes (triad_distributed), each with its own work and report dir."""
    gossip = {role: free_port() for role in ROLES}
    peers = [a for role in ROLES for a in (f"--triad-{role}-gossip", f"127.0.0.1:{gossip[role]}")]
    nodes: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        for role in ROLES:
            work, report = tmp_path / role / "work", tmp_path / role / "report"
            work.mkdir(parents=True)
            report.mkdir()
            extra = ["--fault-distfs-fail-ratio", "0.3"] if role == "storage" else []
            argv = [sys.executable, "-m", "simulator", "triad_p2p_bootstrap", "--topology", "triad_distributed",
                    "--no-llm", "--node-role", role, "--node-id", "live", "--reward-runtime-enable",
                    "--reward-runtime-report-dir", str(report), "--reward-runtime-epoch-duration-secs", "1",
                    "--node-tick-ms", "100", "--bind", f"127.0.0.1:{gossip[role]}", *peers, *extra]
            log = open(tmp_path / f"{role}.log", "wb")
            nodes[role] = (subprocess.Popen(argv, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}), report)
            log.close()
        yield nodes
    finally:
        for proc, _ in nodes.values():
            _stop(proc)


class Exporter:
    """The exporter as a process on a fixed port, restartable mid-run."""

    def __init__(self, tmp_path: Path, triad: dict) -> None:
        self.target = f"127.0.0.1:{free_port()}"
        self.argv = [sys.executable, "-m", "exporter", "--listen", self.target, "--run-id", "live",
                     "--topology", "triad_distributed", "--profile", "soak_smoke"]
        for role, (proc, report) in triad.items():
            self.argv += ["--node", f"{role}={report}", "--pid", f"{role}={proc.pid}"]
        self.log_path = tmp_path / "exporter.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_http_ok(f"http://{self.target}/metrics", 20, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


@pytest.fixture
def exporter_proc(tmp_path: Path, triad: dict) -> Iterator[Exporter]:
    exporter = Exporter(tmp_path, triad)
    try:
        exporter.start()
        yield exporter
    finally:
        exporter.stop()


@pytest.fixture
def prometheus(tmp_path: Path, exporter_proc: Exporter) -> Iterator[Service]:
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                  "scrape_configs": [{"job_name": "soak-exporter",
                                                      "static_configs": [{"targets": [exporter_proc.target]}]}]}))
    service = start_prometheus(config, tmp_path / "prom" / "data")
    try:
        yield service
    finally:
        service.stop()


def query(prom: Service, expr: str) -> dict[str, float]:
    doc = http_get_json(f"{prom.url}/api/v1/query?query={urllib.parse.quote(expr)}")
    return {r["metric"].get("node", ""): float(r["value"][1]) for r in doc["data"]["result"]}


def wait_for(prom: Service, expr: str, want: int, timeout: float = 30) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = query(prom, expr)
        if len(got) >= want:
            return got
        time.sleep(0.5)
    raise AssertionError(f"{expr}: fewer than {want} series after {timeout}s: {got}")


def newest_reports(report: Path) -> tuple[int, object]:
    parsed = []
    for path in report.glob("epoch-*.json"):
        try:
            parsed.append(parse_report(path.read_bytes()))
        except ReportError:
            continue
    return len(parsed), max(parsed, key=lambda r: r.epoch_index)


def test_prometheus_scraping_the_exporter_sees_exactly_what_the_simulators_reported(
        triad: dict, exporter_proc: Exporter, prometheus: Service) -> None:
    up = wait_for(prometheus, 'soak_process_up{job="soak-exporter",run_id="live"} == 1', 3)
    assert set(up) == set(ROLES)
    wait_for(prometheus, "soak_report_last_epoch_index >= 2", 3)
    exporter_proc.stop()  # restarted mid-run: every counter must continue, none may reset
    time.sleep(1.5)
    exporter_proc.start()
    wait_for(prometheus, "soak_report_last_epoch_index >= 4", 3)
    assert query(prometheus, 'soak_gate_threshold{gate="max_stall_secs"}') == {"": 300.0}
    assert query(prometheus, "count(soak_gate_threshold)") == {"": len(get_profile("soak_smoke").thresholds)}
    for proc, _ in triad.values():
        _stop(proc)
    wait_for(prometheus, "soak_process_up == 0", 3)
    time.sleep(3)  # two more scrapes: the last report files are in
    for role, (_, report) in triad.items():
        count, newest = newest_reports(report)
        sel = f'{{node="{role}",topology="triad_distributed"}}'
        assert query(prometheus, f"soak_reports_total{sel}") == {role: count}
        assert query(prometheus, f"soak_report_last_epoch_index{sel}") == {role: newest.epoch_index}
        assert query(prometheus, f"soak_consensus_committed_height{sel}") == {role: newest.committed_height}
    resets = query(prometheus, 'sum(resets({__name__=~"soak_(reports|distfs_checks|report_errors)_total"}[5m]))')
    assert resets == {"": 0.0}
    # A healthy triad: no false fork, no false regression.
    assert query(prometheus, "soak_consensus_hash_mismatches_total") == {"": 0.0}
    assert query(prometheus, "sum(soak_consensus_height_regressions_total)") == {"": 0.0}
    _, storage = newest_reports(triad["storage"][1])
    assert storage.distfs_failed > 0
    assert query(prometheus, 'soak_distfs_checks_total{node="storage",result="failed"}') == {
        "storage": storage.distfs_failed}
    assert query(prometheus, 'soak_distfs_checks_total{node="storage",result="passed"}') == {
        "storage": storage.distfs_passed}
