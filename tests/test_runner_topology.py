"""Topology files: node commands as argv lists, validated whole, each node in its own
working directory; and the built-in topologies' ports and directories."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from runner import netcut
from runner.chaos import ChaosLog
from runner.cli import build_parser, resolve
from runner.soak import Topology
from runner.topofile import load_topology_file
from simulator.testing import port_block

PORT = port_block(300, 11000, 12499)  # claimed for this test process: no other test uses it


def _sim_node(role: str) -> dict[str, object]:
    peers = [x for i, r in enumerate(("sequencer", "storage", "observer"))
             for x in (f"--triad-{r}-gossip", f"127.0.0.1:{PORT + i}")]
    port = PORT + ("sequencer", "storage", "observer").index(role)
    return {"node": role, "role": role, "node_id": f"duo-{role}", "gossip_ports": [port],
            "argv": [sys.executable, "-m", "simulator", "triad_p2p_bootstrap", "--topology", "triad_distributed",
                     "--node-role", role, "--node-id", "duo", "--bind", f"127.0.0.1:{port}", *peers, "--no-llm",
                     "--reward-runtime-enable", "--reward-runtime-report-dir", "{report_dir}",
                     "--reward-runtime-epoch-duration-secs", "{epoch_secs}", "--node-tick-ms", "{tick_ms}"]}


def _write(tmp: Path, doc: object, name: str = "topo.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("doc, field", [
    ({"name": "x", "nodes": [{"node": "a", "argv": "sim --bind 1.2.3.4 ; rm -rf /"}]}, "nodes[0].argv"),
    ({"name": "x", "nodes": [{"node": "a", "argv": ["sim"], "gossip_ports": [70000]}]}, "nodes[0].gossip_ports"),
    ({"name": "x", "nodes": [{"node": "../a", "argv": ["sim"]}]}, "nodes[0].node"),
    ({"name": "x", "nodes": [{"node": "a", "argv": ["sim"], "shell": True}]}, "nodes[0].shell"),
    ({"name": "x", "nodes": [{"node": "a", "argv": ["s"]}, {"node": "a", "argv": ["s"]}]}, "nodes[].node"),
    ({"name": "triad", "nodes": [{"node": "a", "argv": ["sim"]}]}, "name"),
    ({"name": "x", "nodes": []}, "nodes"),
])
def test_a_bad_topology_file_is_refused_with_the_field_named(tmp_path: Path, doc: object, field: str) -> None:
    path = _write(tmp_path, doc)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "runner", "--topology", str(path), "--out-dir", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2 and f"{path}: {field}:" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_the_example_topology_file_is_valid() -> None:
    topo = load_topology_file(ROOT / "examples" / "topology-sim-trio.yaml", ("triad", "triad_distributed"))
    assert topo.labels == ("sequencer", "storage", "observer")
    assert all(n.gossip_ports and "{report_dir}" in n.argv for n in topo.nodes)


def test_topology_file_nodes_run_in_their_own_directories_and_can_be_cut(tmp_path: Path) -> None:
    path = _write(tmp_path, {"name": "duo", "nodes": [_sim_node("sequencer"), _sim_node("storage")]})
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"events": [{"id": "cut", "at_sec": 1, "topology": "duo", "node": "storage",
                                            "action": "disconnect", "duration_secs": 2}]}))
    args = build_parser().parse_args(["--topology", str(path), "--out-dir", str(tmp_path / "out"), "--tick-ms", "100",
                                      "--epoch-secs", "1", "--chaos-plan", str(plan)])
    cfg = resolve(args)
    assert cfg.topologies == ("duo",) and [e.node for e in cfg.plan_events] == ["storage"]
    cfg.run_dir.mkdir(parents=True)
    topo = Topology(cfg, 0, "duo", ChaosLog(cfg.run_dir / "chaos_events.log"))
    try:
        for node in topo.nodes.values():
            node.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(any(n.spec.report_dir.glob("epoch-*.json"))
                                                      for n in topo.nodes.values()):
            time.sleep(0.2)
        for name, node in topo.nodes.items():
            node_dir = cfg.run_dir / "duo" / "nodes" / name
            assert any((node_dir / "report").glob("epoch-*.json")), f"{name} wrote no report into its report dir"
            argv = shlex.split((node_dir / "command.txt").read_text())
            assert str(node_dir / "report") in argv and "{report_dir}" not in argv
            assert Path(os.readlink(f"/proc/{node.pid}/cwd")) == node_dir / "work"
        topo.chaos.launch(topo.events[0])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not netcut.probe_blocked("127.0.0.1", PORT + 1):
            time.sleep(0.05)
        assert netcut.probe_blocked("127.0.0.1", PORT + 1), "the declared gossip port was not cut"
    finally:
        topo.chaos.heal_all()
        for node in topo.nodes.values():
            node.stop()
    assert not netcut.probe_blocked("127.0.0.1", PORT + 1)
    assert "|completed|disconnect|storage|" in (cfg.run_dir / "chaos_events.log").read_text()


def test_built_in_topologies_give_each_node_its_own_dirs_ports_and_a_short_epoch(tmp_path: Path) -> None:
    cfg = resolve(build_parser().parse_args(["--out-dir", str(tmp_path), "--base-port", "6000", "--epoch-secs", "7"]))
    topo = Topology(cfg, 1, "triad_distributed", ChaosLog(tmp_path / "c.log"))
    specs = [n.spec for n in topo.nodes.values()]
    assert [s.node for s in specs] == ["sequencer", "storage", "observer"]
    assert len({s.work_dir for s in specs}) == 3 and all(s.work_dir.is_relative_to(cfg.run_dir) for s in specs)
    assert [s.gossip_ports for s in specs] == [(6110,), (6111,), (6112,)]
    for s in specs:
        assert s.argv[s.argv.index("--reward-runtime-epoch-duration-secs") + 1] == "7"
        assert s.argv[s.argv.index("--node-role") + 1] == s.role


def test_node_bin_launches_a_real_node_binary_with_world_viewer_live_flags(tmp_path: Path) -> None:
    # A stand-in binary that speaks world_viewer_live's flags (it execs the simulator).
    node_bin = tmp_path / "world_viewer_live"
    node_bin.write_text(f"#!{sys.executable}\nimport os, sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                        f"os.execv({sys.executable!r}, [{sys.executable!r}, '-m', 'simulator', *sys.argv[1:]])\n")
    node_bin.chmod(0o755)
    cfg = resolve(build_parser().parse_args(["--out-dir", str(tmp_path / "out"), "--node-bin", str(node_bin),
                                             "--base-port", str(PORT + 20), "--epoch-secs", "1", "--tick-ms", "100"]))
    cfg.run_dir.mkdir(parents=True)
    topo = Topology(cfg, 0, "triad", ChaosLog(cfg.run_dir / "chaos_events.log"))
    node = topo.nodes["triad"]
    assert node.spec.argv[:2] == (str(node_bin), "triad_p2p_bootstrap") and "--seed" not in node.spec.argv
    for flag in ("--no-llm", "--reward-runtime-enable", "--reward-runtime-report-dir",
                 "--reward-runtime-epoch-duration-secs", "--node-tick-ms", "--bind"):
        assert flag in node.spec.argv
    base = PORT + 20
    # Gossip UDP on base..base+2 (cut as UDP), replication TCP on gossip + 100 (cut as TCP).
    assert node.spec.gossip_ports == (base, base + 1, base + 2)
    assert node.spec.replication_ports == (base + 100, base + 101, base + 102)
    try:
        node.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(node.spec.report_dir.glob("epoch-*.json")):
            time.sleep(0.2)
        assert any(node.spec.report_dir.glob("epoch-*.json")), (node.spec.log_dir / "stderr.log").read_text()
    finally:
        node.stop()


def test_topology_file_replication_ports_are_reserved_and_cut_as_tcp(tmp_path: Path) -> None:
    from runner import ports
    node = {**_sim_node("sequencer"), "replication_ports": [PORT + 50]}
    path = _write(tmp_path, {"name": "solo", "nodes": [node]})
    cfg = resolve(build_parser().parse_args(["--topology", str(path), "--out-dir", str(tmp_path / "out")]))
    (spec,) = Topology(cfg, 0, "solo", ChaosLog(tmp_path / "c.log")).nodes.values()
    assert spec.spec.gossip_ports == (PORT,) and spec.spec.replication_ports == (PORT + 50,)
    assert {(u.port, u.proto) for u in ports.planned(cfg) if u.what == "solo/sequencer replication"} == \
        {(PORT + 50, "tcp"), (PORT + 50, "udp")}
    bad = _write(tmp_path, {"name": "solo", "nodes": [{**node, "replication_ports": ["x"]}]}, "bad.yaml")
    with pytest.raises(Exception, match=r"nodes\[0\]\.replication_ports: expected a list of TCP ports"):
        resolve(build_parser().parse_args(["--topology", str(bad), "--out-dir", str(tmp_path / "out")]))
