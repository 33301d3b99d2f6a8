"""The real G1 epoch-report and G2 chain-status field lists and types, as data.

Written from the real example documents (shared/agent_world/examples); the tests check the
validator against those files too, so the spec cannot drift from the real format unseen.
Extra keys are allowed (the real format grows); missing keys and wrong types are not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

INT = (int,)
FLOAT = (float,)
STR = (str,)
BOOL = (bool,)
NONE = (type(None),)
OPT_INT = INT + NONE
OPT_STR = STR + NONE


@dataclass(frozen=True)
class ListOf:
    item: "Spec"


@dataclass(frozen=True)
class MapOf:
    """An object with free keys (node ids, failure reasons) and one value type."""

    value: "Spec"


@dataclass(frozen=True)
class Nullable:
    spec: "Spec"


Spec = Union[tuple[type, ...], dict[str, Any], ListOf, MapOf, Nullable]

PEER_HEAD = {"node_id": STR, "height": INT, "block_hash": STR, "committed_at_ms": INT,
             "execution_block_hash": OPT_STR, "execution_state_root": OPT_STR}
CONSENSUS_COMMON = {
    "slot": INT, "epoch": INT, "latest_height": INT, "committed_height": INT,
    "network_committed_height": INT, "known_peer_heads": INT,
    "last_status": OPT_STR, "last_block_hash": OPT_STR, "last_execution_height": INT,
    "last_execution_block_hash": OPT_STR, "last_execution_state_root": OPT_STR,
}
CONSENSUS = {**CONSENSUS_COMMON, "mode": STR, "last_committed_at_ms": INT, "peer_heads": ListOf(PEER_HEAD)}
FAILURE_REASONS = MapOf(INT)
PROOF_SEMANTICS = {"node_id": STR, "sample_source": STR, "sample_reference": STR, "failure_reason": OPT_STR,
                   "proof_kind_hint": STR, "vrf_seed_hint": STR, "post_commitment_hint": STR}
CHALLENGE_REPORT = {"node_id": STR, "world_id": STR, "observed_at_unix_ms": INT, "total_checks": INT,
                    "passed_checks": INT, "failed_checks": INT, "failure_reasons": FAILURE_REASONS,
                    "latest_proof_semantics": Nullable(PROOF_SEMANTICS)}
ADAPTIVE_POLICY = {"max_checks_per_round": INT, "failure_backoff_base_ms": INT, "failure_backoff_max_ms": INT,
                   **{f"backoff_multiplier_{r}": INT for r in ("hash_mismatch", "missing_sample", "timeout",
                                                               "read_io_error", "signature_invalid", "unknown")}}
CURSOR_STATE = {
    "next_blob_cursor": INT, "rounds_executed": INT, "cumulative_total_checks": INT,
    "cumulative_passed_checks": INT, "cumulative_failed_checks": INT,
    "cumulative_failure_reasons": FAILURE_REASONS, "consecutive_failure_rounds": INT,
    "backoff_until_unix_ms": INT, "last_probe_unix_ms": OPT_INT, "cumulative_backoff_skipped_rounds": INT,
    "cumulative_backoff_applied_ms": INT, "last_backoff_duration_ms": INT, "last_backoff_reason": OPT_STR,
    "last_backoff_multiplier": INT,
}
NETWORK_CHALLENGE = {"mode": STR, "request_topic": STR, "proof_topic": STR, "known_storage_targets": ListOf(STR),
                     "issued_challenge_ids": ListOf(STR), "answered_challenge_ids": ListOf(STR),
                     "accepted_proof_ids": ListOf(STR), "timed_out_challenge_ids": ListOf(STR)}
SETTLEMENT = {"node_id": STR, "obligation_met": BOOL, "compute_score": FLOAT, "storage_score": FLOAT,
              "uptime_score": FLOAT, "reliability_score": FLOAT, "storage_reward_score": FLOAT,
              "rewardable_storage_bytes": INT, "penalty_score": FLOAT, "total_score": FLOAT,
              "main_awarded_points": INT, "storage_awarded_points": INT, "awarded_points": INT,
              "cumulative_points": INT}
SETTLEMENT_TRANSPORT = {
    "network_enabled": BOOL, "settlement_topic": STR, "should_publish_settlement": BOOL,
    "settlement_leader_node_id": OPT_STR, "leader_last_commit_at_ms": OPT_INT, "leader_is_stale": BOOL,
    "settlement_failover_enabled": BOOL, "failover_publisher_node_id": OPT_STR,
    "published_settlement_envelope_id": OPT_STR, "applied_settlement_envelope_ids": ListOf(STR),
    "settlement_apply_attempts_this_tick": INT, "settlement_apply_failures_this_tick": INT,
    "settlement_apply_attempts_total": INT, "settlement_apply_failures_total": INT,
    "settlement_apply_failure_ratio": FLOAT, "observer_trace_threshold_met": BOOL,
    "settlement_skipped_reason": OPT_STR,
}
BALANCE = {"node_id": STR, "power_credit_balance": INT, "total_minted_credits": INT, "total_burned_credits": INT}

G1_REPORT: dict[str, Spec] = {
    "observed_at_unix_ms": INT,
    "node_snapshot": {"node_id": STR, "world_id": STR, "role": STR, "running": BOOL, "tick_count": INT,
                      "last_tick_unix_ms": INT, "last_error": OPT_STR, "consensus": CONSENSUS},
    "distfs_challenge_report": Nullable(CHALLENGE_REPORT),
    "distfs_probe_config": {"max_sample_bytes": INT, "challenges_per_tick": INT, "challenge_ttl_ms": INT,
                            "allowed_clock_skew_ms": INT, "adaptive_policy": ADAPTIVE_POLICY},
    "distfs_probe_cursor_state": CURSOR_STATE,
    "distfs_network_challenge": Nullable(NETWORK_CHALLENGE),
    "execution_bridge_state": {"last_applied_committed_height": INT, "last_execution_block_hash": OPT_STR,
                               "last_execution_state_root": OPT_STR, "last_node_block_hash": OPT_STR},
    "execution_bridge_records": ListOf({}),
    "settlement_report": {"epoch_index": INT, "pool_points": INT, "storage_pool_points": INT,
                          "distributed_points": INT, "storage_distributed_points": INT,
                          "total_distributed_points": INT, "settlements": ListOf(SETTLEMENT)},
    "minted_records": ListOf({}),
    "reward_observation_traces": {"network_enabled": BOOL, "observation_topic": STR, "min_observer_traces": INT,
                                  "observer_trace_count_for_epoch": INT, "observer_nodes_for_epoch": ListOf(STR),
                                  "applied_trace_ids_this_tick": ListOf(STR),
                                  "applied_observer_node_ids_this_tick": ListOf(STR),
                                  "applied_traces_this_tick": ListOf({})},
    "reward_settlement_transport": SETTLEMENT_TRANSPORT,
    "node_balances": MapOf(BALANCE),
    "reserve": {"epoch_index": INT, "available_power_units": INT, "redeemed_power_units": INT},
    "reward_asset_invariant_status": {"ok": BOOL, "violation_count": INT},
    "reward_asset_invariant_report": {"total_nodes": INT, "total_minted_credits": INT, "total_burned_credits": INT,
                                      "total_power_credit_balance": INT, "mint_record_count": INT,
                                      "violations": ListOf({"code": STR, "message": STR})},
}

G2_STATUS: dict[str, Spec] = {
    "ok": BOOL, "observed_at_unix_ms": INT, "node_id": STR, "world_id": STR, "role": STR, "running": BOOL,
    "tick_count": INT, "last_tick_unix_ms": INT, "last_error": OPT_STR, "consensus": CONSENSUS_COMMON,
    "reward_runtime": {"enabled": BOOL, "metrics_available": BOOL, "report_dir": STR, "report_count": INT,
                       "latest_epoch_index": INT, "distfs_total_checks": INT, "distfs_failed_checks": INT,
                       "distfs_failure_ratio": FLOAT, "invariant_ok": BOOL, "last_error": OPT_STR},
}


def _type_names(types: tuple[type, ...]) -> str:
    return "|".join("null" if t is type(None) else t.__name__ for t in types)


def _check(value: Any, spec: Spec, path: str, out: list[str]) -> None:
    if isinstance(spec, Nullable):
        if value is not None:
            _check(value, spec.spec, path, out)
    elif isinstance(spec, tuple):
        # bool is an int in Python but not in JSON: a true where a count belongs is a type error.
        if not isinstance(value, spec) or (isinstance(value, bool) and bool not in spec):
            out.append(f"{path}: expected {_type_names(spec)}, got {type(value).__name__}")
    elif isinstance(spec, ListOf):
        if not isinstance(value, list):
            out.append(f"{path}: expected list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, spec.item, f"{path}[{i}]", out)
    elif not isinstance(value, dict):
        out.append(f"{path}: expected object, got {type(value).__name__}")
    elif isinstance(spec, MapOf):
        for key, item in value.items():
            _check(item, spec.value, f"{path}.{key}", out)
    else:
        for key, sub in spec.items():
            if key not in value:
                out.append(f"{path}.{key}: missing")
            else:
                _check(value[key], sub, f"{path}.{key}", out)


def problems(doc: Any, spec: dict[str, Spec]) -> list[str]:
    """Every missing field and wrong type in ``doc``, as ``path: reason`` lines (empty = valid)."""
    out: list[str] = []
    _check(doc, spec, "$", out)
    return out


def report_problems(doc: Any) -> list[str]:
    """Problems of a G1 epoch report (``epoch-<N>.json``)."""
    return problems(doc, G1_REPORT)


def status_problems(doc: Any) -> list[str]:
    """Problems of a G2 ``GET /v1/chain/status`` document."""
    return problems(doc, G2_STATUS)
