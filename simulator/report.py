"""G1 epoch reports (``epoch-<N>.json``) and the G2 ``/v1/chain/status`` document.

Written like the real node: pretty-printed, with a plain (non-atomic) write.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from simulator.node import Node

REASON_KEYS = ("hash_mismatch", "missing_sample", "timeout", "read_io_error", "signature_invalid", "unknown")


def _consensus(node: Node) -> dict[str, Any]:
    h = node.committed_height
    eh, ehash, root = node.execution()
    return {
        "mode": "Pos", "slot": node.state.tick_count, "epoch": node.state.tick_count // 32,
        "latest_height": max(h, node.network_committed_height()), "committed_height": h,
        "last_committed_at_ms": node.state.last_committed_at_ms,
        "network_committed_height": node.network_committed_height(),
        "known_peer_heads": len(node.heads), "peer_heads": node.peer_heads(),
        "last_status": node.last_status, "last_block_hash": node.own_hash(h),
        "last_execution_height": eh, "last_execution_block_hash": ehash, "last_execution_state_root": root,
    }


def _distfs(node: Node, now_ms: int) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    c = node.state.distfs
    cursor = {
        "next_blob_cursor": c.cursor, "rounds_executed": c.rounds,
        "cumulative_total_checks": c.total, "cumulative_passed_checks": c.passed,
        "cumulative_failed_checks": c.failed, "cumulative_failure_reasons": dict(c.reasons),
        "consecutive_failure_rounds": 0, "backoff_until_unix_ms": 0,
        "last_probe_unix_ms": c.last_probe_ms, "cumulative_backoff_skipped_rounds": 0,
        "cumulative_backoff_applied_ms": 0, "last_backoff_duration_ms": 0,
        "last_backoff_reason": None, "last_backoff_multiplier": 0,
    }
    if node.store is None:
        return None, cursor
    t = node.last_tick
    proof = {"node_id": node.node_id, "sample_source": "LOCAL_STORE_INDEX", "sample_reference": t.last_reference,
             "failure_reason": t.last_reason, "proof_kind_hint": "chunk_hash:v1",
             "vrf_seed_hint": f"{node.world_id}:{node.node_id}:{now_ms}:{c.cursor}:0",
             "post_commitment_hint": node.own_hash(node.committed_height) or ""} if t.total else None
    tick = {"node_id": node.node_id, "world_id": node.world_id, "observed_at_unix_ms": now_ms,
            "total_checks": t.total, "passed_checks": t.passed, "failed_checks": t.failed,
            "failure_reasons": dict(t.reasons), "latest_proof_semantics": proof}
    return tick, cursor


def _network_challenge(world: str) -> dict[str, Any]:
    return {"mode": "fallback_local", "request_topic": f"aw.{world}.distfs.challenge.request",
            "proof_topic": f"aw.{world}.distfs.challenge.proof", "known_storage_targets": [],
            "issued_challenge_ids": [], "answered_challenge_ids": [], "accepted_proof_ids": [],
            "timed_out_challenge_ids": [], "probe_report": None}


def _transport(node: Node, world: str, attempts: int) -> dict[str, Any]:
    """Attempt counters count this process's epochs: they reset on restart, like the real node's."""
    leader = next((h for h in node.heads.values() if h.node_id.endswith("-sequencer")), None)
    leader_id = node.node_id if node.role == "sequencer" else (leader.node_id if leader else None)
    leader_at = node.state.last_committed_at_ms if node.role == "sequencer" else (
        leader.committed_at_ms if leader else None)
    return {"network_enabled": True, "settlement_topic": f"aw.{world}.reward.settlement",
            "should_publish_settlement": node.role == "sequencer", "settlement_leader_node_id": leader_id,
            "leader_last_commit_at_ms": leader_at, "leader_is_stale": False, "settlement_failover_enabled": True,
            "failover_publisher_node_id": None, "published_settlement_envelope_id": None,
            "applied_settlement_envelope_ids": [], "settlement_apply_attempts_this_tick": 0,
            "settlement_apply_failures_this_tick": 0, "settlement_apply_attempts_total": attempts,
            "settlement_apply_failures_total": 0, "settlement_apply_failure_ratio": 0.0,
            "observer_trace_threshold_met": True, "settlement_skipped_reason": None}


def _settlement(node_id: str, epoch: int) -> dict[str, Any]:
    return {"node_id": node_id, "obligation_met": True, "compute_score": 1.0, "storage_score": 0.0,
            "uptime_score": 1.0, "reliability_score": 1.0, "storage_reward_score": 0.0,
            "rewardable_storage_bytes": 0, "penalty_score": 0.0, "total_score": 0.55,
            "main_awarded_points": 340, "storage_awarded_points": 0, "awarded_points": 340,
            "cumulative_points": 340 * (epoch + 1)}


def _traces(node: Node, world: str) -> dict[str, Any]:
    observers = sorted([node.node_id, *node.heads])
    return {"network_enabled": True, "observation_topic": f"aw.{world}.reward.observation",
            "min_observer_traces": 1, "observer_trace_count_for_epoch": len(observers),
            "observer_nodes_for_epoch": observers, "applied_trace_ids_this_tick": [],
            "applied_observer_node_ids_this_tick": [], "applied_traces_this_tick": []}


def _reward_assets(nid: str, epoch: int, invariant_ok: bool) -> dict[str, Any]:
    """Balances and the invariant check over them; the fault makes the balance really wrong."""
    minted = 10 + epoch
    balance = minted + (0 if invariant_ok else 7)
    violations = [] if balance == minted else [
        {"code": "MINT_BALANCE_MISMATCH", "message": f"power credit balance {balance} != minted {minted} - burned 0"}]
    return {
        "node_balances": {nid: {"node_id": nid, "power_credit_balance": balance, "total_minted_credits": minted,
                                "total_burned_credits": 0}},
        "reward_asset_invariant_status": {"ok": not violations, "violation_count": len(violations)},
        "reward_asset_invariant_report": {"total_nodes": 1, "total_minted_credits": minted, "total_burned_credits": 0,
                                          "total_power_credit_balance": balance, "mint_record_count": epoch,
                                          "violations": violations},
    }


def epoch_report(reporter: Node, storage: Node | None, now_ms: int, invariant_ok: bool,
                 epochs_this_process: int) -> dict[str, Any]:
    """A full G1 document. In triad mode the one process hosts the storage node, so the
    sequencer's report carries that node's DistFS state (one report per process)."""
    dist_node = storage or reporter
    challenge, cursor = _distfs(dist_node, now_ms)
    epoch, nid, world = reporter.state.epoch_index, reporter.node_id, reporter.world_id
    executed = reporter.execution()
    return {
        "observed_at_unix_ms": now_ms,
        "node_snapshot": {"node_id": nid, "world_id": world, "role": reporter.role, "running": True,
                          "tick_count": reporter.state.tick_count, "last_tick_unix_ms": now_ms,
                          "last_error": reporter.last_error, "consensus": _consensus(reporter)},
        "distfs_challenge_report": challenge,
        "distfs_probe_config": {"max_sample_bytes": 65536, "challenges_per_tick": dist_node.challenges_per_tick,
                                "challenge_ttl_ms": 30000, "allowed_clock_skew_ms": 5000,
                                "adaptive_policy": {"max_checks_per_round": 4294967295,
                                                    "failure_backoff_base_ms": 0, "failure_backoff_max_ms": 0,
                                                    **{f"backoff_multiplier_{k}": 1 for k in REASON_KEYS}}},
        "distfs_probe_cursor_state": cursor,
        "distfs_network_challenge": _network_challenge(world) if challenge else None,
        "execution_bridge_state": {"last_applied_committed_height": executed[0],
                                   "last_execution_block_hash": executed[1], "last_execution_state_root": executed[2],
                                   "last_node_block_hash": reporter.own_hash(reporter.committed_height)},
        "execution_bridge_records": [],
        "settlement_report": {"epoch_index": epoch, "pool_points": 1000, "storage_pool_points": 0,
                              "distributed_points": 1000, "storage_distributed_points": 0,
                              "total_distributed_points": 1000, "settlements": [_settlement(nid, epoch)]},
        "minted_records": [],
        "reward_observation_traces": _traces(reporter, world),
        "reward_settlement_transport": _transport(reporter, world, epochs_this_process),
        "reserve": {"epoch_index": epoch, "available_power_units": 100000, "redeemed_power_units": 0},
        **_reward_assets(nid, epoch, invariant_ok),
    }


def write_report(path: Path, doc: dict[str, Any], partial: bool, slow_ms: int) -> Path:
    """Plain write like the real node (a reader may see a partial file)."""
    text = json.dumps(doc, indent=2).encode()
    with open(path, "wb") as fh:
        if partial or slow_ms:
            half = len(text) // 2
            fh.write(text[:half])
            fh.flush()
            time.sleep(max(slow_ms, 300 if partial else 0) / 1000)
            text = text[half:]
        fh.write(text)
    return path


def chain_status(node: Node, storage: Node | None, now_ms: int, invariant_ok: bool,
                 report_dir: Path) -> dict[str, Any]:
    c = (storage or node).state.distfs
    cons = _consensus(node)
    cons.pop("peer_heads")
    return {"ok": True, "observed_at_unix_ms": now_ms, "node_id": node.node_id, "world_id": node.world_id,
            "role": node.role, "running": True, "tick_count": node.state.tick_count,
            "last_tick_unix_ms": now_ms, "last_error": node.last_error, "consensus": cons,
            "reward_runtime": {"enabled": True, "metrics_available": True, "report_dir": str(report_dir),
                               "report_count": node.state.epoch_index,
                               "latest_epoch_index": max(0, node.state.epoch_index - 1),
                               "distfs_total_checks": c.total, "distfs_failed_checks": c.failed,
                               "distfs_failure_ratio": c.failed / c.total if c.total else 0.0,
                               "invariant_ok": invariant_ok, "last_error": None}}
