"""The G2 status document beyond the consensus readings: ``GET /v1/chain/status`` at HEAD
(tests/fixtures/agent_world/G2.md section 3, g2-chain-status-head.json), the fields the G2
gates and dashboards read, at their exact paths.

A document is taken as the HEAD schema when it has any of its blocks (``HEAD_BLOCKS``); the
G1 simulator's and older G2 status documents have none and yield nothing here. In a HEAD
document every field below is required with its type (``null`` only where the node writes
it): a missing or malformed one is a ``ReportError("status", "<path>: ...")``, which the
collector counts for that node only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.reports import U64_MAX, ReportError
from soakcore.catalog import (GC_RESULTS, NODE_ALERT_CODES, NODE_ALERT_SEVERITIES, STORAGE_DIRS,
                              TIMING_REJECTIONS)

HEAD_BLOCKS = ("observability", "storage", "replication", "traffic")
# observability.<state>_peer_count, in soakcore.catalog.PEER_STATES order.
_PEER_COUNTS = ("connected_peer_count", "active_peer_count", "candidate_peer_count", "suspect_peer_count",
                "blocked_peer_count", "peer_with_issues_count")
_FINALITY = ("p50_latency_ms", "p95_latency_ms", "max_latency_ms")   # catalog FINALITY_STATS order
_MISSING = object()


@dataclass(frozen=True)
class G2Status:
    alerts: tuple[tuple[str, str], ...]          # (severity, code), both from the catalog's closed sets
    peers: tuple[int, ...]                       # PEER_STATES order
    network_height_lag: int
    last_commit_age_ms: int | None
    finality_ms: tuple[int | None, ...]          # FINALITY_STATS order
    pending_actions: int
    pending_capacity: int
    timing_rejections: tuple[int, ...]           # TIMING_REJECTIONS order (process-cumulative)
    missed_slots: int                            # process-cumulative
    storage_bytes: tuple[int, ...]               # STORAGE_DIRS order
    orphan_blobs: int
    gc_result: str                               # GC_RESULTS
    replication_errors: int
    udp: tuple[int, int, int, int] | None        # datagrams in, bytes in, datagrams out, bytes out
    libp2p: tuple[int, int, int, int] | None     # messages in, bytes in, messages out, bytes out


def is_head(doc: dict[str, Any]) -> bool:
    return any(k in doc for k in HEAD_BLOCKS)


def _get(obj: dict[str, Any], path: str, key: str) -> Any:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        raise ReportError("status", f"{path}.{key}: missing")
    return value


def _obj(obj: dict[str, Any], path: str, key: str) -> dict[str, Any]:
    value = _get(obj, path, key)
    if type(value) is not dict:
        raise ReportError("status", f"{path}.{key}: expected an object, got {type(value).__name__}")
    return value


def _obj_or_null(obj: dict[str, Any], path: str, key: str) -> dict[str, Any] | None:
    return None if _get(obj, path, key) is None else _obj(obj, path, key)


def _u64(obj: dict[str, Any], path: str, key: str, nullable: bool = False) -> Any:
    value = _get(obj, path, key)
    if value is None and nullable:
        return None
    if type(value) is not int or not 0 <= value <= U64_MAX:
        raise ReportError("status", f"{path}.{key}: expected an integer in 0..2^64-1, got {value!r:.40}")
    return value


def _alerts(obs: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    raw = _get(obs, "observability", "alerts")
    if type(raw) is not list:
        raise ReportError("status", "observability.alerts: expected a list")
    out = []
    for i, a in enumerate(raw):
        if type(a) is not dict or type(a.get("severity")) is not str or type(a.get("code")) is not str:
            raise ReportError("status", f"observability.alerts[{i}]: expected {{severity, code, summary}}")
        # Closed label sets: a severity or code the node adds later is "other", never a new label value.
        out.append((a["severity"] if a["severity"] in NODE_ALERT_SEVERITIES else "other",
                    a["code"] if a["code"] in NODE_ALERT_CODES else "other"))
    return tuple(out)


def _totals(block: dict[str, Any] | None, path: str, unit: str) -> tuple[int, int, int, int] | None:
    if block is None:
        return None
    totals = _obj(block, path, "totals")
    out = []
    for direction in ("inbound", "outbound"):
        d = _obj(totals, f"{path}.totals", direction)
        out += [_u64(d, f"{path}.totals.{direction}", unit), _u64(d, f"{path}.totals.{direction}", "payload_bytes")]
    return out[0], out[1], out[2], out[3]


def parse_g2(doc: dict[str, Any]) -> G2Status:
    """The G2 fields of a HEAD status document; ReportError("status") names the first bad field."""
    cons = _obj(doc, "<root>", "consensus")
    obs = _obj(doc, "<root>", "observability")
    storage = _obj(doc, "<root>", "storage")
    traffic = _obj(doc, "<root>", "traffic")
    fin = _obj(cons, "consensus", "recent_finality_latency")
    queue = _obj(cons, "consensus", "pending_consensus_actions")
    rejected = _obj(cons, "consensus", "inbound_timing_rejections")
    by_dir = _obj(storage, "storage", "bytes_by_dir")
    gc = _get(storage, "storage", "last_gc_result")
    if gc not in GC_RESULTS:
        raise ReportError("status", f"storage.last_gc_result: expected one of {GC_RESULTS}, got {gc!r:.40}")
    return G2Status(
        alerts=_alerts(obs),
        peers=tuple(_u64(obs, "observability", k) for k in _PEER_COUNTS),
        network_height_lag=_u64(obs, "observability", "network_height_lag"),
        last_commit_age_ms=_u64(cons, "consensus", "last_commit_age_ms", nullable=True),
        finality_ms=tuple(_u64(fin, "consensus.recent_finality_latency", k, nullable=True) for k in _FINALITY),
        pending_actions=_u64(queue, "consensus.pending_consensus_actions", "queued_action_count"),
        pending_capacity=_u64(queue, "consensus.pending_consensus_actions", "max_capacity"),
        timing_rejections=tuple(_u64(rejected, "consensus.inbound_timing_rejections", k) for k in TIMING_REJECTIONS),
        missed_slots=_u64(cons, "consensus", "missed_slot_count"),
        storage_bytes=tuple(_u64(by_dir, "storage.bytes_by_dir", k) for k in STORAGE_DIRS),
        orphan_blobs=_u64(storage, "storage", "orphan_blob_count"),
        gc_result=gc,
        replication_errors=_u64(obs, "observability", "recent_replication_error_count"),
        udp=_totals(_obj_or_null(traffic, "traffic", "udp_gossip"), "traffic.udp_gossip", "datagrams"),
        libp2p=_totals(_obj_or_null(traffic, "traffic", "libp2p_replication"), "traffic.libp2p_replication",
                       "messages"),
    )
