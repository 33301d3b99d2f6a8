"""Parse one G1 or G2 epoch report (or G2 status document) into a ``Report``.

Only the fields the gates use are extracted; each has its type checked. A document may lack
fields (G2 is slim): they are None and listed in ``missing``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_REPORT_BYTES = 16 * 1024 * 1024
STATUSES = ("Pending", "Committed", "Rejected")
# Heights, counters and timestamps are u64 in the node: a larger number is not a reading.
U64_MAX = 2**64 - 1


class ReportError(Exception):
    """reason is one of: partial, invalid_json, schema, too_large, io, duplicate."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class PeerHead:
    node_id: str
    height: int
    block_hash: str | None


@dataclass(frozen=True)
class Report:
    observed_at_ms: int
    node_id: str | None = None
    role: str | None = None
    epoch_index: int | None = None
    committed_height: int | None = None
    network_committed_height: int | None = None
    last_execution_height: int | None = None
    last_status: str | None = None
    last_block_hash: str | None = None
    peer_heads: tuple[PeerHead, ...] = ()
    distfs_total: int | None = None
    distfs_passed: int | None = None
    distfs_failed: int | None = None
    distfs_reasons: dict[str, int] = field(default_factory=dict)
    invariant_ok: bool | None = None
    invariant_violations: int | None = None
    missing: tuple[str, ...] = ()


def _get(doc: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


class _Fields:
    """Typed field access that records which fields were absent."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.missing: list[str] = []

    def first(self, kind: type, *paths: str, required: bool = False) -> Any:
        for path in paths:
            value = _get(self.doc, path)
            if value is None:
                continue
            if kind is int and not _is_u64(value):
                raise ReportError("schema", f"{path}: expected an integer in 0..2^64-1, got {value!r:.40}")
            if kind is not int and not isinstance(value, kind):
                raise ReportError("schema", f"{path}: expected {kind.__name__}, got {type(value).__name__}")
            return value
        if required:
            raise ReportError("schema", f"{paths[0]}: missing")
        self.missing.append(paths[0])
        return None


def _is_u64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX


def _peers(raw: Any) -> tuple[PeerHead, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ReportError("schema", "node_snapshot.consensus.peer_heads: expected list")
    heads = []
    for i, p in enumerate(raw):
        if not (isinstance(p, dict) and isinstance(p.get("node_id"), str) and _is_u64(p.get("height"))
                and isinstance(p.get("block_hash"), (str, type(None)))):
            raise ReportError("schema", f"node_snapshot.consensus.peer_heads[{i}]: expected {{node_id, height, block_hash}}")
        heads.append(PeerHead(p["node_id"], p["height"], p["block_hash"]))
    return tuple(heads)


def parse_report(data: bytes) -> Report:
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError("too_large", f"{len(data)} bytes > {MAX_REPORT_BYTES}")
    if not data.strip():
        raise ReportError("partial", "empty file")
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ReportError("invalid_json", f"not UTF-8 at byte {exc.start}") from exc
    except RecursionError as exc:  # thousands of nested brackets: the C decoder gives up
        raise ReportError("invalid_json", "nested too deeply") from exc
    except json.JSONDecodeError as exc:
        # Every report is one object: one that does not end with '}' was cut short (the node
        # writes non-atomically), anything else is malformed.
        reason = "invalid_json" if data.rstrip().endswith(b"}") else "partial"
        raise ReportError(reason, f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if not isinstance(doc, dict):
        raise ReportError("schema", "<root>: expected object")
    return _from_doc(doc)


def _from_doc(doc: dict[str, Any]) -> Report:
    f = _Fields(doc)
    c = "node_snapshot.consensus."
    status = f.first(str, c + "last_status", "consensus.last_status")
    if status is not None and status not in STATUSES:
        raise ReportError("schema", f"{c}last_status: expected one of {STATUSES}, got {status!r}")
    reasons = f.first(dict, "distfs_probe_cursor_state.cumulative_failure_reasons")
    if reasons is not None and not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                       for k, v in reasons.items()):
        raise ReportError("schema", "distfs_probe_cursor_state.cumulative_failure_reasons: expected {str: int}")
    return Report(
        observed_at_ms=f.first(int, "observed_at_unix_ms", required=True),
        node_id=f.first(str, "node_snapshot.node_id", "node_id"),
        role=f.first(str, "node_snapshot.role", "role"),
        epoch_index=f.first(int, "settlement_report.epoch_index", "reward_runtime.latest_epoch_index"),
        # Without the consensus block a document says nothing the gates can judge: it is refused
        # (counted as schema) and the node keeps its last good readings, instead of blanking them.
        committed_height=f.first(int, c + "committed_height", "consensus.committed_height", required=True),
        network_committed_height=f.first(int, c + "network_committed_height", "consensus.network_committed_height"),
        last_execution_height=f.first(int, c + "last_execution_height", "consensus.last_execution_height"),
        last_status=status,
        last_block_hash=f.first(str, c + "last_block_hash", "consensus.last_block_hash"),
        peer_heads=_peers(_get(doc, c + "peer_heads")),
        distfs_total=f.first(int, "distfs_probe_cursor_state.cumulative_total_checks", "distfs.total_checks",
                             "reward_runtime.distfs_total_checks"),
        distfs_passed=f.first(int, "distfs_probe_cursor_state.cumulative_passed_checks"),
        distfs_failed=f.first(int, "distfs_probe_cursor_state.cumulative_failed_checks", "distfs.failed_checks",
                              "reward_runtime.distfs_failed_checks"),
        distfs_reasons=dict(reasons or {}),
        invariant_ok=f.first(bool, "reward_asset_invariant_status.ok", "reward_runtime.invariant_ok"),
        invariant_violations=f.first(int, "reward_asset_invariant_status.violation_count"),
        missing=tuple(f.missing),
    )


def parse_document(doc: dict[str, Any]) -> Report:
    """For status endpoints, whose body was already decoded."""
    return _from_doc(doc)
