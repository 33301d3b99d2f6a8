"""The run-state file: the runner rewrites it atomically, the exporter reads it.

It is the one channel from the doer (runner) to the observer (exporter): which nodes
exist, where their reports and working directories are, their current pids, restarts
by cause, chaos state, thresholds and run metadata. JSON, schema version 1:

{
  "version": 1,
  "run_id": "20261127-004800", "topology": "triad_distributed",
  "profile": "soak_smoke", "scenario": "triad_p2p_bootstrap",
  "thresholds": {"max_stall_secs": 300.0, ...},          # alerts.profiles keys
  "nodes": [{"node": "sequencer", "role": "sequencer", "node_id": "...-sequencer",
             "report_dir": "/abs/...", "work_dir": "/abs/...", "pid": 1234 | null,
             "status_url": "http://127.0.0.1:5611/v1/chain/status" | null,
             "restarts": {"chaos": 0, "crash": 0},
             "started_at": 1795000000.5 | null,      # first start in this run (unix s)
             "critical": true}],                     # consensus-critical: its loss stops commits
  "chaos_windows": [{"node": "storage", "action": "pause", "event_id": "td-pause",
                     "start": 1795000010.0, "end": 1795000015.0 | null}],   # null: in effect
  "chaos_events": [{"node": "storage", "action": "pause", "phase": "completed", "count": 2}]
}

Every fault window of the run is kept (not a set of active faults): two overlapping faults
on one node are two windows, and the first to end does not end the other. Times are the
runner's wall clock, the same machine's clock the exporter reads.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from soakcore.actions import CHAOS_ACTIONS
from soakcore.errors import InputError
from soakcore.ids import validate_name

VERSION = 2
CHAOS_PHASES = ("completed", "failed", "skipped")
RESTART_CAUSES = ("chaos", "crash")


@dataclass(frozen=True)
class NodeState:
    node: str
    role: str
    node_id: str
    report_dir: str
    work_dir: str
    pid: int | None = None
    status_url: str | None = None
    restarts: dict[str, int] = field(default_factory=lambda: {"chaos": 0, "crash": 0})
    started_at: float | None = None
    critical: bool = False


@dataclass(frozen=True)
class ChaosWindow:
    node: str
    action: str
    event_id: str
    start: float
    end: float | None = None   # None while the fault is in effect


@dataclass(frozen=True)
class ChaosCount:
    node: str
    action: str
    phase: str
    count: int


@dataclass(frozen=True)
class RunState:
    run_id: str
    topology: str
    profile: str
    scenario: str
    thresholds: dict[str, float]
    nodes: tuple[NodeState, ...]
    chaos_windows: tuple[ChaosWindow, ...] = ()
    chaos_events: tuple[ChaosCount, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["version"] = VERSION
        return doc


def write_run_state(path: Path, state: RunState) -> None:
    """Atomically replace ``path`` (write temp file in the same dir, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".run_state.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(state.to_json(), fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _req(doc: dict[str, Any], key: str, typ: type | tuple[type, ...], path: Path, where: str) -> Any:
    if key not in doc:
        raise InputError(path, f"{where}{key}", "missing")
    value = doc[key]
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise InputError(path, f"{where}{key}", f"expected {getattr(typ, '__name__', typ)}, got {type(value).__name__}")
    return value


def _node(raw: Any, path: Path, i: int) -> NodeState:
    where = f"nodes[{i}]."
    if not isinstance(raw, dict):
        raise InputError(path, f"nodes[{i}]", "expected object")
    pid = raw.get("pid")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0):
        raise InputError(path, f"{where}pid", f"expected positive int or null, got {pid!r}")
    restarts = raw.get("restarts") or {}
    if not isinstance(restarts, dict) or any(
            k not in RESTART_CAUSES or not isinstance(v, int) for k, v in restarts.items()):
        raise InputError(path, f"{where}restarts", "expected {chaos: int, crash: int}")
    return NodeState(
        node=validate_name("node", _req(raw, "node", str, path, where)),
        role=_req(raw, "role", str, path, where),
        node_id=_req(raw, "node_id", str, path, where),
        report_dir=_req(raw, "report_dir", str, path, where),
        work_dir=_req(raw, "work_dir", str, path, where),
        pid=pid,
        status_url=raw.get("status_url"),
        restarts={"chaos": restarts.get("chaos", 0), "crash": restarts.get("crash", 0)},
        started_at=_time(raw.get("started_at"), path, f"{where}started_at", optional=True),
        critical=bool(raw.get("critical", False)),
    )


def read_run_state(path: Path) -> RunState:
    """Parse and validate a run-state file; raise InputError naming file and field."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InputError(path, "<file>", f"cannot read: {exc.strerror}") from exc
    except ValueError as exc:
        raise InputError(path, "<file>", f"invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InputError(path, "<root>", "expected object")
    if doc.get("version") != VERSION:
        raise InputError(path, "version", f"expected {VERSION}, got {doc.get('version')!r}")
    thresholds = _req(doc, "thresholds", dict, path, "")
    for key, value in thresholds.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InputError(path, f"thresholds.{key}", f"expected number, got {value!r}")
    windows = tuple(_window(raw, path, i) for i, raw in enumerate(_req(doc, "chaos_windows", list, path, "")))
    counts = []
    for i, raw in enumerate(_req(doc, "chaos_events", list, path, "")):
        phase = raw.get("phase")
        if phase not in CHAOS_PHASES:
            raise InputError(path, f"chaos_events[{i}].phase", f"expected one of {CHAOS_PHASES}, got {phase!r}")
        counts.append(ChaosCount(node=validate_name("node", raw.get("node")),
                                 action=_action(raw.get("action"), path, f"chaos_events[{i}].action"),
                                 phase=phase, count=int(raw.get("count", 0))))
    return RunState(
        run_id=validate_name("run_id", _req(doc, "run_id", str, path, "")),
        topology=validate_name("topology", _req(doc, "topology", str, path, "")),
        profile=_req(doc, "profile", str, path, ""),
        scenario=_req(doc, "scenario", str, path, ""),
        thresholds={k: float(v) for k, v in thresholds.items()},
        nodes=tuple(_node(raw, path, i) for i, raw in enumerate(_req(doc, "nodes", list, path, ""))),
        chaos_windows=windows,
        chaos_events=tuple(counts),
    )


def _action(value: object, path: Path, field_name: str) -> str:
    if value not in CHAOS_ACTIONS:
        raise InputError(path, field_name, f"expected one of {CHAOS_ACTIONS}, got {value!r}")
    return str(value)


def _time(value: object, path: Path, field_name: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(path, field_name, f"expected unix seconds, got {value!r}")
    return float(value)


def _window(raw: Any, path: Path, i: int) -> ChaosWindow:
    where = f"chaos_windows[{i}]"
    if not isinstance(raw, dict):
        raise InputError(path, where, "expected object")
    start = _time(raw.get("start"), path, f"{where}.start")
    end = _time(raw.get("end"), path, f"{where}.end", optional=True)
    assert start is not None
    if end is not None and end < start:
        raise InputError(path, f"{where}.end", f"ends before it starts ({end} < {start})")
    return ChaosWindow(node=validate_name("node", raw.get("node")),
                       action=_action(raw.get("action"), path, f"{where}.action"),
                       event_id=str(raw.get("event_id", "")), start=start, end=end)
