"""Every gate seen to fail when the simulator misbehaves that way, and seen to stay green
when chaos happens: real soaks (simulator + exporter + Prometheus + Alertmanager + checker),
run side by side so the whole matrix costs about one soak of wall time."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from soakrun import SoakRun, soak_ports, start_soak
from test_gate_matrix_blind_spots import start_blind_spots

DURATION = "50"
CASES: dict[str, list[str]] = {
    # Chaos of every kind with tight thresholds: exemptions must keep every critical gate green.
    "green_chaos": ["--topology", "triad_distributed", "--duration-secs", "75",
                    "--chaos-plan", "examples/chaos-every-action.json",
                    "--max-stall-secs", "4", "--max-lag-p95", "5", "--threshold", "max_report_gap_secs=8",
                    "--threshold", "warmup_secs=5"],
    "regression": ["--topology", "triad", "--node-arg", "triad=--fault-regress-at-sec=8"],
    "stall": ["--topology", "triad", "--node-arg", "triad=--fault-stall-at-sec=8", "--max-stall-secs", "6"],
    "lag": ["--topology", "triad_distributed", "--node-arg", "storage=--fault-stall-at-sec=6", "--max-lag-p95", "5"],
    "fork": ["--topology", "triad_distributed", "--node-arg", "storage=--fault-fork-at-sec=6"],
    "distfs": ["--topology", "triad", "--node-arg", "triad=--fault-distfs-fail-ratio=0.5",
               "--node-arg", "triad=--fault-distfs-fail-reason=HASH_MISMATCH"],
    "invariant": ["--topology", "triad", "--node-arg", "triad=--fault-invariant-at-sec=6"],
    "crash": ["--topology", "triad", "--node-arg", "triad=--fault-crash-at-sec=8", "--on-crash", "leave"],
    "leaks": ["--topology", "triad", "--threshold", "warmup_secs=5",
              "--node-arg", "triad=--fault-leak-bytes-per-sec=4000000",
              "--node-arg", "triad=--fault-fd-leak-per-sec=20",
              "--node-arg", "triad=--fault-disk-bytes-per-sec=2000000"],
    "report_gap": ["--topology", "triad", "--epoch-secs", "6", "--threshold", "max_report_gap_secs=3"],
}
EXPECTED_FAILURES = {
    "regression": {"committed_height_regressed"},
    "stall": {"consensus_stalled"},
    "lag": {"consensus_lag_high"},
    "fork": {"consensus_fork_detected"},
    "distfs": {"distfs_failure_ratio_high", "distfs_recent_failure_ratio_high", "distfs_failure_reason_burst"},
    "invariant": {"reward_invariant_violated"},
    "crash": {"process_crashed", "process_down"},
    "leaks": {"memory_growth_high", "fd_growth_high", "disk_growth_high"},
    "report_gap": {"reports_missing"},
}
# The same faults on one node of triad_distributed while chaos keeps hitting the other
# nodes (and, for the stall, the sequencer itself: paused briefly and often). Chaos must
# excuse nothing but its own node's window: exactly the same gates fail.
CHAOS_DURATION = "75"
FAULTED = {  # case -> (faulted node, its switches, extra flags)
    "regression": ("storage", ["--fault-regress-at-sec=8"], []),
    "stall": ("sequencer", ["--fault-stall-at-sec=8"], ["--max-stall-secs", "6"]),
    "lag": ("storage", ["--fault-stall-at-sec=6"], ["--max-lag-p95", "5"]),
    "fork": ("storage", ["--fault-fork-at-sec=6"], []),
    "distfs": ("storage", ["--fault-distfs-fail-ratio=0.5", "--fault-distfs-fail-reason=HASH_MISMATCH"], []),
    "invariant": ("storage", ["--fault-invariant-at-sec=6"], []),
    "crash": ("storage", ["--fault-crash-at-sec=8"], ["--on-crash", "leave"]),
    "leaks": ("storage", ["--fault-leak-bytes-per-sec=4000000", "--fault-fd-leak-per-sec=20",
                          "--fault-disk-bytes-per-sec=2000000"], ["--threshold", "warmup_secs=5"]),
    "report_gap": ("storage", [], ["--epoch-secs", "6", "--threshold", "max_report_gap_secs=3"]),
}
OTHER_CHAOS = (("pause", 0, 3), ("restart", 1, 0), ("disconnect", 0, 4), ("kill", 1, 0))
# A node whose committed height dropped 100 blocks really is behind the network until it
# catches up; whether that lasts long enough to move the 5 m p95 depends on how fast it
# catches up: the lag gate may fail too, as a true consequence of the drop, nothing else may.
MAY_ALSO_FAIL = {"regression": {"consensus_lag_high"}}


def chaos_plan(path: Path, faulted: str, duration: float) -> Path:
    """Events every 7 s on the nodes other than ``faulted``, rotating the down actions;
    when the sequencer is the faulted node it is also paused for 2 s every 28 s."""
    others = [n for n in ("sequencer", "storage", "observer") if n != faulted]
    events, at, i = [], 6.0, 0
    while at < duration - 8:
        action, down, dur = OTHER_CHAOS[i % len(OTHER_CHAOS)]
        events.append({"id": f"o-{i}", "at_sec": at, "topology": "triad_distributed", "node": others[i % 2],
                       "action": action, "down_secs": down, "duration_secs": dur})
        if faulted == "sequencer" and i % 4 == 0:
            events.append({"id": f"s-{i}", "at_sec": at + 3, "topology": "triad_distributed", "node": faulted,
                           "action": "pause", "down_secs": 0, "duration_secs": 2})
        at, i = at + 7, i + 1
    path.write_text(json.dumps({"events": events}))
    return path


def _chaos_case(tmp: Path, case: str) -> list[str]:
    node, switches, extra = FAULTED[case]
    plan = chaos_plan(tmp / f"plan-{case}.json", node, float(CHAOS_DURATION))
    return ["--topology", "triad_distributed", "--duration-secs", CHAOS_DURATION, "--chaos-plan", str(plan),
            *[f"--node-arg={node}={s}" for s in switches], *extra]


def corrupt_store_case(tmp: Path) -> list[str]:
    """A DistFS failure made by chaos, not by a simulator switch: half the storage node's blobs
    are flipped at 6 s (corrupt_store is never healed and excuses nothing)."""
    plan = tmp / "plan-corrupt-store.json"
    plan.write_text(json.dumps({"events": [{"id": "corrupt", "at_sec": 6, "topology": "triad_distributed",
                                            "node": "storage", "action": "corrupt_store", "blobs": 8,
                                            "mode": "flip"}]}))
    return ["--topology", "triad_distributed", "--duration-secs", CHAOS_DURATION, "--chaos-plan", str(plan)]


def run_matrix(tmp: Path) -> dict[str, SoakRun]:
    """Two batches side by side: the plain faults with the green run, then the faults under
    chaos together with the blind-spot soaks (tests/test_gate_matrix_blind_spots.py). A soak takes about
    a tenth of a core (CPU measured with /usr/bin/time: 8 s for a 90 s soak), so fifteen at
    once leave the nodes their ticks."""
    batches = [{name: args if "--duration-secs" in args else ["--duration-secs", DURATION, *args]
                for name, args in CASES.items()},
               {**{f"{case}+chaos": _chaos_case(tmp, case) for case in FAULTED},
                "distfs+corrupt_store": corrupt_store_case(tmp)}]
    runs: dict[str, SoakRun] = {}
    for i, batch in enumerate(batches):
        started = {}
        for name, args in batch.items():
            started[name] = start_soak(name.replace("+", "_"), tmp, soak_ports(), args)
        if i == 1:
            blind, act = start_blind_spots(tmp / "blind")
            started.update(blind)
            act()
        for run in started.values():
            run.wait(400)
        runs.update(started)
    return runs


@pytest.fixture(scope="module")
def soaks(matrix_soaks: dict[str, SoakRun]) -> dict[str, SoakRun]:
    return matrix_soaks


def _failed(run: SoakRun) -> set[str]:
    return {name for name, g in run.gates().items() if g["status"] == "fail"}


@pytest.mark.parametrize("case", sorted(EXPECTED_FAILURES) + sorted(f"{c}+chaos" for c in FAULTED))
def test_simulator_misbehaviour_fails_exactly_its_gates(soaks: dict[str, SoakRun], case: str) -> None:
    run = soaks[case]
    case = case.removesuffix("+chaos")
    expected = EXPECTED_FAILURES[case]
    summary = run.summary()
    assert summary["overall_status"] == "failed", summary["topologies"][0]["metric_gate"]
    assert expected <= _failed(run) <= expected | MAY_ALSO_FAIL.get(case, set()), _failed(run)
    assert run.proc.returncode == 1
    for name in expected:
        gate = run.gates()[name]
        assert gate["first_failed_at"], f"{name}: a failure must say when it started"
        assert gate["value"] > gate["threshold"]
    assert (run.run_dir / "failures.md").exists()
    if run.name.endswith("_chaos"):  # the chaos really happened on the other nodes
        log = (run.run_dir / "chaos_events.log").read_text().splitlines()[1:]
        assert sum(line.split("|")[3] == "completed" for line in log) >= 6, log


def test_a_store_corrupted_by_chaos_fails_the_distfs_gates(soaks: dict[str, SoakRun]) -> None:
    run = soaks["distfs+corrupt_store"]
    assert _failed(run) == EXPECTED_FAILURES["distfs"], run.summary()["topologies"][0]["metric_gate"]
    assert run.summary()["overall_status"] == "failed" and run.proc.returncode == 1
    log = (run.run_dir / "chaos_events.log").read_text().splitlines()[1:]
    assert [line.split("|")[3] for line in log if line.split("|")[2] == "corrupt"] == ["start", "completed"], log
    assert "DistFS failures rose" in log[-1], log


def test_chaos_of_every_kind_keeps_every_gate_green(soaks: dict[str, SoakRun]) -> None:
    run = soaks["green_chaos"]
    summary = run.summary()
    gates = run.gates()
    assert {n for n, g in gates.items() if g["status"] == "fail"} == set(), summary["topologies"][0]["metric_gate"]
    assert summary["overall_status"] == "ok" and run.proc.returncode == 0
    log = (run.run_dir / "chaos_events.log").read_text().splitlines()
    completed = {line.split("|")[4] for line in log[1:] if line.split("|")[3] == "completed"}
    assert completed == {"restart", "kill", "pause", "disconnect", "challenge_pressure"}, log
    # The tight thresholds were really in force, and exempt windows were really needed.
    assert gates["consensus_stalled"]["threshold"] == 4


def test_crash_is_reported_as_a_crash_not_as_chaos(soaks: dict[str, SoakRun]) -> None:
    top = soaks["crash"].summary()["topologies"][0]
    assert top["process_status"] == "crashed"
    assert any("crashed with exit code 3" in n for n in top["notes"]), top["notes"]
    assert top["chaos_events"] == 0


def test_failures_md_gives_the_query_and_the_node_stderr(soaks: dict[str, SoakRun]) -> None:
    text = (soaks["crash"].run_dir / "failures.md").read_text()
    assert "SoakProcessCrashed" in text and "```promql" in text
    assert "fault: crashing with exit code 3" in text


def test_alertmanager_delivered_the_failing_gate_to_the_webhook(soaks: dict[str, SoakRun]) -> None:
    from soakcore.services import read_alerts_log
    entries = read_alerts_log(soaks["invariant"].run_dir / "alerts.log")
    names = {e["labels"].get("alertname") for e in entries if e.get("status") == "firing"}
    assert "SoakRewardInvariantViolated" in names, entries


