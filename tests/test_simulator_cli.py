"""soak-sim's flags fail fast with a clear message, and the report validator matches the real
example documents (and rejects what the real format does not allow)."""
from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.schema import report_problems, status_problems

ROOT = Path(__file__).resolve().parent.parent
VALID = ["triad_p2p_bootstrap", "--topology", "triad_distributed", "--node-role", "storage", "--node-id", "n",
         "--bind", "127.0.0.1:1", "--triad-sequencer-gossip", "127.0.0.1:2", "--triad-storage-gossip", "127.0.0.1:3",
         "--no-llm"]


def run_sim(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simulator", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=30, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("args, message", [
    ([*VALID, "--no-such-flag"], "unexpected argument: --no-such-flag"),
    ([*VALID, "--fault-leak", "5"], "unexpected argument: --fault-leak"),
    ([*VALID[:-5], "--triad-sequencer-gossip", "localhost:2", *VALID[-3:]],
     "--triad-sequencer-gossip requires a valid <addr:port>, got: localhost:2"),
    ([*VALID, "--triad-storage-gossip", "127.0.0.1:99999"], "--triad-storage-gossip requires a valid <addr:port>"),
    ([*VALID, "--node-tick-ms", "fast"], "--node-tick-ms requires a positive integer"),
    ([*VALID, "--topology", "ring"], "--topology must be one of: single, triad, triad_distributed"),
    ([*VALID, "--fault-distfs-fail-reason", "BAD"], "--fault-distfs-fail-reason: must be one of"),
    ([*VALID, "--fault-distfs-fail-ratio", "1.5"], "--fault-distfs-fail-ratio: must be within 0..1"),
    ([*VALID, "--fault-distfs-fail-ratio", "nan"], "--fault-distfs-fail-ratio: must be a finite number"),
    ([*VALID, "--fault-crash-code", "0"], "--fault-crash-code: must be an exit code 1..255"),
    ([*VALID, "--node-id", "../up"], "invalid node id '../up'"),
    ([*VALID, "--reward-runtime-epoch-duration-secs", "0.5"],
     "--reward-runtime-epoch-duration-secs requires a positive integer"),
    (VALID[:9] + VALID[11:], "--topology triad_distributed with --node-role storage requires --triad-sequencer-gossip"),
])
def test_a_bad_flag_exits_1_at_once_with_the_real_nodes_line_and_the_help(args: list[str], message: str,
                                                                          tmp_path: Path) -> None:
    res = run_sim(args, tmp_path)
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip().splitlines() == [message] or message in res.stderr.strip()
    assert len(res.stderr.strip().splitlines()) == 1
    assert res.stdout.startswith("Usage: world_viewer_live")
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_a_gossip_port_in_use_exits_1_naming_the_flag_and_port(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        args = [*VALID[:-3], "--triad-storage-gossip", f"127.0.0.1:{port}", "--no-llm"]
        res = run_sim(args, tmp_path)
    assert res.returncode == 1
    assert f"soak-sim: error: --triad-storage-gossip 127.0.0.1:{port} (n-storage): Address already in use" \
        in res.stderr


def load(examples_dir: Path, name: str) -> dict:
    return json.loads((examples_dir / name).read_text())


@pytest.mark.parametrize("name", ["g1-sequencer-epoch-3.json", "g1-storage-epoch-3.json"])
def test_the_real_g1_examples_pass_the_report_validator(examples_dir: Path, name: str) -> None:
    assert report_problems(load(examples_dir, name)) == []


def test_the_real_g2_status_example_passes_the_status_validator(examples_dir: Path) -> None:
    assert status_problems(load(examples_dir, "g2-chain-status.json")) == []


def test_the_slim_g2_epoch_file_is_not_a_g1_report(examples_dir: Path) -> None:
    problems = report_problems(load(examples_dir, "g2-storage-epoch-7.json"))
    assert "$.reward_asset_invariant_status: missing" in problems


def test_the_validator_names_missing_fields_and_wrong_types(examples_dir: Path) -> None:
    doc = load(examples_dir, "g1-storage-epoch-3.json")
    bad = copy.deepcopy(doc)
    del bad["node_snapshot"]["consensus"]["peer_heads"][0]["block_hash"]
    bad["reward_asset_invariant_status"]["ok"] = 1
    bad["distfs_probe_cursor_state"]["cumulative_total_checks"] = True
    bad["distfs_probe_cursor_state"]["cumulative_failure_reasons"]["TIMEOUT"] = "2"
    assert report_problems(bad) == [
        "$.node_snapshot.consensus.peer_heads[0].block_hash: missing",
        "$.distfs_probe_cursor_state.cumulative_total_checks: expected int, got bool",
        "$.distfs_probe_cursor_state.cumulative_failure_reasons.TIMEOUT: expected int, got str",
        "$.reward_asset_invariant_status.ok: expected bool, got int",
    ]
