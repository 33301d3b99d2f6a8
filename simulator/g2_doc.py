"""oasis7_chain_runtime's documents: ``GET /v1/chain/status`` (the HEAD schema, keys in the
serializer's order, ``consensus.last_status`` lowercase), ``/v1/chain/balances`` and the slim
epoch file (``last_status`` capitalised there). Field lists: G2.md sections 2-3 and
tests/fixtures/agent_world/g2-chain-status-head.json.

Blocks the simulator has nothing to say about (p2p, wasm, transactions) are the dev_local
defaults of the example; everything a gate or a dashboard reads is computed from real state.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.net import Traffic
from simulator.node import Node

BUCKETS = ("le_0001_ms", "le_0005_ms", "le_0010_ms", "le_0025_ms", "le_0050_ms", "le_0100_ms", "le_0250_ms",
           "le_0500_ms", "le_1000_ms", "gt_1000_ms")
ROLE_CLAIM = {"sequencer": "validator_core", "storage": "full_storage", "observer": "observer_light"}
REPLICATION_PROTOCOLS = ["/aw/node/replication/fetch-blob/1.0.0", "/aw/node/replication/fetch-commit/1.0.0"]
# The PoS epoch in slots: not in the reference; the example (slot 42, epoch 1) fits 32.
SLOTS_PER_EPOCH = 32


def peer_id(seed: str) -> str:
    """A stable libp2p-looking peer id (the simulator has no keys of its own)."""
    return "12D3KooW" + hashlib.sha256(seed.encode()).hexdigest()[:44]


def percentile(samples: list[int], q: float) -> int | None:
    if not samples:
        return None
    ordered = sorted(samples)   # nearest rank, like the soak script's p95
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


@dataclass
class G2State:
    """What a G2 node knows beyond its consensus Node: identity, clocks, counters since start."""

    node_id: str
    world_id: str
    role: str
    started_ms: int
    genesis_ms: int
    slot_ms: int
    ticks_per_slot: int
    proposal_tick_phase: int
    adaptive: bool
    runtime_root: str                 # output/chain-runtime/<node_id>, relative to the cwd
    report_dir: str
    reward_enabled: bool
    report_count: int = 0             # since process start, like every reward_runtime counter
    latest_report_ms: int | None = None
    settlement_attempts: int = 0
    distfs_base: tuple[int, int] = (0, 0)   # persisted (total, failed) when the process started
    bytes_by_dir: dict[str, int] = field(default_factory=dict)
    blob_counts: dict[str, int] = field(default_factory=dict)
    replication_listen: list[str] = field(default_factory=list)
    replication_peers: dict[str, str] = field(default_factory=dict)   # multiaddr -> active|suspect|candidate
    replication_errors: list[str] = field(default_factory=list)
    invariant_ok: bool = True
    last_error: str | None = None
    # Slots and ticks of the PoS clock that passed without a tick of ours (a paused process).
    missed_slots: int = 0
    missed_ticks: int = 0
    last_slot: int | None = None
    last_tick: int | None = None
    # The blob store's GC (storage role): files in the store that its index does not name.
    orphan_blobs: int = 0
    last_gc_at_ms: int | None = None
    last_gc_result: str = "not_available"
    last_gc_error: str | None = None
    wire: Traffic = field(default_factory=Traffic)   # libp2p replication traffic


def distfs_since_start(node: Node, s: G2State) -> tuple[int, int]:
    c = node.state.distfs
    return c.total - s.distfs_base[0], c.failed - s.distfs_base[1]


def slot_clock(s: G2State, now_ms: int) -> dict[str, int]:
    since = max(0, now_ms - s.genesis_ms)
    slot, phase = since // s.slot_ms, (since % s.slot_ms) * s.ticks_per_slot // s.slot_ms
    return {"slot": slot, "epoch": slot // SLOTS_PER_EPOCH, "tick_phase": phase,
            "last_observed_tick": slot * s.ticks_per_slot + phase}


def consensus(node: Node, s: G2State, now_ms: int) -> dict[str, Any]:
    h, net = node.committed_height, node.network_committed_height()
    clock = slot_clock(s, now_ms)
    lat = list(node.finality_ms)[-16:]
    at = node.state.last_committed_at_ms or None
    executes = node.role == "sequencer"   # only the sequencer executes blocks (G2.md section 3)
    eh, ehash, root = node.execution()
    status = node.last_status.lower() if node.last_status else None
    return {
        "slot": clock["slot"], "epoch": clock["epoch"], "ticks_per_slot": s.ticks_per_slot,
        "tick_phase": clock["tick_phase"], "proposal_tick_phase": s.proposal_tick_phase,
        "last_observed_slot": clock["slot"], "missed_slot_count": s.missed_slots,
        "last_observed_tick": clock["last_observed_tick"], "missed_tick_count": s.missed_ticks,
        "adaptive_tick_scheduler_enabled": s.adaptive,
        "latest_height": max(h, net), "committed_height": h, "last_committed_at_ms": at,
        "last_commit_age_ms": max(0, now_ms - at) if at else None, "network_committed_height": net,
        "recent_finality_latency": {"sample_count": len(lat), "avg_latency_ms": sum(lat) // len(lat) if lat else None,
                                    "max_latency_ms": max(lat) if lat else None,
                                    "p50_latency_ms": percentile(lat, 0.5), "p95_latency_ms": percentile(lat, 0.95)},
        "pending_proposal": _pending(node, s, now_ms, clock),
        "pending_consensus_actions": {"queued_action_count": 0, "queued_payload_bytes": 0,
                                      "reserved_requeue_action_count": 0, "reserved_requeue_payload_bytes": 0,
                                      "available_capacity": 4096, "max_capacity": 4096,
                                      "submit_buffer_action_count": 0, "submit_buffer_payload_bytes": 0,
                                      "submit_buffer_max_capacity": 1024},
        # Heads of the sequencer older than what we committed (queued while paused, reordered).
        "inbound_timing_rejections": {"proposal_future_slot": 0, "proposal_stale_slot": node.stale_heads,
                                      "attestation_future_slot": 0, "attestation_stale_slot": 0,
                                      "attestation_epoch_mismatch": 0,
                                      "last_reason": "proposal stale slot: below the committed height"
                                      if node.stale_heads else None},
        "last_status": status, "last_block_hash": node.own_hash(h),
        "last_execution_height": eh if executes else 0,
        "last_execution_block_hash": ehash if executes else None,
        "last_execution_state_root": root if executes else None,
        "known_peer_heads": len(node.heads),
    }


def _pending(node: Node, s: G2State, now_ms: int, clock: dict[str, int]) -> dict[str, Any] | None:
    opened = node.proposal_opened_ms
    if node.role != "sequencer" or opened is None:
        return None
    return {"height": node.state.committed_height + 1, "slot": clock["slot"], "epoch": clock["epoch"],
            "proposer_id": node.node_id, "opened_at_ms": opened, "age_ms": max(0, now_ms - opened),
            "action_count": 0, "action_payload_bytes": 0, "attestation_count": 0, "approved_stake": 0,
            "rejected_stake": 0, "required_stake": 67, "total_stake": 100, "approval_progress_bps": 0,
            "rejection_progress_bps": 0, "remaining_approval_stake": 67, "status": "pending"}


def alerts(node: Node, s: G2State, cons: dict[str, Any]) -> list[dict[str, str]]:
    """The node's own alert codes (G2.md section 5), first the critical one."""
    out = []
    if s.last_error:
        out.append(("critical", "runtime_last_error", f"runtime last_error: {s.last_error}"))
    lag = cons["network_committed_height"] - cons["committed_height"]
    if lag > 0:
        out.append(("warn", "consensus_network_lag", f"network committed height is ahead by {lag}"))
    states = list(s.replication_peers.values())
    if any(v == "suspect" for v in states):
        out.append(("warn", "replication_peer_health_degraded", "replication peers are suspect"))
    if states and "active" not in states:
        out.append(("warn", "replication_no_connected_peers", "replication peers discovered but none connected"))
    if s.replication_errors:
        out.append(("warn", "replication_recent_errors", f"{len(s.replication_errors)} recent replication errors"))
    if s.last_error or s.last_gc_result == "failed":
        out.append(("warn", "storage_degraded", f"storage degraded: {s.last_error or s.last_gc_error}"))
    if s.reward_enabled and (not s.report_count or not s.invariant_ok):
        reason = "reward metrics not available yet" if not s.report_count else "reward asset invariant failed"
        out.append(("warn", "reward_runtime_degraded", reason))
    return [{"severity": sev, "code": code, "summary": text} for sev, code, text in out]


def observability(node: Node, s: G2State, cons: dict[str, Any]) -> dict[str, Any]:
    found = alerts(node, s, cons)
    states = list(s.replication_peers.values())
    worst = "critical" if any(a["severity"] == "critical" for a in found) else "warn" if found else "ok"
    summary = "no active node alerts" if not found else found[0]["summary"] + (
        f"; +{len(found) - 1} more alerts" if len(found) > 1 else "")
    return {"status": worst, "summary": summary, "connected_peer_count": states.count("active"),
            "active_peer_count": states.count("active"), "candidate_peer_count": states.count("candidate"),
            "suspect_peer_count": states.count("suspect"), "blocked_peer_count": 0,
            "peer_with_issues_count": states.count("suspect"), "known_peer_heads": len(node.heads),
            "network_height_lag": max(0, cons["network_committed_height"] - cons["committed_height"]),
            "recent_replication_error_count": len(s.replication_errors),
            "storage_degraded": bool(s.last_error) or s.last_gc_result == "failed", "reward_runtime_degraded": any(
                a["code"] == "reward_runtime_degraded" for a in found), "alerts": found}


def _p2p(role: str) -> dict[str, Any]:
    return {"requested_user_mode": "auto_join", "recommended_user_mode": "private_safe",
            "effective_user_mode": "private_safe", "applied_effective_user_mode": "private_safe",
            "requires_explicit_public_entry_confirmation": False, "detected_reachability": None,
            "hole_punch_viability": "unknown", "autonat_status": "unknown", "public_port_reachability": "unknown",
            "observed_public_addr": None, "confirmed_external_direct_addrs": [], "relay_available": False,
            "probe_stable": False, "deployment_mode": "private", "node_role_claim": ROLE_CLAIM[role],
            "rationale": ["observed_reachability=unknown", "hole_punch_viability=unknown", "autonat_status=unknown",
                          "public_port_reachability=unknown", "relay_available=false", "probe_stable=false"]}


def _wasm(since: int) -> dict[str, Any]:
    zeros = dict.fromkeys(BUCKETS, 0)
    return {"metrics_available": True, "observed_since_unix_ms": since,
            "degraded_reason": "build metrics path not configured",
            "build": {"metrics_available": False, "observed_since_unix_ms": None,
                      "degraded_reason": "build metrics path not configured",
                      **dict.fromkeys(("total_build_wall_ms", "cargo_build_ms", "canonicalize_ms", "hash_ms",
                                       "receipt_write_ms", "metadata_write_ms", "wasm_size_bytes"))},
            "executor": {"observed_since_unix_ms": since, "metrics_available": True, "degraded_reason": None,
                         **dict.fromkeys(("calls_total", "memory_cache_hits", "disk_cache_hits", "compile_misses"), 0),
                         "failure_by_code": {},
                         **dict.fromkeys(("compile_ms_total", "deserialize_ms_total", "instantiate_ms_total",
                                          "entrypoint_call_ms_total", "decode_ms_total"), 0),
                         "call_wall_ms_buckets": dict(zeros)},
            "router": {"observed_since_unix_ms": since, "metrics_available": True, "degraded_reason": None,
                       **dict.fromkeys(("prepare_calls_total", "prepare_ms_total", "match_calls_total",
                                        "match_ms_total", "parse_fallbacks", "prepared_hits",
                                        "regex_compile_ms_total"), 0),
                       "prepare_ms_buckets": dict(zeros), "match_ms_buckets": dict(zeros)}}


def _storage(s: G2State) -> dict[str, Any]:
    return {"storage_profile": "dev_local",
            "effective_budget": {"profile": "dev_local", "execution_hot_head_heights": 32,
                                 "execution_checkpoint_interval": 32, "execution_checkpoint_keep": 4,
                                 "execution_sidecar_generations_keep": 2, "tick_consensus_hot_limit": 128,
                                 "tick_consensus_archive_segment_len": 64,
                                 "replication_max_hot_commit_messages": 4096, "metrics_emit_interval_ms": 30000},
            "bytes_by_dir": dict(s.bytes_by_dir), "blob_counts": dict(s.blob_counts), "ref_count": 0,
            "pin_count": 0, "retained_heights": [], "checkpoint_count": 0,
            "replay_summary": {"retained_height_count": 0, "earliest_retained_height": None,
                               "latest_retained_height": None, "earliest_checkpoint_height": None,
                               "latest_checkpoint_height": None, "mode": "latest_only"},
            "orphan_blob_count": s.orphan_blobs, "last_gc_at_ms": s.last_gc_at_ms, "last_gc_result": s.last_gc_result,
            "last_gc_error": s.last_gc_error,
            # The runtime's last_error overwrites degraded_reason (G2.md section 3).
            "degraded_reason": s.last_error or s.last_gc_error}


def _dir_totals(inbound: tuple[int, int], outbound: tuple[int, int], unit: str = "messages") -> dict[str, Any]:
    return {"inbound": {unit: inbound[0], "payload_bytes": inbound[1]},
            "outbound": {unit: outbound[0], "payload_bytes": outbound[1]}}


def _traffic(node: Node, s: G2State, since: int) -> dict[str, Any]:
    t = node.traffic
    none = _dir_totals((0, 0), (0, 0), "datagrams")
    udp = None if node.sock is None else {
        "observed_since_unix_ms": since, "scope": "udp_payload_bytes", "excludes_transport_headers": True,
        "totals": _dir_totals((t.in_count, t.in_bytes), (t.out_count, t.out_bytes), "datagrams"),
        # The simulator gossips one kind of datagram: the committed head.
        "by_kind": {"attestation": none, "commit": _dir_totals((t.in_count, t.in_bytes),
                                                               (t.out_count, t.out_bytes), "datagrams"),
                    "hello": none, "proposal": none, "replication": none}}
    zero = _dir_totals((0, 0), (0, 0))
    w = s.wire
    # Requests out / responses in are our fetches; requests in / responses out are fetches we served.
    totals = _dir_totals((w.in_count, w.in_bytes), (w.out_count, w.out_bytes))
    wire = {"inbound": {"bytes": w.in_bytes}, "outbound": {"bytes": w.out_bytes}}
    libp2p = {"observed_since_unix_ms": since, "scope": "application_payload_with_substream_wire_bytes",
              "excludes_transport_overhead": True, "excludes_kademlia_control_plane": True,
              "excludes_gossipsub_mesh_fanout": True, "totals": totals, "wire_totals": wire, "gossip": zero,
              "request": zero, "response": zero,
              "control_plane": {"units": "events", "total_events": 0, "by_kind": {},
                                "wire_scope": "substream_wire_bytes_minus_application_payload",
                                "excludes_transport_overhead": True, "wire_bytes": wire},
              "by_topic": {}, "by_protocol": {REPLICATION_PROTOCOLS[1]: totals} if w.in_count or w.out_count
              else {}}
    return {"udp_gossip": udp, "libp2p_replication": libp2p}


def _replication(s: G2State) -> dict[str, Any]:
    healths = [{"peer_id": peer_id(addr), "status": state,
                "issues": ["dial failed"] if state == "suspect" else [], "discovery_sources": ["static_bootstrap"],
                "active_path_kind": "direct" if state == "active" else None, "source_operator": None,
                "source_asn": None} for addr, state in s.replication_peers.items()]
    return {"local_peer_id": peer_id(s.node_id),
            "connected_peers": [h["peer_id"] for h in healths if h["status"] == "active"],
            "peer_healths": healths, "registered_protocols": list(REPLICATION_PROTOCOLS),
            "protocol_retry_cooldown_peers": {}, "transport_retry_cooldown_peers": [],
            "recent_errors": list(s.replication_errors)}


def reward_runtime(node: Node, s: G2State) -> dict[str, Any]:
    total, failed = distfs_since_start(node, s)
    return {"enabled": s.reward_enabled, "metrics_available": s.report_count > 0, "report_dir": s.report_dir,
            "report_count": s.report_count, "latest_epoch_index": max(0, node.state.epoch_index - 1),
            "latest_report_observed_at_unix_ms": s.latest_report_ms, "latest_total_distributed_points": 1000,
            "latest_minted_record_count": 0, "cumulative_minted_record_count": 0,
            "distfs_total_checks": total, "distfs_failed_checks": failed,
            "distfs_failure_ratio": round(failed / total, 6) if total else 0.0,
            "settlement_apply_attempts_total": s.settlement_attempts, "settlement_apply_failures_total": 0,
            "settlement_apply_failure_ratio": 0.0, "invariant_ok": s.invariant_ok, "last_error": None}


def chain_status(node: Node, s: G2State, now_ms: int) -> dict[str, Any]:
    cons = consensus(node, s, now_ms)
    return {
        "ok": True, "observed_at_unix_ms": now_ms, "node_id": s.node_id, "world_id": s.world_id, "role": s.role,
        "running": True, "worker_poll_count": node.state.tick_count, "tick_count": node.state.tick_count,
        "last_tick_unix_ms": now_ms, "consensus": cons, "last_error": s.last_error,
        "execution_world_dir": f"{s.runtime_root}/reward-runtime-execution-world", "network_tier": None,
        "p2p": _p2p(s.role), "observability": observability(node, s, cons),
        "release_security_policy": dict.fromkeys(("allow_builtin_manifest_fallback", "allow_identity_hash_signature",
                                                  "allow_local_finality_signing", "allow_runtime_source_compile"),
                                                 True),
        "reward_runtime": reward_runtime(node, s), "storage": _storage(s), "wasm": _wasm(s.started_ms),
        "traffic": _traffic(node, s, s.started_ms),
        "transactions": {"tracked_records": 0, **dict.fromkeys(("accepted_count", "pending_count", "confirmed_count",
                                                                "failed_count", "timeout_count", "inflight_count"), 0),
                         "oldest_inflight_age_ms": None,
                         "recent_confirmation_latency": {"sample_count": 0, "avg_latency_ms": None,
                                                         "max_latency_ms": None, "p50_latency_ms": None,
                                                         "p95_latency_ms": None}},
        "replication": _replication(s),
    }


def balances(node: Node, s: G2State, now_ms: int) -> dict[str, Any]:
    credits = 10 + node.state.epoch_index + (0 if s.invariant_ok else 7)
    return {"ok": True, "observed_at_unix_ms": now_ms, "node_id": s.node_id, "world_id": s.world_id,
            "execution_world_dir": f"{s.runtime_root}/reward-runtime-execution-world", "load_error": None,
            "node_asset_balance": {"node_id": s.node_id, "power_credit_balance": credits,
                                   "total_minted_credits": 10 + node.state.epoch_index, "total_burned_credits": 0},
            "node_power_credit_balance": credits, "node_main_token_account": f"node:{s.node_id}",
            "node_main_token_liquid_balance": 0, "reward_mint_record_count": 0, "recent_reward_mint_records": []}


def slim_epoch(node: Node, s: G2State, now_ms: int) -> dict[str, Any]:
    """The slim G2 epoch file (G2.md section 2): every role writes one per epoch."""
    total, failed = distfs_since_start(node, s)
    return {
        "observed_at_unix_ms": now_ms, "world_id": s.world_id, "node_id": s.node_id,
        "node_snapshot": {"node_id": s.node_id, "role": s.role,
                          "consensus": {"epoch": slot_clock(s, now_ms)["epoch"], "committed_height": node.committed_height,
                                        "network_committed_height": node.network_committed_height(),
                                        "last_status": node.last_status}},
        "settlement_report": {"epoch_index": node.state.epoch_index, "pool_points": 1000, "storage_pool_points": 0,
                              "distributed_points": 1000, "storage_distributed_points": 0,
                              "total_distributed_points": 1000, "settlements": []},
        "minted_records": [],
        "reward_settlement_transport": {"settlement_apply_attempts_total": s.settlement_attempts,
                                        "settlement_apply_failures_total": 0, "settlement_apply_failure_ratio": 0.0},
        "distfs": {"total_checks": total, "failed_checks": failed,
                   "failure_ratio": round(failed / total, 6) if total else 0.0},
    }


def dir_bytes(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path``; missing is zero."""
    size = files = 0
    for p in path.rglob("*") if path.is_dir() else ():
        try:
            if p.is_file():
                size += p.stat().st_size
                files += 1
        except OSError:
            continue
    return size, files
