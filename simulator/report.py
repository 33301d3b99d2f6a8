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


def _consensus(node: Node, now_ms: int) -> dict[str, Any]:
    h = node.committed_height
    return {
        "mode": "Pos", "slot": node.state.tick_count, "epoch": node.state.tick_count // 32,
        "latest_height": max(h, node.network_committed_height()), "committed_height": h,
        "last_committed_at_ms": node.state.last_committed_at_ms,
        "network_committed_height": node.network_committed_height(),
        "known_peer_heads": len(node.heads), "peer_heads": node.peer_heads(),
        "last_status": node.last_status, "last_block_hash": node.own_hash(h),
        "last_execution_height": h, "last_execution_block_hash": node.own_hash(h),
        "last_execution_state_root": node.own_hash(h),
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
    tick = {"node_id": node.node_id, "world_id": node.world_id, "observed_at_unix_ms": now_ms,
            "total_checks": node.challenges_per_tick, "passed_checks": node.challenges_per_tick,
            "failed_checks": 0, "failure_reasons": {}, "latest_proof_semantics": None}
    return tick, cursor


def epoch_report(reporter: Node, storage: Node | None, now_ms: int, invariant_ok: bool) -> dict[str, Any]:
    """A full G1 document. In triad mode the sequencer reports the storage node's DistFS."""
    dist_node = storage or reporter
    challenge, cursor = _distfs(dist_node, now_ms)
    epoch, nid, world = reporter.state.epoch_index, reporter.node_id, reporter.world_id
    violations = [] if invariant_ok else [{"code": "MINT_BALANCE_MISMATCH",
                                           "message": "power credit balance != minted - burned"}]
    balance = {"node_id": nid, "power_credit_balance": 10 + epoch + (0 if invariant_ok else 7),
               "total_minted_credits": 10 + epoch, "total_burned_credits": 0}
    return {
        "observed_at_unix_ms": now_ms,
        "node_snapshot": {"node_id": nid, "world_id": world, "role": reporter.role, "running": True,
                          "tick_count": reporter.state.tick_count, "last_tick_unix_ms": now_ms,
                          "last_error": reporter.last_error, "consensus": _consensus(reporter, now_ms)},
        "distfs_challenge_report": challenge,
        "distfs_probe_config": {"max_sample_bytes": 65536, "challenges_per_tick": dist_node.challenges_per_tick,
                                "challenge_ttl_ms": 30000, "allowed_clock_skew_ms": 5000,
                                "adaptive_policy": {"max_checks_per_round": 4294967295,
                                                    "failure_backoff_base_ms": 0, "failure_backoff_max_ms": 0,
                                                    **{f"backoff_multiplier_{k}": 1 for k in REASON_KEYS}}},
        "distfs_probe_cursor_state": cursor,
        "distfs_network_challenge": None,
        "execution_bridge_state": {"last_applied_committed_height": reporter.committed_height,
                                   "last_execution_block_hash": reporter.own_hash(reporter.committed_height),
                                   "last_execution_state_root": reporter.own_hash(reporter.committed_height),
                                   "last_node_block_hash": reporter.own_hash(reporter.committed_height)},
        "execution_bridge_records": [],
        "settlement_report": {"epoch_index": epoch, "pool_points": 1000, "storage_pool_points": 0,
                              "distributed_points": 1000, "storage_distributed_points": 0,
                              "total_distributed_points": 1000, "settlements": []},
        "minted_records": [],
        "reward_observation_traces": {"network_enabled": True, "observation_topic": f"aw.{world}.reward.observation",
                                      "min_observer_traces": 1, "observer_trace_count_for_epoch": len(reporter.heads) + 1,
                                      "observer_nodes_for_epoch": sorted([nid, *reporter.heads]),
                                      "applied_trace_ids_this_tick": [], "applied_observer_node_ids_this_tick": [],
                                      "applied_traces_this_tick": []},
        "reward_settlement_transport": {"network_enabled": True, "settlement_topic": f"aw.{world}.reward.settlement",
                                        "settlement_apply_attempts_total": epoch, "settlement_apply_failures_total": 0,
                                        "settlement_apply_failure_ratio": 0.0},
        "node_balances": {nid: balance},
        "reserve": {"epoch_index": epoch, "available_power_units": 100000, "redeemed_power_units": 0},
        "reward_asset_invariant_status": {"ok": invariant_ok, "violation_count": len(violations)},
        "reward_asset_invariant_report": {"total_nodes": 1, "total_minted_credits": balance["total_minted_credits"],
                                          "total_burned_credits": 0,
                                          "total_power_credit_balance": balance["power_credit_balance"],
                                          "mint_record_count": epoch, "violations": violations},
    }


def write_report(report_dir: Path, doc: dict[str, Any], partial: bool, slow_ms: int) -> Path:
    """Plain write like the real node (a reader may see a partial file)."""
    path = report_dir / f"epoch-{doc['settlement_report']['epoch_index']}.json"
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


def chain_status(node: Node, storage: Node | None, now_ms: int, invariant_ok: bool, report_dir: Path) -> dict[str, Any]:
    c = (storage or node).state.distfs
    cons = _consensus(node, now_ms)
    cons.pop("peer_heads")
    return {"ok": True, "observed_at_unix_ms": now_ms, "node_id": node.node_id, "world_id": node.world_id,
            "role": node.role, "running": True, "tick_count": node.state.tick_count,
            "last_tick_unix_ms": now_ms, "last_error": node.last_error, "consensus": cons,
            "reward_runtime": {"enabled": True, "metrics_available": True, "report_dir": str(report_dir),
                               "report_count": node.state.epoch_index, "latest_epoch_index": node.state.epoch_index - 1,
                               "distfs_total_checks": c.total, "distfs_failed_checks": c.failed,
                               "distfs_failure_ratio": c.failed / c.total if c.total else 0.0,
                               "invariant_ok": invariant_ok, "last_error": None}}
