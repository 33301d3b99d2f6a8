"""The runner survives its own faults (issue 14): busy ports, a SIGKILLed runner, a dead run's
leftovers, a Prometheus that stops answering, a crash during the final drain, its own
nftables tables. Real processes throughout (runner, nodes, Prometheus, nft as root)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import ROOT
from runner import netcut, ports, reaper
from runner.chaos import ChaosLog
from runner.cli import build_parser, resolve
from runner.progress import BLIND_POLLS, Progress
from runner.soak import Topology, _finish, _own_tables_gone
from runner.stack import Stack
from simulator.testing import port_block
from soakcore.services import free_port, start_prometheus

PORT = port_block(700, 12500, 15999)  # claimed for this test process: no other test uses it
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
FAST = ["--epoch-secs", "2", "--tick-ms", "100", "--poll-interval-secs", "1"]
needs_nft = pytest.mark.skipif(netcut.available() is not None, reason="needs root and nft")


def _runner(out: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "runner", "--out-dir", str(out), *FAST, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT, **kw)


def _owned(pid: int) -> list[psutil.Process]:
    return [p for owner, procs in reaper.marked().items() if owner.pid == pid for p in procs]


def _tables(pid: int) -> list[str]:
    return [t for t in netcut.list_tables() if netcut.owner_of(t) == pid]


def _live(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


@needs_nft
def test_a_sigkilled_runner_leaves_no_process_no_pause_no_cut_and_a_second_run_is_refused(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"events": [
        {"id": "p", "at_sec": 0.2, "topology": "all", "node": "storage", "action": "pause", "duration_secs": 60},
        {"id": "c", "at_sec": 0.2, "topology": "all", "node": "observer", "action": "disconnect",
         "duration_secs": 60}]}))
    first = _runner(tmp_path / "a", "--topology", "triad_distributed", "--duration-secs", "60", "--no-prewarm",
                    "--base-port", str(PORT), "--chaos-plan", str(plan))
    try:
        log = lambda: next((tmp_path / "a").glob("*/chaos_events.log"), None)  # noqa: E731
        if not _wait(lambda: log() is not None and log().read_text().count("|start|") == 2, 120):
            first.kill()
            raise AssertionError(f"the faults did not start: {first.communicate()[1][-2000:]}")
        paused = [p for p in _owned(first.pid) if p.status() == psutil.STATUS_STOPPED]
        assert _wait(lambda: _tables(first.pid), 5) and paused, "the pause and the cut must be in effect"

        # A second run on the same ports is refused before it creates or starts anything.
        second = _runner(tmp_path / "b", "--topology", "triad_distributed", "--base-port", str(PORT))
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2, err
        assert f"port {PORT + 10} (triad_distributed/sequencer node) is reserved by another soak-run " \
               f"(soak-run pid {first.pid}" in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "b").exists()

        started = _owned(first.pid)
        assert len(started) >= 6, started  # reaper, Alertmanager, Prometheus, exporter, three nodes
        first.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        assert _wait(lambda: not _owned(first.pid) and not _tables(first.pid), 15), \
            f"left: {_owned(first.pid)} {_tables(first.pid)}"
        took = time.monotonic() - t0
    finally:
        first.kill()
        first.communicate()
    print(f"SIGKILL during pause+cut: {len(started)} processes of the run, 0 left, no table, after {took:.1f}s")
    assert took < 10
    run_dir = next((tmp_path / "a").iterdir())
    assert "runner " + str(first.pid) + " gone" in (run_dir / "reaper.log").read_text()
    for p in psutil.process_iter(["cmdline", "cwd", "status"]):
        text = " ".join(p.info["cmdline"] or []) + " " + (p.info["cwd"] or "")
        assert str(run_dir) not in text or p.info["status"] == psutil.STATUS_ZOMBIE, text
    assert not netcut.probe_blocked("127.0.0.1", PORT + 12), "the observer's port is still cut"


@needs_nft
def test_the_next_run_ends_what_a_dead_run_left_and_says_what(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = reaper.Owner(gone.pid, 12345.0, str(tmp_path / "dead-run"))  # a runner that no longer exists
    leftover = subprocess.Popen(["sleep", "300"], env={**ENV, reaper.ENV: dead.marker}, start_new_session=True)
    leftover.send_signal(signal.SIGSTOP)
    # A node that started a helper with a cleared environment: found through the node's session.
    node = subprocess.Popen(["sh", "-c", "env -i sleep 301 & echo $!; wait"], env={**ENV, reaper.ENV: dead.marker},
                            start_new_session=True, stdout=subprocess.PIPE, text=True)
    assert node.stdout is not None
    helper = psutil.Process(int(node.stdout.readline()))
    table = netcut.cut(netcut.table_tag(gone.pid, 0, "leftover"), (PORT + 90,))
    bystander = subprocess.Popen(["sleep", "300"], env={**ENV, reaper.ENV: reaper.Owner.me(tmp_path).marker})
    held = socket.socket()
    try:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        # The run cleans up first, then finds its exporter port taken and stops there (exit 2).
        res = _runner(tmp_path / "out", "--topology", "triad", "--base-port", str(PORT + 100),
                      "--exporter-port", str(busy))
        _, err = res.communicate(timeout=60)
        assert leftover.wait(10) is not None, "the dead run's paused process must be ended"
        assert node.wait(10) is not None and _wait(lambda: not _live(helper), 5), "and the node's helper without marker"
        assert f"cleaned up after a dead run: run {dead.run_dir} (runner pid {gone.pid}, gone): ended pid " \
               f"{leftover.pid} (sleep)" in err, err
        assert f"deleted nftables table {table} (its runner is gone)" in err and table not in netcut.list_tables()
        assert res.returncode == 2 and f"port {busy}/tcp (exporter) is in use by pid " \
               f"{os.getpid()} ({psutil.Process().name()}); stop it or choose another --exporter-port" in err, err
        assert bystander.poll() is None, "a process of a live runner is never touched"
    finally:
        held.close()
        for p in (leftover, bystander, node):
            p.kill()
            p.wait()
        netcut.heal(table)


def test_a_node_port_held_by_another_program_is_exit_2_naming_port_and_process(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import socket, time; s = socket.socket(socket.AF_INET, "
                               f"socket.SOCK_DGRAM); s.bind(('127.0.0.1', {PORT + 201})); print(1, flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "1"
        res = _runner(tmp_path / "out", "--topology", "triad", "--base-port", str(PORT + 200))
        _, err = res.communicate(timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 2, err
    assert err.strip() == (f"soak-run: error: port {PORT + 201}/udp (triad/triad node) is in use by pid "
                           f"{holder.pid} (python3); stop it or choose another --base-port"), err
    assert not (tmp_path / "out").exists()


def test_progress_says_when_prometheus_stops_answering_and_notes_a_blind_abort_on_fail(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = resolve(build_parser().parse_args(["--out-dir", str(tmp_path), "--topology", "triad",
                                             "--poll-interval-secs", "0.2", "--abort-on-fail"]))
    stack = Stack(tmp_path, 0.2, prometheus_url=f"http://127.0.0.1:{free_port()}")  # nobody listens
    notes: list[str] = []
    progress = Progress(cfg, "triad", stack, time.time(), notes)
    assert progress.update({}, set()) == []
    err = capsys.readouterr().err
    assert "soak-run: triad: cannot query Prometheus (GET http://127.0.0.1:" in err
    assert "alerts: UNKNOWN (Prometheus not answering)" in err and "alerts firing: none" not in err
    progress.update({}, set())
    assert "cannot query" not in capsys.readouterr().err, "said once per change, not every poll"
    time.sleep(BLIND_POLLS * 0.2 + 0.1)
    progress.update({}, set())
    assert len(notes) == 1 and "--abort-on-fail could not act" in notes[0], notes

    config = tmp_path / "prom" / "prometheus.yml"
    config.parent.mkdir()
    config.write_text("global: {scrape_interval: 1s}\n")
    with start_prometheus(config, tmp_path / "prom" / "data") as prom:
        stack.prometheus_url = prom.url
        progress.update({}, set())
    err = capsys.readouterr().err
    assert "soak-run: triad: Prometheus answers again after" in err and "alerts firing: none" in err
    assert len(notes) == 2 and "Prometheus answered again" in notes[1]


def test_a_crash_during_the_final_drain_is_a_crash(tmp_path: Path) -> None:
    cfg = resolve(build_parser().parse_args([
        "--out-dir", str(tmp_path), "--topology", "triad", "--base-port", str(PORT + 300), "--epoch-secs", "1",
        "--tick-ms", "100", "--poll-interval-secs", "1", "--on-crash", "leave",
        "--node-arg", "triad=--fault-crash-at-sec=0.6"]))
    cfg.run_dir.mkdir(parents=True)
    topo = Topology(cfg, 0, "triad", ChaosLog(cfg.run_dir / "chaos_events.log"))
    node = topo.nodes["triad"]
    node.start()
    stop = threading.Event()
    # The drain lasts the longest gate 'for'; this test ends it 0.5 s after the node died in it.
    watcher = threading.Thread(target=lambda: (_wait(lambda: node.proc.poll() is not None, 30),  # type: ignore
                                               time.sleep(0.5), stop.set()))
    watcher.start()
    try:
        ended, horizon = _finish(cfg, topo, stop)  # the window is over; the node dies while draining
    finally:
        node.stop()
        stop.set()
        watcher.join()
    assert node.proc is not None and node.proc.returncode == 3, "the simulator's crash code, not a stop"
    assert node.restarts["crash"] == 1 and any(n.startswith("triad crashed with exit code 3") for n in topo.notes), \
        topo.notes
    assert ended < node.first_started_at + 0.6 < horizon  # type: ignore[operator]
    state = json.loads(topo.state_path.read_text())
    assert state["nodes"][0]["restarts"]["crash"] == 1, "published for the last scrape"


@needs_nft
def test_a_table_of_the_run_still_there_at_the_end_is_deleted_and_noted() -> None:
    table = netcut.cut(netcut.table_tag(os.getpid(), 9, "left"), (PORT + 95,))
    try:
        notes = _own_tables_gone()
    finally:
        netcut.heal(table)
    assert notes == [f"nftables table {table} of this run was still in place at the end (deleted then)"]
    assert table not in netcut.list_tables()


def test_a_port_lock_still_held_for_a_dead_runner_is_waited_for_while_its_reaper_cleans_up() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    port = PORT + 400
    ports.LOCK_DIR.mkdir(parents=True, exist_ok=True)
    # A stand-in reaper: holds the lock of a runner that is gone for one more second, then exits.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(ports.LOCK_DIR / f'{port}.lock')!r}, os.O_RDWR | os.O_CREAT, 0o666)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        f"os.ftruncate(fd, 0); os.pwrite(fd, b'soak-run pid {gone.pid}, run /x', 0)\n"
        "print(1, flush=True); time.sleep(1)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "1"
    use = ports.PortUse(port, "udp", "127.0.0.1", "test node")
    started = time.monotonic()
    lease = ports.reserve([use], "test")
    lease.release()
    holder.wait()
    assert 0.5 < time.monotonic() - started < ports.REAPER_WAIT_S
