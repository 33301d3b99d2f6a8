"""soak-run with G2 nodes (oasis7_chain_runtime; --node-kind g2): the upstream script's argv
for both topologies (G2.md section 1), every G2 port reserved and cut, one shared root key,
readiness (/healthz, then status running), and two real G2 soaks on the simulator end to end
(every chaos action; one green, one failing exactly the gates of its fault)."""
from __future__ import annotations

import csv
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alerts.profiles import TOPOLOGIES
from conftest import EXAMPLES, ROOT
from runner import netcut, ports
from runner.chaos import ChaosLog
from runner.cli import build_parser, resolve
from runner.nodes import NodeProc, StartupError, wait_ready
from runner.plan import ChaosEvent
from runner.soak import Topology
from runner.topology import NodeSpec
from simulator.testing import g2_script_argv, port_block
from soakcore.actions import ACTIONS
from soakcore.errors import UsageError
from soakcore.services import http_get_json
from soakrun import SoakRun, start_soak

ROLES = ("sequencer", "storage", "observer")
G2_STANDIN = ROOT / "tests" / "standins" / "oasis7_chain_runtime"


def free_block(n: int = 44) -> int:
    """n ports free (UDP and TCP) in 29000-29999, this file's range: a G2 topology binds
    case_base+1..+43. Picked when needed, so two test sessions at once do not collide."""
    return port_block(n, 29000, 29999)
NOW = time.mktime((2026, 5, 21, 10, 15, 0, 0, 0, -1))


def _cfg(tmp: Path, *args: str):  # type: ignore[no-untyped-def]
    return resolve(build_parser().parse_args(["--out-dir", str(tmp / "out"), *args]), now=NOW)


def _ports_in_g2_md() -> dict[str, list[int]]:
    """G2.md's worked example: triad at index 0, base 5610 (gossip, status, replication ranges)."""
    text = (EXAMPLES / "G2.md").read_text()
    m = re.search(r"Gossip uses (\d+)-(\d+), status (\d+)-(\d+) and replication (\d+)-(\d+)", text)
    assert m, "G2.md's port example moved"
    lo = [int(x) for x in m.groups()]
    return {"gossip": list(range(lo[0], lo[1] + 1)), "status": list(range(lo[2], lo[3] + 1)),
            "replication": list(range(lo[4], lo[5] + 1))}


# --- argv, ids, ports: exactly the upstream script's -------------------------------------------

@pytest.mark.parametrize("node_bin", [False, True])
def test_g2_argv_is_the_upstream_scripts_for_both_topologies(tmp_path: Path, node_bin: bool) -> None:
    extra = ["--node-bin", str(G2_STANDIN)] if node_bin else ["--node-kind", "g2"]
    cfg = _cfg(tmp_path, *extra, "--seed", "5")
    assert cfg.launch.node_kind == "g2" and cfg.launch.epoch_secs == 60   # the script's epoch
    assert cfg.topologies == ("triad", "triad_distributed")
    ts = cfg.run_id
    example = _ports_in_g2_md()
    for index, name in enumerate(cfg.topologies):
        specs = Topology(cfg, index, name, ChaosLog(tmp_path / "c.log")).nodes
        assert tuple(specs) == ROLES   # three processes in BOTH topologies (G2.md section 1)
        for i, (role, node) in enumerate(specs.items()):
            s = node.spec
            program = [str(G2_STANDIN)] if node_bin else [sys.executable, "-m", "simulator.g2"]
            sim_only = [] if node_bin else ["--seed", str(5 + index)]
            assert list(s.argv) == [*program, *g2_script_argv(5610 + 100 * index, role, name, ts), *sim_only]
            assert s.node_id == f"soak-{name}-{ts}-{role}" and s.argv[s.argv.index("--world-id") + 1] == \
                f"p2p-{name}-{ts}"
            shift = 100 * index
            assert s.gossip_ports == (example["gossip"][i] + shift,)
            assert s.replication_ports == (example["replication"][i] + shift,)   # NOT gossip + 100
            assert s.status_url == f"http://127.0.0.1:{example['status'][i] + shift}/v1/chain/status"
            assert s.health_url == f"http://127.0.0.1:{example['status'][i] + shift}/healthz"
            assert s.report_dir == s.work_dir / "output" / "chain-runtime" / s.node_id / "reward-runtime-report"
            assert s.work_dir == cfg.run_dir / name / "nodes" / role / "work"
            assert s.critical == (role == "sequencer")
            assert s.shared_key == cfg.run_dir / name / "config.toml"


def test_g2_every_argv_passes_the_stand_in_and_epoch_and_tick_flags_reach_it(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "--node-bin", str(G2_STANDIN), "--epoch-secs", "7", "--tick-ms", "150")
    env = {"PATH": "/usr/bin:/bin", "SOAK_STANDIN_CHECK_ONLY": "1", "SOAK_STANDIN_ARGV_LOG": str(tmp_path / "a.jsonl")}
    for index, name in enumerate(cfg.topologies):
        for node in Topology(cfg, index, name, ChaosLog(tmp_path / "c.log")).nodes.values():
            argv = node.spec.argv
            assert argv[argv.index("--reward-runtime-epoch-duration-secs") + 1] == "7"
            assert argv[argv.index("--node-tick-ms") + 1] == "150"
            res = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=30)
            assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("args, message", [
    (["--node-kind", "g2", "--epoch-secs", "2.5"],
     "--epoch-secs 2.5: expected a whole number of seconds (oasis7_chain_runtime's "
     "--reward-runtime-epoch-duration-secs is a positive integer)"),
    (["--epoch-secs", "0.5"], "--epoch-secs 0.5: expected a whole number of seconds (world_viewer_live's"),
    (["--node-kind", "g1", "--node-bin", str(G2_STANDIN)], f"--node-kind g1: --node-bin {G2_STANDIN} is "
     "oasis7_chain_runtime, a g2 node; give --node-kind g2"),
    (["--node-kind", "g3"], "argument --node-kind: invalid choice: 'g3'"),
    (["--node-kind", "g2", "--node-arg", "triad=--seed=1"], "--node-arg 'triad=--seed=1': no node 'triad'"),
    (["--node-kind", "g2", "--topology", str(ROOT / "examples" / "topology-sim-trio.yaml")],
     "--node-kind g2: a topology file gives every node's argv itself"),
])
def test_g2_flags_are_validated_before_anything_starts(tmp_path: Path, args: list[str], message: str) -> None:
    with pytest.raises(UsageError) as err:
        _cfg(tmp_path, *args)
    assert message in str(err.value)
    assert not (tmp_path / "out").exists()


def test_g2_node_labels_in_plans_and_node_args_are_the_three_roles_in_both_topologies(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"events": [{"id": "p", "at_sec": 1, "topology": "triad", "node": "storage",
                                            "action": "pause", "duration_secs": 1}]}))
    cfg = _cfg(tmp_path, "--node-kind", "g2", "--topology", "triad", "--chaos-plan", str(plan),
               "--node-arg", "observer=--fault-stall-at-sec=5")
    assert [e.node for e in cfg.plan_events] == ["storage"]
    observer = Topology(cfg, 0, "triad", ChaosLog(tmp_path / "c.log")).nodes["observer"].spec
    assert observer.argv[-1] == "--fault-stall-at-sec=5"
    assert _cfg(tmp_path, "--epoch-secs", "3").launch.node_kind == "g1"   # G1 stays the default


def test_every_g2_port_is_reserved_and_a_held_replication_port_is_named(tmp_path: Path) -> None:
    base = free_block(144)   # both topologies: case_base 0 and 100
    cfg = _cfg(tmp_path, "--node-kind", "g2", "--base-port", str(base))
    uses = {(u.port, u.proto): u.what for u in ports.planned(cfg)}
    for index, name in enumerate(TOPOLOGIES):
        case = base + 100 * index
        for i, role in enumerate(ROLES):
            assert uses[(case + 1 + i, "udp")] == f"{name}/{role} node"           # gossip
            assert uses[(case + 41 + i, "tcp")] == f"{name}/{role} replication"   # replication
            assert uses[(case + 21 + i, "tcp")] == f"{name}/{role} status"        # status
    with socket.socket() as held:
        held.bind(("127.0.0.1", base + 100 + 42))   # triad_distributed storage's replication port
        held.listen()
        res = subprocess.run([sys.executable, "-m", "runner", "--node-kind", "g2", "--base-port", str(base),
                              "--out-dir", str(tmp_path / "out2"), "--duration-secs", "5"],
                             capture_output=True, text=True, cwd=ROOT, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 2, res.stderr
    assert f"port {base + 142}/tcp (triad_distributed/storage replication) is in use by pid {os.getpid()}" \
        in res.stderr
    assert not (tmp_path / "out2").exists()


# --- start-up: one key, readiness --------------------------------------------------------------

def _stop(topo: Topology) -> None:
    topo.chaos.heal_all()
    for node in topo.nodes.values():
        node.stop()


def test_g2_nodes_share_one_root_key_become_ready_and_a_cut_drops_gossip_and_replication(tmp_path: Path) -> None:
    # Index 1 (as in a run of both topologies): case_base = --base-port + 100.
    cfg = _cfg(tmp_path, "--node-kind", "g2", "--topology", "triad_distributed", "--base-port", str(free_block() - 100),
               "--tick-ms", "100", "--epoch-secs", "1")
    cfg.run_dir.mkdir(parents=True)
    topo = Topology(cfg, 1, "triad_distributed", ChaosLog(cfg.run_dir / "chaos_events.log"))
    shared = cfg.run_dir / "triad_distributed" / "config.toml"
    assert not shared.exists()   # created by the runner when the first node starts, not before
    try:
        for node in topo.nodes.values():
            node.start()
        wait_ready(topo.nodes.values(), 20)
        key = shared.read_bytes()
        assert re.fullmatch(rb'\[node\]\nprivate_key = "[0-9a-f]{64}"\n(public_key = "[0-9a-f]{64}"\n)?', key)
        for node in topo.nodes.values():
            copy = node.spec.work_dir / "config.toml"
            assert copy.read_bytes() == key and stat.S_IMODE(copy.stat().st_mode) == 0o600
            # ready means the status document says running (never /healthz alone)
            assert http_get_json(node.spec.status_url or "", 2)["running"] is True
        # Followers accept the sequencer's blocks only with the same key: they commit.
        storage = topo.nodes["storage"].spec.status_url or ""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and http_get_json(storage, 2)["consensus"]["committed_height"] < 5:
            time.sleep(0.2)
        assert http_get_json(storage, 2)["consensus"]["committed_height"] >= 5
        observer = topo.nodes["observer"].spec
        if netcut.available() is None:
            ev = ChaosEvent("cut", 0, "all", "observer", "disconnect", duration_secs=3)
            topo.chaos.launch(ev)
            deadline = time.monotonic() + 5   # the rules go in one by one: wait for the UDP and TCP ones

            def cut() -> bool:
                return (netcut.probe_blocked("127.0.0.1", observer.gossip_ports[0])
                        and netcut.probe_tcp_blocked("127.0.0.1", observer.replication_ports[0], 0.3))
            while time.monotonic() < deadline and not cut():
                time.sleep(0.05)
            assert netcut.probe_blocked("127.0.0.1", observer.gossip_ports[0])
            assert netcut.probe_tcp_blocked("127.0.0.1", observer.replication_ports[0])
            # the status port is never cut: the exporter keeps reading the node
            assert http_get_json(observer.status_url or "", 2)["running"] is True
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "|cut|completed|" not in topo.chaos.log.path.read_text():
                time.sleep(0.1)
            assert not netcut.probe_tcp_blocked("127.0.0.1", observer.replication_ports[0])
            assert not netcut.probe_blocked("127.0.0.1", observer.gossip_ports[0])
            log = topo.chaos.log.path.read_text()
            assert (f"|cut|completed|disconnect|observer|udp ports {observer.gossip_ports[0]} and tcp ports "
                    f"{observer.replication_ports[0]} cut 3s and healed") in log, log
    finally:
        _stop(topo)
    # A restart keeps the node's own copy (which a real node may have completed).
    before = (topo.nodes["storage"].spec.work_dir / "config.toml").read_bytes()
    topo.nodes["storage"].start()
    try:
        wait_ready([topo.nodes["storage"]], 20)
        assert (topo.nodes["storage"].spec.work_dir / "config.toml").read_bytes() == before
    finally:
        topo.nodes["storage"].stop()


def _fake_node(tmp: Path, running: object, health: int = 200) -> NodeProc:
    """A real HTTP process answering /healthz with ``health`` and a status with ``running``."""
    port = free_block(1)
    script = (f"import http.server, json\nclass H(http.server.BaseHTTPRequestHandler):\n"
              f"    def do_GET(self):\n"
              f"        code, body = ({health}, b'{{\"ok\":true}}') if self.path == '/healthz' else "
              f"(200, json.dumps({{'running': {running!r}}}).encode())\n"
              f"        self.send_response(code); self.end_headers(); self.wfile.write(body)\n"
              f"    def log_message(self, *a): pass\n"
              f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n")
    url = f"http://127.0.0.1:{port}"
    spec = NodeSpec("fake", "sequencer", "fake", (sys.executable, "-c", script), tmp / "fake" / "work",
                    tmp / "fake" / "report", tmp / "fake", (), f"{url}/v1/chain/status", health_url=f"{url}/healthz")
    node = NodeProc(spec, dict(os.environ))
    node.start()
    return node


@pytest.mark.parametrize("running, health, waits_for", [
    (False, 200, "/v1/chain/status: running is false"),   # /healthz alone is never health
    (True, 503, "/healthz answered 503"),
])
def test_readiness_needs_healthz_and_then_running_true(tmp_path: Path, running: bool, health: int,
                                                        waits_for: str) -> None:
    node = _fake_node(tmp_path, running, health)
    try:
        with pytest.raises(StartupError) as err:
            wait_ready([node], 3)
        assert "not ready after 3s (--startup-timeout-secs): fake: http://127.0.0.1:" in str(err.value)
        assert waits_for in str(err.value)
    finally:
        node.stop()


def test_a_g2_node_that_exits_during_start_up_fails_the_topology_at_once_with_its_stderr(tmp_path: Path) -> None:
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "runner", "--node-kind", "g2", "--topology", "triad",
                          "--base-port", str(free_block()), "--out-dir", str(tmp_path), "--duration-secs", "30",
                          "--epoch-secs", "1", "--node-arg", "storage=--no-such-flag"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert time.monotonic() - started < 30, "a start-up failure must not wait out the window or the drain"
    line = "storage exited with code 1 during start-up: unknown option: --no-such-flag"
    assert res.returncode == 1 and f"soak-run: triad: {line}" in res.stderr, res.stderr
    run_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    top = json.loads((run_dir / "summary.json").read_text())["topologies"][0]
    assert top["process_status"] == "error" and any(line in n for n in top["notes"])
    state = json.loads((run_dir / "triad" / "run_state.json").read_text())
    assert all(n["pid"] is None for n in state["nodes"]), "every node stopped"


# --- G2 soaks end to end on the simulator ------------------------------------------------------

DURATION = 45
PLAN = [  # every chaos action but corrupt_store (it fails the DistFS gates on purpose), inside a 45 s
    # window; on each node the process faults and the network faults never overlap among themselves
    {"id": "g2-restart", "at_sec": 4, "node": "sequencer", "action": "restart", "down_secs": 1},
    {"id": "g2-partition", "at_sec": 4, "node": "storage", "action": "partition", "duration_secs": 4,
     "peers": ["observer"]},
    {"id": "g2-clock-skew", "at_sec": 5, "node": "observer", "action": "clock_skew", "duration_secs": 3,
     "offset_ms": 2000},
    {"id": "g2-kill", "at_sec": 10, "node": "storage", "action": "kill", "down_secs": 1},
    {"id": "g2-delay", "at_sec": 12, "node": "sequencer", "action": "delay", "duration_secs": 5,
     "delay_ms": 100, "jitter_ms": 10},
    {"id": "g2-pause", "at_sec": 16, "node": "observer", "action": "pause", "duration_secs": 4},
    {"id": "g2-bandwidth", "at_sec": 19, "node": "storage", "action": "bandwidth", "duration_secs": 4,
     "rate_kbit": 1024},
    {"id": "g2-disconnect", "at_sec": 23, "node": "observer", "action": "disconnect", "duration_secs": 5},
    {"id": "g2-pressure", "at_sec": 30, "node": "storage", "action": "challenge_pressure", "duration_secs": 6},
    {"id": "g2-loss", "at_sec": 31, "node": "sequencer", "action": "loss", "duration_secs": 5, "percent": 10},
]
# Relaunches each action makes (clock_skew: into the skew and out of it).
RELAUNCHES = {"restart": 1, "kill": 1, "clock_skew": 2}
FAULT = ["--node-arg=storage=--fault-distfs-fail-ratio=0.5", "--node-arg=storage=--fault-distfs-fail-reason=HASH_MISMATCH"]
# Slim G2 epoch files carry DistFS totals only (no reasons): the reason-burst gate cannot see it.
FAULT_FAILS = {"distfs_failure_ratio_high", "distfs_recent_failure_ratio_high"}


@pytest.fixture(scope="module")
def g2_soaks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SoakRun]:
    tmp = tmp_path_factory.mktemp("g2soaks")
    plan = tmp / "plan.json"
    plan.write_text(json.dumps({"events": [{"topology": "all", "down_secs": 0, "duration_secs": 0, **e}
                                           for e in PLAN]}))
    common = ["--node-kind", "g2", "--duration-secs", str(DURATION), "--chaos-plan", str(plan),
              "--max-stall-secs", "8", "--max-lag-p95", "5", "--threshold", "max_report_gap_secs=8",
              "--threshold", "warmup_secs=5"]
    runs = {"green": start_soak("green", tmp, free_block(), [*common, "--topology", "triad"]),
            "fault": start_soak("fault", tmp, free_block(), [*common, "--topology", "triad_distributed", *FAULT])}
    for run in runs.values():
        run.wait(300)
    return runs


def _failed(run: SoakRun) -> set[str]:
    return {name for name, g in run.gates().items() if g["status"] == "fail"}


@pytest.mark.parametrize("case, topology", [("green", "triad"), ("fault", "triad_distributed")])
def test_g2_soak_on_the_simulator_runs_every_chaos_action_and_leaves_the_verdict_files(
        g2_soaks: dict[str, SoakRun], case: str, topology: str) -> None:
    run = g2_soaks[case]
    log = (run.out_dir / "runner.log").read_text()
    assert run.proc.returncode == (0 if case == "green" else 1), log[-3000:]
    d = run.run_dir
    for name in ("run_config.json", "summary.json", "summary.md", "timeline.csv", "junit.xml", "chaos_events.log",
                 "alerts.log", *(("failures.md",) if case == "fault" else ())):
        assert (d / name).is_file(), name
    assert any((d / "prometheus").rglob("*")) and any((d / "plots").glob("*.png"))
    summary = run.summary()
    (top,) = summary["topologies"]
    assert top["topology"] == topology and top["process_status"] == "ok", top["notes"]
    assert json.loads((d / "run_config.json").read_text())["launch"]["node_kind"] == "g2"
    rows = list(csv.reader((d / "chaos_events.log").read_text().splitlines()[1:], delimiter="|"))
    done = {r[2]: (r[3], r[6]) for r in rows if r[3] != "start"}
    cut = netcut.available() is None
    network = {a for a, spec in ACTIONS.items() if spec.chaos_mesh.startswith("NetworkChaos")}
    assert {k: v[0] for k, v in done.items()} == {e["id"]: "completed" if cut or e["action"] not in network
                                                  else "skipped" for e in PLAN}, rows
    state = json.loads((d / topology / "run_state.json").read_text())
    by_node = {n["node"]: n for n in state["nodes"]}
    assert list(by_node) == list(ROLES)
    base = json.loads((d / "run_config.json").read_text())["launch"]["base_port"]
    if cut:   # the observer's gossip UDP and its replication TCP port (case_base+3, +43) were cut
        assert done["g2-disconnect"][1] == f"udp ports {base + 3} and tcp ports {base + 43} cut 5s and healed"
        # per-peer TCP (each node in its own cgroup): storage's replication link to the observer
        # dropped, its link to the sequencer still connecting
        assert "; tcp storage -> observer dropped, storage -> sequencer connecting;" in done["g2-partition"][1]
    key = (d / topology / "config.toml").read_bytes()
    for role, n in by_node.items():
        work = Path(n["work_dir"])
        assert n["status_url"] == f"http://127.0.0.1:{base + 21 + ROLES.index(role)}/v1/chain/status"
        assert n["report_dir"] == str(work / "output" / "chain-runtime" / n["node_id"] / "reward-runtime-report")
        assert any(Path(n["report_dir"]).glob("epoch-*.json")), f"{role} wrote no epoch file"
        assert (work / "config.toml").read_bytes() == key
        assert n["restarts"]["crash"] == 0
    assert {role: n["restarts"]["chaos"] for role, n in by_node.items()} == {
        role: sum(RELAUNCHES.get(str(e["action"]), 0) for e in PLAN if e["node"] == role) for role in ROLES}
    if case == "green":
        assert summary["overall_status"] == "ok" and not _failed(run), run.gates()
        # the data the gates need came from the G2 nodes
        for gate in ("consensus_stalled", "consensus_lag_high", "distfs_failure_ratio_high", "reports_missing",
                     "process_down", "memory_growth_high", "fd_growth_high", "disk_growth_high"):
            assert run.gates()[gate]["status"] == "pass", (gate, run.gates()[gate])
    else:
        assert summary["overall_status"] == "failed" and _failed(run) == FAULT_FAILS, run.gates()
        failures = (d / "failures.md").read_text()
        section = failures[failures.index("SoakDistfsFailureRatioHigh"):]
        assert failures.count("## triad_distributed: ") == 2 and "storage" in section[:400], failures[:1500]
