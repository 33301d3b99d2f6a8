"""The runner's argv passes the conformance stand-ins (tests/standins/, written from FORMATS.md
and G2.md, not from the runner): for each generation and every built-in topology, the runner's
own launch path (node specs, NodeProc.start, readiness, the chaos engine's restart and kill
relaunch) runs the stand-in as --node-bin; every argv it recorded must have passed its checks
(a refused argv exits 1 at once, so readiness or supervision would also fail), and the nodes
behind it must really run (reports, or G2 status with running true)."""
from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest

from alerts.profiles import TOPOLOGIES
from conftest import ROOT
from runner.chaos import ChaosLog
from runner.cli import build_parser, resolve
from runner.nodes import wait_ready
from runner.plan import ChaosEvent
from runner.soak import Topology
from simulator.testing import port_block

STANDINS = ROOT / "tests" / "standins"
BINARY = {"g1": STANDINS / "world_viewer_live", "g2": STANDINS / "oasis7_chain_runtime"}


def _until(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def _recorded(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def _finished(topo: Topology, event_id: str) -> list[str]:
    rows = [line.split("|") for line in topo.chaos.log.path.read_text().splitlines()[1:]]
    return [r[3] for r in rows if r[2] == event_id and r[3] != "start"]


@pytest.mark.parametrize("kind, topology", [(k, t) for k in ("g1", "g2") for t in TOPOLOGIES])
def test_runner_argv_for_every_topology_restart_and_kill_passes_the_stand_in(
        kind: str, topology: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("SOAK_STANDIN_ARGV_LOG", str(log))
    monkeypatch.setenv("SOAK_STANDIN_SIM_ARGS", "[]")
    index = TOPOLOGIES.index(topology)   # as in a run of every topology: G2 case_base moves by 100
    # The ports this topology binds lie in 44 free ones of 29000-29999 (picked now, so two test
    # sessions at once do not collide): G1 base..+2 or +110..+112, G2 case_base+1..+43.
    base = port_block(44, 29000, 29999) - 100 * index
    # No --node-kind: the binary's name says which generation it is.
    cfg = resolve(build_parser().parse_args(["--node-bin", str(BINARY[kind]), "--topologies", ",".join(TOPOLOGIES),
                                             "--out-dir", str(tmp_path / "out"), "--base-port", str(base),
                                             "--tick-ms", "100", "--epoch-secs", "1", "--seed", "3"]))
    assert cfg.launch.node_kind == kind
    cfg.run_dir.mkdir(parents=True)
    topo = Topology(cfg, index, topology, ChaosLog(cfg.run_dir / "chaos_events.log"))
    expected_nodes = ("triad",) if (kind, topology) == ("g1", "triad") else ("sequencer", "storage", "observer")
    assert tuple(topo.nodes) == expected_nodes
    victim = expected_nodes[-1] if len(expected_nodes) == 1 else "storage"
    try:
        for node in topo.nodes.values():
            node.start()
        wait_ready(topo.nodes.values(), 20)
        for launches, action in enumerate(("restart", "kill"), start=len(expected_nodes) + 1):
            _until(lambda: _recorded(log) == launches - 1, 20, "every launch so far recorded by the stand-in")
            ev = ChaosEvent(f"c-{action}", 0, "all", victim, action, down_secs=0.5)
            topo.chaos.launch(ev)
            _until(lambda: _finished(topo, ev.id), 20, f"{action} of {victim}")
            assert _finished(topo, ev.id) == ["completed"], topo.chaos.log.path.read_text()
            wait_ready(topo.nodes.values(), 20)   # the relaunched process passes readiness too
        _until(lambda: _recorded(log) == len(expected_nodes) + 2, 20, "the last relaunch recorded")
        # The nodes behind the stand-in really run: reports from each (after the relaunch too).
        _until(lambda: all(any(n.spec.report_dir.glob("epoch-*.json")) for n in topo.nodes.values()), 20,
               "a report from every node")
        crashed = {n: node.exited_unexpectedly() for n, node in topo.nodes.items() if node.exited_unexpectedly()}
        assert not crashed, crashed
    finally:
        topo.chaos.heal_all()
        for node in topo.nodes.values():
            node.stop()
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["verdict"] for e in entries] == ["ok"] * (len(expected_nodes) + 2), entries
    assert {e["prog"] for e in entries} == {BINARY[kind].name}
    by_cwd: dict[str, list[list[str]]] = {}
    for e in entries:
        by_cwd.setdefault(e["cwd"], []).append(e["argv"])
    for name, node in topo.nodes.items():
        launched = by_cwd.get(str(node.spec.work_dir), [])
        assert len(launched) == (3 if name == victim else 1), (name, launched)
        # Each launch is the same argv, the one command.txt shows.
        assert all(argv == list(node.spec.argv[1:]) for argv in launched)
        assert shlex.split((node.spec.log_dir / "command.txt").read_text()) == list(node.spec.argv)
