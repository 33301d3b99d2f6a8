"""The conformance stand-ins (tests/standins/) accept the argv sets of FORMATS.md and G2.md,
reject each rule's violation with the real exit code (1) and one line, record every argv, and
run the simulator behind the same argv, so the runner can be pointed at them as --node-bin."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import EXAMPLES, ROOT
from simulator.testing import COMMON, ROLES, g2_script_argv, port_block, wait_until

STANDINS = ROOT / "tests" / "standins"
G1 = STANDINS / "world_viewer_live"
G2 = STANDINS / "oasis7_chain_runtime"
H = "127.0.0.1"


def run(binary: Path, argv: list[str], tmp_path: Path, check_only: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "SOAK_STANDIN_ARGV_LOG": str(tmp_path / "argv.jsonl")}
    if check_only:
        env["SOAK_STANDIN_CHECK_ONLY"] = "1"
    return subprocess.run([str(binary), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=30, env=env)


def logged(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]


def test_the_stand_ins_are_executable_scripts() -> None:
    for binary in (G1, G2):
        assert os.access(binary, os.X_OK) and binary.read_text().startswith("#!/usr/bin/env python3")


def g1_old_script(topology: str, role: str | None, base: int = 5610, star: bool = True) -> list[str]:
    """FORMATS.md: `world_viewer_live <scenario> --no-llm --reward-runtime-enable
    --reward-runtime-report-dir <dir> [--reward-runtime-epoch-duration-secs N] --node-tick-ms 200`
    with the old script's ports (triad --bind case_base+10; distributed gossip +1..+3, --bind +11..+13)."""
    argv = ["triad_p2p_bootstrap", "--no-llm", "--reward-runtime-enable", "--reward-runtime-report-dir", "r",
            "--reward-runtime-epoch-duration-secs", "30", "--node-tick-ms", "200", "--topology", topology]
    if topology == "triad":
        return [*argv, "--node-id", "n", "--bind", f"{H}:{base + 10}", "--triad-gossip-base-port", str(base + 1)]
    i = ROLES.index(role or "")
    argv += ["--node-role", role or "", "--node-id", "n", "--bind", f"{H}:{base + 11 + i}",
             "--triad-sequencer-gossip", f"{H}:{base + 1}"]
    for j, r in enumerate(ROLES[1:], start=1):
        if not star or r == role:
            argv += [f"--triad-{r}-gossip", f"{H}:{base + 1 + j}"]
    return argv


@pytest.mark.parametrize("argv", [
    g1_old_script("triad", None), g1_old_script("triad", None)[:-2],   # the default base port too
    *(g1_old_script("triad_distributed", r) for r in ROLES),
    *(g1_old_script("triad_distributed", r, star=False) for r in ROLES),
    [],                                                                  # every default
])
def test_g1_valid_argv_sets_from_formats_md_pass(argv: list[str], tmp_path: Path) -> None:
    res = run(G1, argv, tmp_path)
    assert res.returncode == 0, res.stderr
    assert logged(tmp_path) == [{"prog": "world_viewer_live", "argv": argv, "cwd": str(tmp_path), "verdict": "ok",
                                 "error": None}]


TD = ["x", "--topology", "triad_distributed"]


@pytest.mark.parametrize("argv, message", [
    (["x", "--triad-sequencer-gossip", f"{H}:1"], "--triad-*-gossip is only supported in --topology triad_distributed"),
    (["x", "--node-role", "sequencer"], "--node-role is only supported in --topology single"),
    (["x", "--triad-gossip-base-port", "65534"], "--triad-gossip-base-port requires an integer in [1, 65533]"),
    (["x", "--topology", "mesh"], "--topology must be one of: single, triad, triad_distributed"),
    ([*TD, "--node-role", "storage", "--triad-storage-gossip", f"{H}:2"],
     "--topology triad_distributed with --node-role storage requires --triad-sequencer-gossip <addr:port>"),
    ([*TD, "--triad-sequencer-gossip", f"{H}:2"],
     "--topology triad_distributed with --node-role observer requires --triad-observer-gossip <addr:port>"),
    ([*TD, "--node-role", "sequencer"],
     "--topology triad_distributed with --node-role sequencer requires --triad-sequencer-gossip <addr:port>"),
    ([*TD, "--node-role", "storage", "--triad-sequencer-gossip", f"{H}:2", "--triad-storage-gossip", f"{H}:2"],
     "--topology triad_distributed requires --triad-storage-gossip distinct from --triad-sequencer-gossip"),
    ([*TD, "--triad-sequencer-gossip", f"{H}:2", "--triad-observer-gossip", f"{H}:2"],
     "--topology triad_distributed requires --triad-observer-gossip distinct from --triad-sequencer-gossip"),
    ([*TD, "--triad-sequencer-gossip", "localhost:2"], "--triad-sequencer-gossip requires a valid <addr:port>, got: "
                                                       "localhost:2"),
    (["x", "--reward-runtime-epoch-duration-secs", "0.5"],
     "--reward-runtime-epoch-duration-secs requires a positive integer"),
    (["x", "--node-tick-ms", "0"], "--node-tick-ms requires a positive integer"),
    (["x", "--seed", "1"], "unexpected argument: --seed"),    # simulator-only flags are not the real node's
    (["x", "--bind"], "--bind requires a value"),
])
def test_g1_each_rule_is_rejected_with_exit_1(argv: list[str], message: str, tmp_path: Path) -> None:
    res = run(G1, argv, tmp_path)
    assert (res.returncode, res.stderr.strip()) == (1, message)
    assert res.stdout.startswith("Usage: world_viewer_live")
    assert logged(tmp_path)[0]["verdict"] == "rejected"


@pytest.mark.parametrize("role", ROLES)
def test_g2_the_scripts_argv_from_g2_md_passes(role: str, tmp_path: Path) -> None:
    argv = g2_script_argv(5610, role)
    res = run(G2, argv, tmp_path)
    assert res.returncode == 0, res.stderr
    assert logged(tmp_path)[0]["argv"] == argv


def test_g2_the_stand_in_knows_every_flag_of_the_g2_md_argv_block(tmp_path: Path) -> None:
    text = (EXAMPLES / "G2.md").read_text()
    block = text[text.index("target/debug/oasis7_chain_runtime"):]
    flags = {w.strip("()[") for w in block[:block.index("```")].split() if w.strip("()[").startswith("--")}
    for flag in sorted(flags):
        res = run(G2, [flag], tmp_path)
        assert "unknown option" not in res.stderr, flag


VALID = g2_script_argv(5610, "observer")


@pytest.mark.parametrize("argv, message", [
    ([*VALID, "--topology", "triad"], "unknown option: --topology"),
    ([*VALID, "--bind", f"{H}:1"], "unknown option: --bind"),
    ([*VALID, "--triad-sequencer-gossip", f"{H}:1"], "unknown option: --triad-sequencer-gossip"),
    ([*VALID, "--reward-runtime-report-dir", "r"], "unknown option: --reward-runtime-report-dir"),
    ([*VALID, "--world-id"], "--world-id requires a value"),
    ([*VALID, "--node-id", " "], "--node-id requires a non-empty value"),
    ([*VALID, "--status-bind", "5121"], "--status-bind must be in <host:port> format"),
    ([*VALID, "--status-bind", ":5121"], "--status-bind host cannot be empty"),
    ([*VALID, "--status-bind", f"{H}:0"], "--status-bind port must be in 1..=65535"),
    ([*VALID, "--status-bind", f"{H}:x"], "--status-bind port must be an integer in 1..=65535"),
    ([*VALID, "--pos-proposal-tick-phase", "10"], "--pos-proposal-tick-phase=10 must be less than "
                                                   "--pos-ticks-per-slot=10"),
    (["--node-gossip-peer", f"{H}:1"], "--node-gossip-peer requires --node-gossip-bind"),
    ([*VALID, "--node-gossip-bind", "localhost:1"], "--node-gossip-bind requires <addr:port>"),
    ([*VALID, "--node-role", "viewer"], "--node-role must be one of: sequencer, storage, observer"),
    ([*VALID, "--node-validator", "a:0"], "--node-validator stake must be a positive integer"),
    ([*VALID, "--node-tick-ms", "-1"], "--node-tick-ms requires a positive integer"),
    ([*VALID, "--replication-network-peer", f"{H}:5651"], f"invalid --replication-network-peer {H}:5651"),
    ([*VALID, "--node-validator-signer-public-key", "ghost:ab"],
     "--node-validator-signer-public-key names validator ghost that is not in the validator set"),
])
def test_g2_each_rule_is_rejected_with_exit_1(argv: list[str], message: str, tmp_path: Path) -> None:
    res = run(G2, argv, tmp_path)
    assert (res.returncode, res.stderr.strip()) == (1, message)
    assert res.stdout.startswith("Usage: oasis7_chain_runtime")


def test_g2_help_anywhere_exits_0(tmp_path: Path) -> None:
    res = run(G2, ["--bogus", "--help"], tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("Usage: oasis7_chain_runtime")


def test_behind_the_stand_ins_the_simulators_really_run(tmp_path: Path) -> None:
    """G1 triad_distributed and G2 nodes launched through the stand-ins commit and report."""
    base = port_block(50)
    env = {"PATH": "/usr/bin:/bin", "SOAK_STANDIN_ARGV_LOG": str(tmp_path / "argv.jsonl")}
    procs = []
    try:
        for i, role in enumerate(ROLES):
            work = tmp_path / f"g1-{role}"
            work.mkdir()
            argv = [*COMMON, "--topology", "triad_distributed", "--node-role", role, "--node-id", "c",
                    "--bind", f"{H}:{base + 4 + i}", "--reward-runtime-report-dir", "report",
                    *(a for r in ROLES for a in (f"--triad-{r}-gossip", f"{H}:{base + 1 + ROLES.index(r)}"))]
            procs.append(subprocess.Popen([str(G1), *argv], cwd=work, env=env, stderr=subprocess.PIPE))
        key = os.urandom(32).hex()
        for role in ROLES:
            work = tmp_path / f"g2-{role}"
            work.mkdir()
            (work / "config.toml").write_text(f'[node]\nprivate_key = "{key}"\n')
            argv = g2_script_argv(base, role, epoch_secs=1, tick_ms=100)
            moved = {f"{H}:{base + 1 + j}": f"{H}:{base + 7 + j}" for j in range(3)}
            argv = [moved.get(a, a) for a in argv]   # G2 gossip on +7..+9, apart from G1's +1..+3
            procs.append(subprocess.Popen([str(G2), *argv], cwd=work, env={**env, "SOAK_STANDIN_SIM_ARGS": "[]"},
                                          stderr=subprocess.PIPE))
        g1_reports = [tmp_path / f"g1-{r}" / "report" for r in ROLES]
        g2_reports = [tmp_path / f"g2-{r}" / "output" / "chain-runtime" / f"soak-triad-20260521-101500-{r}" /
                      "reward-runtime-report" for r in ROLES]

        def reported() -> bool:
            for p in procs:
                if p.poll() is not None:
                    raise AssertionError(p.stderr.read().decode() if p.stderr else "exited")
            return all(len(list(d.glob("epoch-*.json"))) >= 2 for d in [*g1_reports, *g2_reports])
        wait_until(reported, 15, "reports from all six nodes")
        last = json.loads(sorted(g2_reports[1].glob("epoch-*.json"))[0].read_text())
        assert last["node_snapshot"]["consensus"]["committed_height"] > 0   # the storage node follows
        assert [e["verdict"] for e in logged(tmp_path)] == ["ok"] * 6
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            assert p.wait(10) == 0
