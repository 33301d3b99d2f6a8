"""soak-sim-g2 takes oasis7_chain_runtime's argv verbatim (the upstream script's, from G2.md),
enforces its parser's rules, serves /healthz, the HEAD-schema /v1/chain/status and
/v1/chain/balances, writes slim epoch files at the fixed path from every role, and keeps the
simulator's fault switches, all on real processes talking UDP and TCP on loopback."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import EXAMPLES, ROOT
from simulator import g2_cli
from simulator.flags import ParseError
from soakcore.errors import SoakError
from simulator.testing import G2Process, g2_script_argv, g2_triad, port_block, running, wait_until

# Objects whose keys are data (kinds, protocols, codes), not schema.
FREE_KEYS = {"by_kind", "by_protocol", "by_topic", "failure_by_code", "protocol_retry_cooldown_peers"}


def shape_problems(doc: Any, ref: Any, path: str = "$") -> list[str]:
    """Where ``doc`` differs from the example ``ref``: keys (and their order) at every level,
    JSON types (null matches anything the reference allows to be null, and vice versa)."""
    if ref is None or doc is None:
        return []
    if isinstance(ref, dict):
        if not isinstance(doc, dict):
            return [f"{path}: expected object"]
        if path.rsplit(".", 1)[-1] in FREE_KEYS:
            return []
        if list(doc) != list(ref):
            return [f"{path}: keys {list(doc)} != {list(ref)}"]
        return [p for k in ref for p in shape_problems(doc[k], ref[k], f"{path}.{k}")]
    if isinstance(ref, list):
        if not isinstance(doc, list):
            return [f"{path}: expected list"]
        return shape_problems(doc[0], ref[0], f"{path}[0]") if doc and ref else []
    kinds = (bool,) if isinstance(ref, bool) else (int,) if isinstance(ref, int) else (type(ref),)
    if isinstance(ref, float):
        kinds = (float, int)
    if not isinstance(doc, kinds) or (isinstance(doc, bool) and bool not in kinds):
        return [f"{path}: {type(doc).__name__} where the example has {type(ref).__name__}"]
    return []


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


def test_the_upstream_scripts_argv_for_every_role_parses() -> None:
    for role in ("sequencer", "storage", "observer"):
        opts = g2_cli.parse(g2_script_argv(5610, role))
        assert opts["node_role"] == role and opts["status_addr"] == ("127.0.0.1", 5631 + ("sequencer", "storage",
                                                                                         "observer").index(role))
        assert len(opts["node_validator"]) == 3 and len(opts["node_gossip_peer"]) == 2
        assert opts["reward_runtime_epoch_duration_secs"] == 60 and opts["reward_runtime_enabled"]


def test_the_g2_md_argv_block_names_only_flags_the_simulator_knows() -> None:
    text = (EXAMPLES / "G2.md").read_text()
    block = text[text.index("target/debug/oasis7_chain_runtime"):]
    block = block[:block.index("```")]
    flags = {w.strip("()[") for w in block.split() if w.strip("()[").startswith("--")}
    assert flags and flags <= set(g2_cli.FLAGS), flags - set(g2_cli.FLAGS)


VALID = g2_script_argv(5610, "storage")


@pytest.mark.parametrize("argv, message", [
    ([*VALID, "--topology", "triad"], "unknown option: --topology"),
    ([*VALID, "--bind", "127.0.0.1:1"], "unknown option: --bind"),
    ([*VALID, "--node-id"], "--node-id requires a value"),
    ([*VALID, "--node-id", "  "], "--node-id requires a non-empty value"),
    ([*VALID, "--node-role", "boss"], "--node-role must be one of: sequencer, storage, observer"),
    ([*VALID, "--status-bind", "5121"], "--status-bind must be in <host:port> format"),
    ([*VALID, "--status-bind", ":5121"], "--status-bind host cannot be empty"),
    ([*VALID, "--status-bind", "127.0.0.1:http"], "--status-bind port must be an integer in 1..=65535"),
    ([*VALID, "--status-bind", "127.0.0.1:0"], "--status-bind port must be in 1..=65535"),
    ([*VALID, "--node-gossip-bind", "localhost:5611"], "--node-gossip-bind requires <addr:port>"),
    ([*VALID, "--node-tick-ms", "0"], "--node-tick-ms requires a positive integer"),
    ([*VALID, "--pos-proposal-tick-phase", "10"], "--pos-proposal-tick-phase=10 must be less than "
                                                   "--pos-ticks-per-slot=10"),
    ([*VALID, "--node-validator", "a:0"], "--node-validator stake must be a positive integer"),
    ([*VALID, "--reward-runtime-epoch-duration-secs", "0"],
     "--reward-runtime-epoch-duration-secs requires a positive integer"),
    (["--node-gossip-peer", "127.0.0.1:1"], "--node-gossip-peer requires --node-gossip-bind"),
])
def test_each_rule_of_the_real_parser_is_enforced_with_its_message(argv: list[str], message: str) -> None:
    with pytest.raises(ParseError) as err:
        g2_cli.parse(argv)
    assert str(err.value) == message


def test_a_validator_id_may_contain_colons_the_stake_is_after_the_last() -> None:
    assert g2_cli.parse(["--node-validator", "a:b:30"])["node_validator"] == [("a:b", 30)]


def run_g2(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simulator.g2", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=30, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_an_unknown_flag_prints_the_help_and_exits_1_and_help_anywhere_exits_0(tmp_path: Path) -> None:
    res = run_g2([*VALID, "--no-such-flag"], tmp_path)
    assert (res.returncode, res.stderr.strip()) == (1, "unknown option: --no-such-flag")
    assert res.stdout.startswith("Usage: oasis7_chain_runtime")
    assert list(tmp_path.iterdir()) == []
    res = run_g2([*VALID, "--no-such-flag", "--help"], tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("Usage: oasis7_chain_runtime")


def test_startup_errors_exit_1(tmp_path: Path) -> None:
    base = port_block(44)
    res = run_g2([*g2_script_argv(base, "storage"), "--replication-network-peer", "127.0.0.1:5"], tmp_path)
    assert res.returncode == 1 and "invalid --replication-network-peer 127.0.0.1:5" in res.stderr


@pytest.fixture(scope="module")
def triad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, G2Process]]:
    procs = g2_triad(tmp_path_factory.mktemp("g2"), port_block(44))
    with running(procs):
        yield procs


def test_status_has_the_head_schema_with_lowercase_last_status(triad: dict[str, G2Process]) -> None:
    wait_until(lambda: all(p.height() > 3 for p in triad.values()), 10, "all commit")
    ref = example("g2-chain-status-head.json")
    # Each node dials its peers once a second: on a loaded machine the second link may lag.
    wait_until(lambda: all(len(p.status()["replication"]["connected_peers"]) == 2 for p in triad.values()), 20,
               "both replication peers connected on every node")
    for role, p in triad.items():
        doc = p.status()
        assert shape_problems(doc, ref) == [], role
        assert doc["consensus"]["last_status"] == "committed"
        assert doc["role"] == role and doc["running"] is True
        assert doc["consensus"]["known_peer_heads"] == 2
        assert len(doc["replication"]["connected_peers"]) == 2
        executes = role == "sequencer"   # only the sequencer executes blocks
        assert (doc["consensus"]["last_execution_state_root"] is not None) == executes
    seq = triad["sequencer"].status()
    assert seq["consensus"]["recent_finality_latency"]["sample_count"] > 0


def test_healthz_balances_and_the_other_routes(triad: dict[str, G2Process]) -> None:
    p = triad["observer"]
    assert p.get("/healthz") == {"ok": True}
    bal = p.get("/v1/chain/balances")
    assert list(bal) == ["ok", "observed_at_unix_ms", "node_id", "world_id", "execution_world_dir", "load_error",
                         "node_asset_balance", "node_power_credit_balance", "node_main_token_account",
                         "node_main_token_liquid_balance", "reward_mint_record_count", "recent_reward_mint_records"]
    for method, path, code in (("GET", "/nope", 404), ("POST", "/v1/chain/status", 405)):
        req = urllib.request.Request(f"http://127.0.0.1:{p.status_port}{path}", method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=2)
        assert err.value.code == code


def test_every_role_writes_slim_epoch_files_at_the_fixed_path(triad: dict[str, G2Process]) -> None:
    wait_until(lambda: all(len(p.reports()) >= 2 for p in triad.values()), 10, "two reports per node")
    ref = example("g2-storage-epoch-7.json")
    for role, p in triad.items():
        docs = p.reports()
        assert [d["settlement_report"]["epoch_index"] for d in docs] == list(range(len(docs)))
        assert shape_problems(docs[-1], ref) == [], role
        assert docs[-1]["node_snapshot"]["consensus"]["last_status"] == "Committed"   # capitalised in files
        status = p.status()["reward_runtime"]
        assert status["report_dir"] == f"output/chain-runtime/{p.node_id}/reward-runtime-report"
        assert (p.work / status["report_dir"]).is_dir()
    assert triad["storage"].reports()[-1]["distfs"]["total_checks"] > 0
    assert triad["sequencer"].reports()[-1]["distfs"]["total_checks"] == 0   # probes run on storage only


def test_a_restart_resets_the_process_counters_but_not_the_epoch_index(triad: dict[str, G2Process]) -> None:
    p = triad["storage"]
    wait_until(lambda: p.status()["reward_runtime"]["report_count"] >= 2, 10, "two reports")
    before = p.status()["reward_runtime"]
    assert p.stop() == 0
    p.start().wait_ready()
    after = p.status()["reward_runtime"]
    assert after["report_count"] == 0 and after["distfs_total_checks"] < before["distfs_total_checks"]
    wait_until(lambda: p.status()["reward_runtime"]["report_count"] >= 1, 10, "a report after the restart")
    assert p.reports()[-1]["settlement_report"]["epoch_index"] > before["latest_epoch_index"]
    assert p.reports()[-1]["reward_settlement_transport"]["settlement_apply_attempts_total"] == 1


def test_nodes_with_different_root_keys_do_not_follow_the_sequencer(tmp_path: Path) -> None:
    procs = g2_triad(tmp_path, port_block(44), shared_key=False)
    with running(procs):
        wait_until(lambda: procs["sequencer"].height() > 10, 10, "the sequencer commits")
        assert procs["storage"].height() == 0 and procs["observer"].height() == 0


def test_fault_switches_work_in_g2(tmp_path: Path) -> None:
    procs = g2_triad(tmp_path, port_block(44), extra={
        "sequencer": ["--fault-replication-down-at-sec", "2", "--fault-finality-delay-ms", "500"],
        "storage": ["--fault-distfs-fail-ratio", "1", "--fault-distfs-fail-reason", "HASH_MISMATCH",
                    "--fault-last-error-at-sec", "1", "--fault-invariant-at-sec", "1"],
        "observer": ["--fault-crash-at-sec", "4", "--fault-crash-code", "7"]})
    with running(procs):
        sto = procs["storage"]
        wait_until(lambda: sto.status()["observability"]["status"] == "critical", 10, "critical alert")
        doc = sto.status()
        codes = {a["code"] for a in doc["observability"]["alerts"]}
        assert {"runtime_last_error", "storage_degraded"} <= codes
        assert doc["storage"]["degraded_reason"] == doc["last_error"] is not None
        assert doc["reward_runtime"]["invariant_ok"] is False
        assert doc["reward_runtime"]["distfs_failed_checks"] == doc["reward_runtime"]["distfs_total_checks"] > 0
        wait_until(lambda: sto.reports() and sto.reports()[-1]["distfs"]["failed_checks"] > 0, 10, "failing probes")
        # The sequencer's replication listener closes: the others lose it as a connected peer.
        seq_peer = "/ip4/127.0.0.1/tcp/%d" % (procs["sequencer"].gossip_port + 40)
        wait_until(lambda: "replication_peer_health_degraded" in
                   {a["code"] for a in sto.status()["observability"]["alerts"]}, 10, "replication degraded")
        assert len(sto.status()["replication"]["connected_peers"]) <= 1, seq_peer
        lat = procs["sequencer"].status()["consensus"]["recent_finality_latency"]
        assert lat["p95_latency_ms"] >= 500
        obs = procs["observer"].proc
        assert obs is not None and obs.wait(10) == 7


def test_status_is_ready_before_the_first_tick_completes(tmp_path: Path) -> None:
    """/healthz answers at once; /v1/chain/status is served with running true from the start."""
    procs = g2_triad(tmp_path, port_block(44))
    p = procs["sequencer"].start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if p.get("/healthz") == {"ok": True}:
                    break
            except SoakError:   # not listening yet
                time.sleep(0.05)
        assert p.get("/v1/chain/status")["running"] is True
    finally:
        p.stop()


def test_g2_faults_behind_the_g2_gates_and_the_status_fields_they_read(tmp_path: Path) -> None:
    """State-root divergence (the same executed block re-run with a new root), replication down
    (no connected peer, the others lose it), and real values in the fields the gates read."""
    procs = g2_triad(tmp_path, port_block(44), extra={
        "sequencer": ["--fault-state-root-diverge-at-sec", "2"],
        "observer": ["--fault-replication-down-at-sec", "3"]})
    with running(procs):
        seq, sto, obs = procs["sequencer"], procs["storage"], procs["observer"]
        wait_until(lambda: sto.status()["traffic"]["libp2p_replication"]["totals"]["inbound"]["messages"] > 0, 10,
                   "replication fetches")
        wait_until(lambda: sto.status()["storage"]["last_gc_result"] == "success", 10, "a GC pass")
        assert sto.status()["storage"]["orphan_blob_count"] == 0
        # divergence: execution stays on one block, its state root changes, commits go on
        wait_until(lambda: seq.height() - seq.status()["consensus"]["last_execution_height"] > 5, 10, "execution held")
        a = seq.status()["consensus"]
        time.sleep(0.5)
        b = seq.status()["consensus"]
        assert a["last_execution_height"] == b["last_execution_height"] > 0
        assert a["last_execution_block_hash"] == b["last_execution_block_hash"] is not None
        assert a["last_execution_state_root"] != b["last_execution_state_root"]
        # replication down: the observer has no connected peer; the others keep one
        wait_until(lambda: obs.status()["observability"]["connected_peer_count"] == 0, 10, "observer alone")
        codes = {a["code"] for a in obs.status()["observability"]["alerts"]}
        assert "replication_no_connected_peers" in codes, codes
        wait_until(lambda: sto.status()["observability"]["connected_peer_count"] == 1, 10, "storage loses it")
        # a paused node misses ticks of the PoS clock (1.2 s each here)
        sto.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        time.sleep(3)
        sto.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        wait_until(lambda: sto.status()["consensus"]["missed_tick_count"] >= 1, 10, "missed ticks")
