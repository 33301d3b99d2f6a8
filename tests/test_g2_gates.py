"""The G2 status gates seen to fail on a real G2 soak (simulator + exporter + Prometheus +
Alertmanager + checker), each from a G2-only simulator fault on one node, and nothing else
failing. The green side, chaos of every kind with these gates present, is the green G2 soak
of tests/test_runner_g2.py."""
from __future__ import annotations

import pytest

from soakcore.services import read_alerts_log
from soakrun import SoakRun, soak_ports, start_soak

DURATION = "60"
# Each fault on its own node, from 10 s on (the finality delay from the start).
FAULTS = {
    "storage": ["--fault-last-error-at-sec=10"],             # a critical runtime_last_error of its own
    "observer": ["--fault-replication-down-at-sec=10"],      # its replication network down: no connected peer
    "sequencer": ["--fault-state-root-diverge-at-sec=10",    # two state roots for one executed block
                  "--fault-finality-delay-ms=2500"],         # finality p95 2.5 s > the 2 s threshold
}
# gate -> the node it must name (None: a topology-scoped gate)
EXPECTED = {"node_critical_alert": "storage", "replication_no_peers": "observer",
            "finality_latency_high": "sequencer", "execution_state_root_diverged": None}


@pytest.fixture(scope="module")
def g2_faults(tmp_path_factory: pytest.TempPathFactory) -> SoakRun:
    tmp = tmp_path_factory.mktemp("g2gates")
    args = ["--node-kind", "g2", "--topology", "triad_distributed", "--duration-secs", DURATION,
            *[f"--node-arg={node}={switch}" for node, switches in FAULTS.items() for switch in switches]]
    run = start_soak("g2_faults", tmp, soak_ports(), args)
    run.wait(300)
    return run


def test_g2_only_faults_fail_exactly_the_g2_gates_each_on_its_node(g2_faults: SoakRun) -> None:
    run = g2_faults
    log = (run.out_dir / "runner.log").read_text()
    assert run.proc.returncode == 1, log[-3000:]
    summary = run.summary()
    (top,) = summary["topologies"]
    assert top["process_status"] == "ok", top["notes"]
    gates = run.gates()
    failed = {name for name, g in gates.items() if g["status"] == "fail"}
    assert failed == set(EXPECTED), {n: (g["status"], g["value"], g.get("note")) for n, g in gates.items()}
    for name, node in EXPECTED.items():
        assert gates[name]["worst_node"] == node, (name, gates[name])
    # critical gates fail the run, the warnings are reported only
    assert {n: gates[n]["outcome"] for n in EXPECTED} == {
        "node_critical_alert": "fail", "execution_state_root_diverged": "fail",
        "finality_latency_high": "warn", "replication_no_peers": "warn"}
    assert gates["finality_latency_high"]["value"] >= 2.5
    # every gate that applies was judged: the G2 nodes served what the G2 gates read
    for name in EXPECTED:
        assert "not applicable" not in (gates[name].get("note") or ""), gates[name]
    # the alerts reached Alertmanager's webhook, each for its node
    fired = {(e["labels"].get("alertname"), e["labels"].get("node")) for e in read_alerts_log(run.run_dir / "alerts.log")
             if e.get("status") == "firing"}
    assert {("SoakNodeCriticalAlert", "storage"), ("SoakExecutionStateRootDiverged", None)} <= fired, fired
