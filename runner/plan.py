"""Chaos plans: a file (the old JSON format, or YAML) validated whole before anything runs,
and continuous chaos that picks the same node/action sequence as the old script per seed."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from soakcore.errors import InputError, UsageError
from soakcore.files import load_document
from soakcore.ids import validate_name
from soakcore.actions import ACTION_FIELDS, ACTIONS, CHAOS_ACTIONS, Field

MINSTD_MODULUS = 2**31 - 1
MINSTD_MULTIPLIER = 48271
TOPOLOGY_SEED_STRIDE = 104729


@dataclass(frozen=True)
class ChaosEvent:
    id: str
    at_sec: float
    topology: str      # a topology name or "all"
    node: str
    action: str
    down_secs: float = 0.0
    duration_secs: float = 0.0
    # The action's own fields (soakcore.actions), validated; a missing one takes its default.
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, name: str) -> Any:
        given = dict(self.params)
        return given[name] if name in given else ACTIONS[self.action].defaults()[name]

    def applies_to(self, topology: str) -> bool:
        return self.topology in ("all", topology)


EVENT_FIELDS = frozenset(f.name for f in fields(ChaosEvent)) - {"params"}
MAX_SECS = 1e7  # ~115 days: beyond any soak, and within what a timed wait accepts


def _number(raw: dict[Any, Any], key: str, path: Path, where: str, default: float | None = None) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_SECS:  # NaN fails too
        raise InputError(path, f"{where}.{key}", f"expected a number of seconds within 0..{MAX_SECS:g}, got {value!r}")
    return float(value)


def parse_event(raw: Any, path: Path, i: int, topologies: dict[str, tuple[str, ...]]) -> ChaosEvent:
    """One event, validated; every error names the field and, once known, the event id."""
    where = f"events[{i}]"
    if not isinstance(raw, dict):
        raise InputError(path, where, "expected an object")
    event_id = raw.get("id", f"ev-{i:03d}")
    try:
        event_id = validate_name("event id", event_id)
    except UsageError as exc:
        raise InputError(path, f"{where}.id", str(exc)) from None
    ev = f"event {event_id!r}: "
    unknown = sorted(str(k) for k in raw if k not in EVENT_FIELDS | ACTION_FIELDS)
    if unknown:
        raise InputError(path, f"{where}.{unknown[0]}", ev + "unknown field")
    action = raw.get("action")
    if not isinstance(action, str) or action not in CHAOS_ACTIONS:
        raise InputError(path, f"{where}.action", ev + f"expected one of {', '.join(CHAOS_ACTIONS)}, got {action!r}")
    spec = ACTIONS[action]
    own = {f.name for f in spec.fields}
    foreign = sorted(str(k) for k in raw if k in ACTION_FIELDS and k not in own)
    if foreign:
        raise InputError(path, f"{where}.{foreign[0]}", ev + f"not a field of {action} "
                         f"(its fields: {', '.join(sorted(own)) or 'none'})")
    topology = raw.get("topology", "all")
    if not isinstance(topology, str) or (topology != "all" and topology not in topologies):
        raise InputError(path, f"{where}.topology",
                         ev + f"unknown topology {topology!r}; expected 'all' or one of {', '.join(topologies)}")
    node = raw.get("node")
    nodes = {n for t, ns in topologies.items() if topology in ("all", t) for n in ns}
    if not isinstance(node, str) or node not in nodes:
        raise InputError(path, f"{where}.node", ev + f"unknown node {node!r}; expected one of {', '.join(sorted(nodes))}")
    params = tuple((f.name, _field(f, raw[f.name], path, f"{where}.{f.name}", ev, node, nodes))
                   for f in spec.fields if f.name in raw)
    missing = [f.name for f in spec.fields if f.required and f.name not in raw]
    if missing:
        raise InputError(path, f"{where}.{missing[0]}", ev + f"{action} needs {missing[0]}")
    event = ChaosEvent(event_id, _number(raw, "at_sec", path, where),
                       topology, node, action, _number(raw, "down_secs", path, where, 0.0),
                       _number(raw, "duration_secs", path, where, 0.0), params)
    if spec.needs_duration and event.duration_secs <= 0:
        raise InputError(path, f"{where}.duration_secs", ev + f"{action} needs a positive duration")
    return event


def _field(f: Field, value: Any, path: Path, where: str, ev: str, node: str, nodes: set[str]) -> Any:
    """One action field, validated as its row in soakcore.actions says."""
    if f.kind in ("number", "integer"):
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and f.low <= value <= f.high
        if not ok or (f.kind == "integer" and value != int(value)):
            raise InputError(path, where, ev + f"expected {'an integer' if f.kind == 'integer' else 'a number'} "
                             f"within {f.low:g}..{f.high:g}, got {value!r}")
        return int(value) if f.kind == "integer" else float(value)
    if f.kind == "choice":
        if not isinstance(value, str) or value not in f.choices:
            raise InputError(path, where, ev + f"expected one of {', '.join(f.choices)}, got {value!r}")
        return value
    others = sorted(nodes - {node})
    if (not isinstance(value, list) or not value or len(set(map(str, value))) != len(value)
            or not all(isinstance(v, str) and v in others for v in value)):
        raise InputError(path, where, ev + f"expected a non-empty list of distinct nodes other than {node!r} "
                         f"({', '.join(others) or 'none'}), got {value!r}")
    return tuple(value)


def load_plan(path: Path, topologies: dict[str, tuple[str, ...]],
              duration_secs: float | None = None) -> tuple[ChaosEvent, ...]:
    """Load and validate a whole plan in linear time; ``topologies`` maps each topology to its
    node labels. With ``duration_secs``, an event that would start after the run is an error."""
    doc = load_document(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        raise InputError(path, "events", "expected an object with an 'events' list")
    events, seen = [], set()
    for i, raw in enumerate(doc["events"]):
        event = parse_event(raw, path, i, topologies)
        if event.id in seen:
            raise InputError(path, f"events[{i}].id", f"duplicate id {event.id!r}")
        if duration_secs is not None and event.at_sec >= duration_secs:
            raise InputError(path, f"events[{i}].at_sec", f"event {event.id!r} at {event.at_sec:g}s never happens: "
                             f"the run lasts {duration_secs:g}s per topology")
        seen.add(event.id)
        events.append(event)
    return tuple(sorted(events, key=lambda e: (e.at_sec, e.id)))


class Minstd:
    """Park-Miller minimal standard generator, as the old script used it."""

    def __init__(self, seed: int) -> None:
        self.state = seed % MINSTD_MODULUS or 1

    def next(self) -> int:
        self.state = self.state * MINSTD_MULTIPLIER % MINSTD_MODULUS
        return self.state

    def pick(self, items: tuple[str, ...]) -> str:
        return items[self.next() % len(items)]


@dataclass(frozen=True)
class Continuous:
    interval_secs: float = 30
    start_sec: float = 30
    max_events: int = 0          # 0 = as many as fit in the duration
    actions: tuple[str, ...] = ("restart", "pause")
    seed: int = 0
    restart_down_secs: float = 1
    pause_duration_secs: float = 2


def continuous_events(cfg: Continuous, topology: str, index: int, nodes: tuple[str, ...],
                      duration_secs: float) -> tuple[ChaosEvent, ...]:
    """Node first, then action, from a per-topology MINSTD stream (seed + (index+1)*104729)."""
    rng = Minstd(cfg.seed + (index + 1) * TOPOLOGY_SEED_STRIDE)
    events: list[ChaosEvent] = []
    at = cfg.start_sec
    while at < duration_secs and (cfg.max_events == 0 or len(events) < cfg.max_events):
        node, action = rng.pick(nodes), rng.pick(cfg.actions)
        timing = ACTIONS[action].timing  # every action field takes its default
        down = cfg.restart_down_secs if timing == "down" else 0.0
        dur = cfg.pause_duration_secs if timing == "duration" else 0.0
        events.append(ChaosEvent(f"cc-{index}-{len(events):03d}", at, topology, node, action, down, dur))
        at += cfg.interval_secs
    return tuple(events)
