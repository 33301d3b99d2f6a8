"""Every chaos action takes effect on real simulator processes and is always healed; a node
that dies outside chaos is supervised as a crash, never counted as chaos."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest

from runner import netcut
from runner.chaos import PRESSURE_FILE, STORE_GLOB, ChaosLog
from runner.cli import build_parser, resolve
from runner.plan import ChaosEvent
from runner.soak import Topology
from simulator.testing import port_block

BASE_PORT = port_block(200, 10000, 10999)  # claimed for this test process: no other test uses it


def _topology(tmp: Path, name: str, index: int, *extra: str) -> Topology:
    args = build_parser().parse_args(["--topology", name, "--out-dir", str(tmp), "--base-port", str(BASE_PORT),
                                      "--tick-ms", "100", "--epoch-secs", "1", "--seed", "3", *extra])
    cfg = resolve(args)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    return Topology(cfg, index, name, ChaosLog(cfg.run_dir / "chaos_events.log"))


def _stop(topo: Topology) -> None:
    topo.chaos.heal_all()
    for node in topo.nodes.values():
        node.stop()
    netcut.heal_owned(os.getpid())   # the nodes' cgroups (a run does this at its end)


def _gone(pid: int) -> bool:
    """The process has exited (or is a zombie); it may vanish between two looks."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def _phases(topo: Topology, event_id: str) -> list[str]:
    lines = topo.chaos.log.path.read_text().splitlines()[1:]
    return [line.split("|")[3] for line in lines if line.split("|")[2] == event_id]


def _finished(topo: Topology, ev: ChaosEvent) -> bool:
    return any(p in ("completed", "failed", "skipped") for p in _phases(topo, ev.id))


def _cumulative_checks(report_dir: Path) -> int:
    reports = sorted(report_dir.glob("epoch-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    for path in reversed(reports):
        try:
            return int(json.loads(path.read_text())["distfs_probe_cursor_state"]["cumulative_total_checks"])
        except (ValueError, KeyError):
            continue  # the newest report may be mid-write (plain writes, like real nodes)
    return 0


def _nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def distributed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    topo = _topology(tmp_path_factory.mktemp("chaos"), "triad_distributed", 0)
    try:
        for node in topo.nodes.values():
            node.start()
        _until(lambda: all(any(n.spec.report_dir.glob("epoch-*.json")) for n in topo.nodes.values()), 30,
               "every node wrote a report")
        yield topo
    finally:
        _stop(topo)


def _run(topo: Topology, ev: ChaosEvent, during: Callable[[], None]) -> None:
    topo.chaos.launch(ev)
    _until(lambda: (ev.node, ev.action) in topo.chaos.active or _finished(topo, ev), 5, f"{ev.id} started")
    during()
    _until(lambda: _finished(topo, ev), 30, f"{ev.id} finished")
    assert _phases(topo, ev.id)[-1] == "completed", topo.chaos.log.path.read_text()
    assert (ev.node, ev.action) not in topo.chaos.active


@pytest.mark.parametrize("action", ["restart", "kill"])
def test_restart_and_kill_stop_the_process_then_relaunch_it_as_a_chaos_restart(distributed: Topology,
                                                                             action: str) -> None:
    node = distributed.nodes["sequencer"]
    old_pid, before = node.pid, dict(node.restarts)
    assert old_pid is not None

    def down() -> None:
        _until(lambda: _gone(old_pid), 10,
               "old process gone")
        assert node.pid is None

    _run(distributed, ChaosEvent(f"ev-{action}", 0, "all", "sequencer", action, down_secs=1.0), down)
    assert node.pid is not None and node.pid != old_pid
    assert node.restarts == {"chaos": before["chaos"] + 1, "crash": before["crash"]}
    expected_code = -9 if action == "kill" else 0
    assert f"exit={expected_code}" in distributed.chaos.log.path.read_text()
    assert distributed.supervise() and node.restarts["crash"] == 0, "chaos must never count as a crash"


def test_pause_stops_the_process_and_continues_it_afterwards(distributed: Topology) -> None:
    node = distributed.nodes["storage"]

    def stopped() -> None:
        _until(lambda: node.status() == "stopped", 3, "storage stopped")

    _run(distributed, ChaosEvent("ev-pause", 0, "all", "storage", "pause", duration_secs=2.0), stopped)
    assert node.status() in ("running", "sleeping")


def test_disconnect_cuts_the_nodes_udp_traffic_while_it_runs_and_heals_it(distributed: Topology) -> None:
    assert netcut.available() is None, "this machine's tests run as root with nft"
    node = distributed.nodes["observer"]
    port = node.spec.gossip_ports[0]
    assert not netcut.probe_blocked("127.0.0.1", port)

    def cut() -> None:
        _until(lambda: netcut.probe_blocked("127.0.0.1", port), 5, "udp to the observer refused")
        assert node.status() != "stopped", "disconnect is never a pause"
        assert "soak_" in _nft_tables()

    _run(distributed, ChaosEvent("ev-cut", 0, "all", "observer", "disconnect", duration_secs=3.0), cut)
    assert not netcut.probe_blocked("127.0.0.1", port)
    assert f"soak_{distributed.chaos.tag}" not in _nft_tables()


def _detail(topo: Topology, event_id: str) -> str:
    lines = topo.chaos.log.path.read_text().splitlines()[1:]
    return [line.split("|")[6] for line in lines if line.split("|")[2] == event_id][-1]


@pytest.mark.parametrize("direction", ["both", "from"])
def test_partition_cuts_only_the_links_to_its_peers_and_heals_them(distributed: Topology, direction: str) -> None:
    obs, sto, seq = (distributed.nodes[n].spec.gossip_ports[0] for n in ("observer", "storage", "sequencer"))
    cut = (obs, sto) if direction == "both" else (sto, obs)
    assert not netcut.probe_pair_blocked(*cut)

    def partitioned() -> None:
        _until(lambda: netcut.probe_pair_blocked(*cut), 5, "observer-storage link refused")
        assert not netcut.probe_pair_blocked(obs, seq) and not netcut.probe_pair_blocked(seq, sto)
        assert netcut.probe_pair_blocked(sto, obs) and netcut.probe_pair_blocked(obs, sto) is (direction == "both")

    ev = ChaosEvent(f"ev-part-{direction}", 0, "all", "observer", "partition", duration_secs=4.0,
                    params=(("peers", ("storage",)), ("direction", direction)))
    _run(distributed, ev, partitioned)
    assert f"udp {cut[0]} -> {cut[1]} refused ({direction}, peers storage); {obs} -> {seq} kept delivering" in \
        _detail(distributed, ev.id)
    assert not netcut.probe_pair_blocked(*cut)
    assert f"soak_{distributed.chaos.tag}" not in _nft_tables()


def test_loss_drops_about_percent_of_the_nodes_packets_and_heals(distributed: Topology) -> None:
    port = distributed.nodes["storage"].spec.gossip_ports[0]

    def lossy() -> None:
        _until(lambda: netcut.probe_loss(port, 400) > 0.05, 5, "storage's packets lost")

    ev = ChaosEvent("ev-loss", 0, "all", "storage", "loss", duration_secs=2.0, params=(("percent", 20),))
    _run(distributed, ev, lossy)
    measured = float(_detail(distributed, ev.id).split("measured ")[1].split("%")[0])
    assert 15 <= measured <= 25, _detail(distributed, ev.id)
    assert netcut.probe_loss(port, 400) == 0 and f"soak_{distributed.chaos.tag}" not in _nft_tables()


def test_bandwidth_limits_the_nodes_traffic_and_heals(distributed: Topology) -> None:
    port = distributed.nodes["observer"].spec.gossip_ports[0]
    ev = ChaosEvent("ev-bw", 0, "all", "observer", "bandwidth", duration_secs=1.0, params=(("rate_kbit", 800),))
    _run(distributed, ev, lambda: None)
    passed = float(_detail(distributed, ev.id).split("passed ")[1].split(" B/s")[0])
    assert 0.8 * 100_000 <= passed <= 1.2 * 100_000, _detail(distributed, ev.id)
    assert netcut.probe_rate(port, 100_000, 0.2) > 1_000_000 and f"soak_{distributed.chaos.tag}" not in _nft_tables()


def test_delay_holds_back_the_nodes_egress_while_it_runs_and_heals(distributed: Topology) -> None:
    port = distributed.nodes["storage"].spec.gossip_ports[0]

    def late() -> None:
        _until(lambda: min(netcut.probe_latency_ms(port, 3) or [0]) > 150, 10, "storage's egress late")

    ev = ChaosEvent("ev-delay", 0, "all", "storage", "delay", duration_secs=3.0,
                    params=(("delay_ms", 200), ("jitter_ms", 10)))
    _run(distributed, ev, late)
    detail = _detail(distributed, ev.id)
    assert "200 +/- 10 ms" in detail and "healed" in detail, detail
    assert abs(float(detail.split("probes rose ")[1].split(" ms")[0]) - 200) <= 35, detail
    assert statistics.median(netcut.probe_latency_ms(port, 10)) < 20 and f"soak_{distributed.chaos.tag}" not in _nft_tables()
    assert not [p for p in psutil.process_iter(["cmdline"]) if "runner.nfqueue" in " ".join(p.info["cmdline"] or [])
                and p.ppid() == psutil.Process().pid], "the delay reader is gone"


def test_a_delay_that_stays_after_its_heal_is_a_heal_error(distributed: Topology,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real_heal = netcut.heal
    monkeypatch.setattr(netcut, "heal", lambda table: None)   # nft says done, the table stays
    ev = ChaosEvent("ev-delay-stuck", 0, "all", "observer", "delay", duration_secs=1.0,
                    params=(("delay_ms", 100),))
    try:
        distributed.chaos.launch(ev)
        _until(lambda: _finished(distributed, ev), 20, "the delay event ended")
    finally:
        for table in netcut.list_tables():
            if table.startswith(f"soak_{distributed.chaos.tag}_"):
                assert real_heal(table) is None
    assert _phases(distributed, ev.id)[-1] == "failed"
    assert "not healed: probes from port" in _detail(distributed, ev.id)
    assert any("not healed" in e for e in distributed.chaos.heal_errors)
    distributed.chaos.heal_errors.clear()


def test_a_delay_whose_reader_dies_mid_fault_fails_the_event(distributed: Topology) -> None:
    ev = ChaosEvent("ev-delay-died", 0, "all", "sequencer", "delay", duration_secs=8.0, params=(("delay_ms", 100),))
    distributed.chaos.launch(ev)
    port = distributed.nodes["sequencer"].spec.gossip_ports[0]
    _until(lambda: min(netcut.probe_latency_ms(port, 3) or [0]) > 80, 10, "the sequencer's egress late")
    time.sleep(3)   # the engine's own probes are done: the fault is being held
    readers = [p for p in psutil.Process().children() if "runner.nfqueue" in " ".join(p.cmdline())]
    assert len(readers) == 1
    readers[0].kill()
    _until(lambda: _finished(distributed, ev), 20, "the delay event ended")
    assert _phases(distributed, ev.id)[-1] == "failed"
    assert "the delay reader exited during the fault (code -9)" in _detail(distributed, ev.id)


def test_challenge_pressure_makes_the_storage_node_answer_many_more_challenges(distributed: Topology) -> None:
    node = distributed.nodes["storage"]
    pressure_file = node.spec.work_dir / PRESSURE_FILE
    c0 = _cumulative_checks(node.spec.report_dir)
    time.sleep(4)
    baseline = _cumulative_checks(node.spec.report_dir) - c0
    counts: list[int] = []

    def pressed() -> None:
        _until(pressure_file.exists, 5, "the pressure file written")   # the window opens just before it
        assert json.loads(pressure_file.read_text())["until_unix_ms"] > time.time() * 1000
        counts.append(_cumulative_checks(node.spec.report_dir))
        time.sleep(4)
        counts.append(_cumulative_checks(node.spec.report_dir))

    _run(distributed, ChaosEvent("ev-pressure", 0, "all", "storage", "challenge_pressure", duration_secs=6.0),
         pressed)
    assert counts[1] - counts[0] > 3 * max(baseline, 1), (baseline, counts)
    assert not pressure_file.exists()


def test_an_interrupt_heals_every_fault_still_in_effect(tmp_path: Path) -> None:
    topo = _topology(tmp_path, "triad_distributed", 1)
    try:
        for node in topo.nodes.values():
            node.start()
        _until(lambda: all(n.status() in ("running", "sleeping") for n in topo.nodes.values()), 10, "nodes up")
        topo.chaos.launch(ChaosEvent("long-pause", 0, "all", "storage", "pause", duration_secs=120))
        topo.chaos.launch(ChaosEvent("long-cut", 0, "all", "observer", "disconnect", duration_secs=120))
        port = topo.nodes["observer"].spec.gossip_ports[0]
        _until(lambda: topo.nodes["storage"].status() == "stopped" and netcut.probe_blocked("127.0.0.1", port),
               10, "both faults in effect")
        started = time.monotonic()
        topo.chaos.heal_all()
        assert time.monotonic() - started < 10
        assert topo.nodes["storage"].status() != "stopped"
        assert not netcut.probe_blocked("127.0.0.1", port)
        assert not topo.chaos.active
    finally:
        _stop(topo)


def test_a_node_that_exits_outside_chaos_is_recorded_and_restarted_as_a_crash(tmp_path: Path) -> None:
    topo = _topology(tmp_path, "triad", 2, "--node-arg", "triad=--fault-crash-at-sec=1",
                     "--node-arg", "triad=--fault-crash-code=7")
    node = topo.nodes["triad"]
    try:
        node.start()
        first_pid = node.pid
        _until(lambda: node.exited_unexpectedly() is not None, 15, "simulated crash")
        assert topo.supervise(), "policy restart keeps the topology running"
        assert node.restarts == {"chaos": 0, "crash": 1}
        assert any("exit code 7" in note for note in topo.notes), topo.notes
        assert node.pid is not None and node.pid != first_pid
        state = json.loads(topo.state_path.read_text())
        assert state["nodes"][0]["restarts"] == {"chaos": 0, "crash": 1}
        assert not state["chaos_events"]
    finally:
        _stop(topo)


def test_on_crash_stop_ends_the_topology(tmp_path: Path) -> None:
    topo = _topology(tmp_path, "triad", 3, "--on-crash", "stop", "--node-arg", "triad=--fault-crash-at-sec=1")
    node = topo.nodes["triad"]
    try:
        node.start()
        _until(lambda: node.exited_unexpectedly() is not None, 15, "simulated crash")
        assert not topo.supervise()
        assert node.pid is None and node.restarts["crash"] == 1
    finally:
        _stop(topo)


@pytest.mark.parametrize("mode, reason, kind", [("flip", "HASH_MISMATCH", "g1"), ("delete", "MISSING_SAMPLE", "g2")])
def test_corrupt_store_damages_blobs_and_the_nodes_own_challenges_fail(tmp_path: Path, mode: str,
                                                                       reason: str, kind: str) -> None:
    # Its own topology: a damaged store is never healed, so the shared one must stay intact.
    topo = _topology(tmp_path, "triad_distributed", 4 if mode == "flip" else 5, "--node-kind", kind)
    node = topo.nodes["storage"]
    try:
        for n in topo.nodes.values():
            n.start()
        _until(lambda: any(node.spec.report_dir.glob("epoch-*.json")), 30, "storage reported")
        (store,) = [p.parent for p in node.spec.work_dir.glob(STORE_GLOB)]
        before = {p.name: p.read_bytes() for p in store.iterdir() if p.name != "index.json"}
        ev = ChaosEvent(f"ev-corrupt-{mode}", 0, "all", "storage", "corrupt_store",
                        params=(("blobs", 3), ("mode", mode)))
        topo.chaos.launch(ev)
        _until(lambda: _finished(topo, ev), 40, "corrupt_store finished")
        assert _phases(topo, ev.id)[-1] == "completed", topo.chaos.log.path.read_text()
        after = {p.name: p.read_bytes() for p in store.iterdir() if p.name != "index.json"}
        changed = {n for n in before if after.get(n) != before[n]}
        assert len(changed) == 3 and (mode == "flip") == changed.issubset(after)
        assert "the node's DistFS failures rose" in _detail(topo, ev.id), _detail(topo, ev.id)
        if kind == "g2":
            return  # G2 reports count failures without their reasons
        reasons: dict[str, int] = {}

        def failed_for_reason() -> bool:
            reports = sorted(node.spec.report_dir.glob("epoch-*.json"), key=lambda p: int(p.stem.split("-")[1]))
            try:
                reasons.update(json.loads(reports[-1].read_text())["distfs_probe_cursor_state"]
                               ["cumulative_failure_reasons"])
            except (ValueError, KeyError, IndexError):
                return False
            return reasons.get(reason, 0) > 0
        _until(failed_for_reason, 10, f"{reason} reported")
        assert set(reasons) == {reason}, reasons
    finally:
        _stop(topo)


def test_clock_skew_relaunches_the_node_with_a_shifted_clock_and_back(distributed: Topology) -> None:
    node = distributed.nodes["observer"]
    before = node.restarts["chaos"]
    ev = ChaosEvent("ev-skew", 0, "all", "observer", "clock_skew", duration_secs=1.0, params=(("offset_ms", -4000),))

    def preloaded() -> bool:
        try:
            return node.pid is not None and "libfaketime" in psutil.Process(node.pid).environ().get("LD_PRELOAD", "")
        except (psutil.Error, OSError):
            return False   # the pid just ended (relaunched)

    def skewed() -> None:
        _until(preloaded, 10, "observer under libfaketime")

    _run(distributed, ev, skewed)
    detail = _detail(distributed, ev.id)
    measured = float(detail.split("observed_at off by ")[1].split(" ms")[0])
    healed = float(detail.split("true clock (off by ")[1].split(" ms")[0])
    assert abs(measured + 4000) <= 1000 and abs(healed) <= 1000, detail
    assert node.restarts["chaos"] == before + 2 and "FAKETIME" not in node.env
    assert "LD_PRELOAD" not in psutil.Process(node.pid).environ()
