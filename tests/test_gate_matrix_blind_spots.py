"""No blind spots: each case here came back `verdict OK` before, while the fault was really
happening (issue: the end of the window, silent nodes, a node cut off from everyone, a real
drop soon after a restart, a store lost late). Real soaks, run side by side with the gate
matrix's second batch (the session fixture ``matrix_soaks`` in conftest.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from soakrun import SoakRun, soak_ports, start_soak

DURATION = 60
# Ports of triad_distributed index 0 (runner/topology.py): gossip at base + 10 + role index.
STORAGE_GOSSIP_OFFSET = 11
CASES: dict[str, list[str]] = {
    # Nothing committed over the whole window: a stall, whatever the threshold (300 s here).
    "stall_from_start": ["--node-arg", "sequencer=--fault-stall-at-sec=1"],
    # A node that never reports is judged from its own start.
    "silent_node": ["--node-arg", "storage=--reward-runtime-epoch-duration-secs", "--node-arg", "storage=100000",
                    "--node-arg", "storage=--fault-distfs-fail-ratio=1.0", "--threshold", "max_report_gap_secs=20"],
    # A real drop 30 s after a chaos restart of the same node is not excused.
    "regress_after_restart": ["--node-arg", "storage=--fault-regress-at-sec=30"],
    # Storage's gossip dropped by a firewall rule that is not chaos: it does not know it lags.
    "cut_off": ["--max-lag-p95", "5"],
    # The blob store deleted late: the recent ratio sees it though the cumulative one dilutes it,
    # and its breach begins within the gate's `for` of the window's end.
    "store_lost_late": [],
}
EXPECTED = {
    "stall_from_start": ("consensus_stalled", None),
    "silent_node": ("reports_missing", "storage"),
    "regress_after_restart": ("committed_height_regressed", "storage"),
    "cut_off": ("consensus_lag_high", "storage"),
    "store_lost_late": ("distfs_recent_failure_ratio_high", "storage"),
}


def _plan(tmp: Path) -> Path:
    path = tmp / "restart-storage.json"
    path.write_text(json.dumps({"events": [{"id": "r", "at_sec": 5, "topology": "triad_distributed",
                                            "node": "storage", "action": "restart", "down_secs": 1}]}))
    return path


def _nft(*args: str) -> None:
    subprocess.run(["nft", *args], check=True, capture_output=True, timeout=10)


def _run_dir(run: SoakRun) -> Path | None:
    dirs = [p for p in run.out_dir.iterdir() if p.is_dir()] if run.out_dir.exists() else []
    return dirs[0] if dirs else None


def _when_running(run: SoakRun, timeout: float = 60) -> Path:
    """The run directory once the topology's window has begun (first progress line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = (run.out_dir / "runner.log").read_text(errors="replace")
        run_dir = _run_dir(run)
        if run_dir and "[triad_distributed 0:00" in log:
            return run_dir
        time.sleep(0.2)
    raise AssertionError(f"{run.name}: the window never began: {log[-2000:]}")


def start_blind_spots(tmp: Path) -> tuple[dict[str, SoakRun], Callable[[], None]]:
    """Start every case (side by side with the gate matrix's second batch: see its
    ``run_matrix``) and return them with the actions to take while they run (the firewall
    cut and the late store loss). The actions end with the firewall table deleted."""
    tmp.mkdir(parents=True, exist_ok=True)
    runs, bases = {}, {}
    for name, args in CASES.items():
        extra = ["--chaos-plan", str(_plan(tmp))] if name == "regress_after_restart" else []
        bases[name] = soak_ports()
        runs[name] = start_soak(name, tmp, bases[name], ["--topology", "triad_distributed",
                                                            "--duration-secs", str(DURATION), *extra, *args])

    def act() -> None:
        table = "blindspot_cut_off"
        try:
            _when_running(runs["cut_off"])
            port = bases["cut_off"] + STORAGE_GOSSIP_OFFSET
            _nft("add", "table", "inet", table)
            _nft("add", "chain", "inet", table, "out", "{ type filter hook output priority 0 ; policy accept ; }")
            for direction in ("dport", "sport"):
                _nft("add", "rule", "inet", table, "out", "oifname", "lo", "udp", direction, str(port), "drop")
            run_dir = _when_running(runs["store_lost_late"])
            time.sleep(DURATION - 32)  # the breach then begins about 10 s before the window's end
            for store in run_dir.glob("triad_distributed/nodes/storage/work/output/node-distfs/*/store"):
                for blob in store.iterdir():
                    if blob.name != "index.json":
                        blob.unlink() if blob.is_file() else shutil.rmtree(blob)
            for run in runs.values():
                run.wait(400)
        finally:
            subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, timeout=10)
    return runs, act


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_a_fault_that_used_to_pass_now_fails_its_gate(matrix_soaks: dict[str, SoakRun], case: str) -> None:
    run = matrix_soaks[case]
    gate_name, node = EXPECTED[case]
    gate = run.gates()[gate_name]
    assert gate["status"] == "fail", (case, gate, run.summary()["topologies"][0].get("notes"))
    if node:
        assert gate["worst_node"] == node, gate
    assert run.summary()["overall_status"] == "failed" and run.proc.returncode == 1
