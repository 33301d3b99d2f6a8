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
_STATUS_BY_LOWER = {st.lower(): st for st in STATUSES}
# Heights, counters and timestamps are u64 in the node: a larger number is not a reading.
U64_MAX = 2**64 - 1


class ReportError(Exception):
    """reason is one of soakcore.catalog.REPORT_ERROR_REASONS."""

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
    last_execution_block_hash: str | None = None
    last_execution_state_root: str | None = None
    peer_heads: tuple[PeerHead, ...] = ()
    distfs_total: int | None = None
    distfs_passed: int | None = None
    distfs_failed: int | None = None
    distfs_reasons: dict[str, int] = field(default_factory=dict)
    invariant_ok: bool | None = None
    invariant_violations: int | None = None
    missing: tuple[str, ...] = ()


# Field paths, compiled once: (dotted path for messages, parent object, key). Every parent
# object of a document is looked up once (``_parents``), then each field is one dict lookup.
# The first path present wins.
_PARENTS = ("node_snapshot", "node_snapshot.consensus", "consensus", "settlement_report", "reward_runtime",
            "distfs_probe_cursor_state", "distfs", "reward_asset_invariant_status")
_EMPTY: dict[str, Any] = {}
Spec = tuple[tuple[str, str, str], ...]


def _spec(*paths: str) -> Spec:
    out = []
    for path in paths:
        parent, _, key = path.rpartition(".")
        assert parent == "" or parent in _PARENTS, path
        out.append((path, parent, key))
    return tuple(out)


_C = "node_snapshot.consensus."
F_STATUS = _spec(_C + "last_status", "consensus.last_status")
F_REASONS = _spec("distfs_probe_cursor_state.cumulative_failure_reasons")
F_OBSERVED = _spec("observed_at_unix_ms")
F_NODE_ID = _spec("node_snapshot.node_id", "node_id")
F_ROLE = _spec("node_snapshot.role", "role")
F_EPOCH = _spec("settlement_report.epoch_index", "reward_runtime.latest_epoch_index")
F_COMMITTED = _spec(_C + "committed_height", "consensus.committed_height")
F_NETWORK = _spec(_C + "network_committed_height", "consensus.network_committed_height")
F_EXECUTION = _spec(_C + "last_execution_height", "consensus.last_execution_height")
F_HASH = _spec(_C + "last_block_hash", "consensus.last_block_hash")
F_EXEC_HASH = _spec(_C + "last_execution_block_hash", "consensus.last_execution_block_hash")
F_STATE_ROOT = _spec(_C + "last_execution_state_root", "consensus.last_execution_state_root")
F_PEERS = _spec(_C + "peer_heads")
F_DISTFS_TOTAL = _spec("distfs_probe_cursor_state.cumulative_total_checks", "distfs.total_checks",
                       "reward_runtime.distfs_total_checks")
F_DISTFS_PASSED = _spec("distfs_probe_cursor_state.cumulative_passed_checks")
F_DISTFS_FAILED = _spec("distfs_probe_cursor_state.cumulative_failed_checks", "distfs.failed_checks",
                        "reward_runtime.distfs_failed_checks")
F_INV_OK = _spec("reward_asset_invariant_status.ok", "reward_runtime.invariant_ok")
F_INV_VIOLATIONS = _spec("reward_asset_invariant_status.violation_count")


def _make(cls: type, fields: dict[str, Any]) -> Any:
    """An instance of a frozen dataclass from every one of its fields, without the generated
    ``__init__`` (one ``object.__setattr__`` per field: a third of the cost of a report's fields)."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


def _parents(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every parent object a field path goes through; one that is absent or not an object is empty."""
    snap = doc.get("node_snapshot")
    if type(snap) is not dict:
        snap = _EMPTY
    out = {"": doc, "node_snapshot": snap}
    cons = snap.get("consensus")
    out["node_snapshot.consensus"] = cons if type(cons) is dict else _EMPTY
    for name in ("consensus", "settlement_report", "reward_runtime", "distfs_probe_cursor_state", "distfs",
                 "reward_asset_invariant_status"):
        value = doc.get(name)
        out[name] = value if type(value) is dict else _EMPTY
    return out


def _is_u64(value: Any) -> bool:
    # JSON decoders give exact ints (bool is its own type): no isinstance needed.
    return type(value) is int and 0 <= value <= U64_MAX


def _first_int(p: dict[str, dict[str, Any]], spec: Spec, missing: list[str] | None) -> Any:
    """The first present path's value, a u64; absent: None (noted in ``missing``, or an error when
    ``missing`` is None: the field is required)."""
    for path, parent, key in spec:
        value = p[parent].get(key)
        if value is None:
            continue
        if type(value) is not int or not 0 <= value <= U64_MAX:
            raise ReportError("schema", f"{path}: expected an integer in 0..2^64-1, got {value!r:.40}")
        return value
    if missing is None:
        raise ReportError("schema", f"{spec[0][0]}: missing")
    missing.append(spec[0][0])
    return None


def _first(p: dict[str, dict[str, Any]], kind: type, spec: Spec, missing: list[str]) -> Any:
    for path, parent, key in spec:
        value = p[parent].get(key)
        if value is None:
            continue
        if not isinstance(value, kind):
            raise ReportError("schema", f"{path}: expected {kind.__name__}, got {type(value).__name__}")
        return value
    missing.append(spec[0][0])
    return None


def _peers(raw: Any) -> tuple[PeerHead, ...]:
    if raw is None:
        return ()
    if type(raw) is not list:
        raise ReportError("schema", "node_snapshot.consensus.peer_heads: expected list")
    heads = []
    for i, p in enumerate(raw):
        if not (type(p) is dict and type(p.get("node_id")) is str and _is_u64(p.get("height"))
                and (p.get("block_hash") is None or type(p.get("block_hash")) is str)):
            raise ReportError("schema", f"node_snapshot.consensus.peer_heads[{i}]: expected {{node_id, height, block_hash}}")
        heads.append(_make(PeerHead, {"node_id": p["node_id"], "height": p["height"], "block_hash": p["block_hash"]}))
    return tuple(heads)


# Documents are decoded by orjson when it is installed (about 3x faster than the stdlib).
# Whatever orjson refuses is decoded again by the stdlib, whose answer (a document, or the
# error and its reason: not UTF-8, NaN accepted, integers past 64 bits, cut short or
# malformed, nested too deeply) is the one that counts: orjson only ever speeds up a
# document the stdlib parses to the same value. Nesting: an orjson without a depth limit
# (older releases recurse without bound and can crash) only sees documents with fewer than
# ``_DEEP`` brackets, far below the stdlib's recursion limit; the rest go to the stdlib.
try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - a dependency, but the stdlib path is complete
    _orjson = None
_DEEP = 256


def _orjson_limits_depth() -> bool:
    if _orjson is None:
        return False
    try:
        _orjson.loads(b"[" * 1100 + b"]" * 1100)
    except _orjson.JSONDecodeError:
        return True
    return False


_ORJSON_DEPTH_SAFE = _orjson_limits_depth()


def _decode_stdlib(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ReportError("invalid_json", f"not UTF-8 at byte {exc.start}") from exc
    except RecursionError as exc:  # thousands of nested brackets: the C decoder gives up
        raise ReportError("invalid_json", "nested too deeply") from exc
    except json.JSONDecodeError as exc:
        # Every report is one object: one that does not end with '}' was cut short (the node
        # writes non-atomically), anything else is malformed.
        reason = "invalid_json" if data.rstrip().endswith(b"}") else "partial"
        raise ReportError(reason, f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except ValueError as exc:  # an integer of more than 4300 digits (int_max_str_digits)
        raise ReportError("invalid_json", f"{exc}"[:80]) from exc


def decode(data: bytes) -> Any:
    """The JSON value of ``data``, or ReportError with the stdlib's reason."""
    if _orjson is not None and (_ORJSON_DEPTH_SAFE or data.count(b"[") + data.count(b"{") < _DEEP):
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass  # the stdlib decides, and says why
    return _decode_stdlib(data)


def parse_report(data: bytes) -> Report:
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError("too_large", f"{len(data)} bytes > {MAX_REPORT_BYTES}")
    if not data.strip():
        raise ReportError("partial", "empty file")
    doc = decode(data)
    if type(doc) is not dict:
        raise ReportError("schema", "<root>: expected object")
    return _from_doc(doc)


def _from_doc(doc: dict[str, Any]) -> Report:
    p = _parents(doc)
    missing: list[str] = []
    status = _first(p, str, F_STATUS, missing)
    # G1 reports and older G2 status documents say "Committed"; the G2 status at HEAD says
    # "committed" (tests/fixtures/agent_world/g2-chain-status-head.json): one status either way.
    status = _STATUS_BY_LOWER.get(status.lower(), status) if status is not None else None
    if status is not None and status not in STATUSES:
        raise ReportError("schema", f"{_C}last_status: expected one of {STATUSES}, got {status!r}")
    reasons = _first(p, dict, F_REASONS, missing)
    if reasons is not None and not all(isinstance(k, str) and _is_u64(v) for k, v in reasons.items()):
        raise ReportError("schema", "distfs_probe_cursor_state.cumulative_failure_reasons: expected {str: int}")
    return _make(Report, dict(
        observed_at_ms=_first_int(p, F_OBSERVED, None),
        node_id=_first(p, str, F_NODE_ID, missing),
        role=_first(p, str, F_ROLE, missing),
        epoch_index=_first_int(p, F_EPOCH, missing),
        # Without the consensus block a document says nothing the gates can judge: it is refused
        # (counted as schema) and the node keeps its last good readings, instead of blanking them.
        committed_height=_first_int(p, F_COMMITTED, None),
        network_committed_height=_first_int(p, F_NETWORK, missing),
        last_execution_height=_first_int(p, F_EXECUTION, missing),
        last_status=status,
        last_block_hash=_first(p, str, F_HASH, missing),
        # Only nodes that execute carry these (the G2 sequencer; slim G2 files never): not "missing".
        last_execution_block_hash=_first(p, str, F_EXEC_HASH, []),
        last_execution_state_root=_first(p, str, F_STATE_ROOT, []),
        peer_heads=_peers(p[F_PEERS[0][1]].get(F_PEERS[0][2])),
        distfs_total=_first_int(p, F_DISTFS_TOTAL, missing),
        distfs_passed=_first_int(p, F_DISTFS_PASSED, missing),
        distfs_failed=_first_int(p, F_DISTFS_FAILED, missing),
        distfs_reasons=dict(reasons) if reasons else {},
        invariant_ok=_first(p, bool, F_INV_OK, missing),
        invariant_violations=_first_int(p, F_INV_VIOLATIONS, missing),
        missing=tuple(missing),
    ))


def parse_document(doc: dict[str, Any]) -> Report:
    """For status endpoints, whose body was already decoded."""
    return _from_doc(doc)
