"""Synthetic soak histories with known faults, as OpenMetrics text backfilled into a real
Prometheus TSDB with ``promtool tsdb create-blocks-from openmetrics``.

Used by the checker's tests and benchmark: the checker then runs against a real Prometheus
over data whose right verdict is known. Values follow the metric catalog (DESIGN.md) and
are deterministic, so outputs can be golden-tested.
"""
from __future__ import annotations

import math
import subprocess
from contextlib import contextmanager
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from alerts.profiles import get_profile
from soakcore.actions import ACTIONS
from soakcore.errors import EvaluationError
from soakcore.services import PROMTOOL_BIN, Service, find_binary, start_prometheus

MiB = 1024 * 1024
Sample = tuple[str, tuple[tuple[str, str], ...], float, float]  # metric, labels, unix time, value
KINDS = ("stall", "lag", "regression", "fork", "distfs", "invariant", "crash", "memory", "reports_missing",
         "pause", "alert", "down")


@dataclass(frozen=True)
class Fault:
    """``kind`` in KINDS, in effect from ``start`` to ``end`` (seconds after the history start).

    ``pause`` marks ``node`` as paused by chaos (soak_chaos_active, exempt until the window's
    end plus the action's grace) and, on the consensus-critical node (the first one), stalls
    the topology like a paused sequencer would; ``alert`` writes an ALERTS series named ``node``; ``down``
    reports ``node``'s process as not running (soak_process_up 0) outside any chaos."""

    kind: str
    start: float
    end: float
    node: str = ""
    amount: float = 0.0


@dataclass(frozen=True)
class History:
    run_id: str
    topology: str
    nodes: tuple[str, ...]
    start: float
    duration: float
    step: float = 10.0
    faults: tuple[Fault, ...] = ()
    profile: str = "soak_smoke"
    # False: only soak_run_info and thresholds (an empty run: every gate lacks data).
    with_data: bool = True
    epoch_secs: float = 20.0
    # True: the alert rules ran (soak:gate_value exists), so ALERTS can be cross-checked.
    rules_evaluated: bool = False
    # soak_run_info's profile label when it differs from ``profile`` (an unknown profile).
    profile_label: str | None = None
    # Exported thresholds that differ from the profile's (an override, NaN included).
    thresholds: tuple[tuple[str, float], ...] = ()

    def active(self, kind: str, s: float, node: str | None = None) -> Fault | None:
        return next((f for f in self.faults if f.kind == kind and f.start <= s < f.end
                     and (node is None or not f.node or f.node == node)), None)

    def times(self) -> Iterator[tuple[float, float]]:
        n = int(self.duration // self.step)
        return ((i * self.step, self.start + i * self.step) for i in range(n + 1))


def _union(spans: Iterator[tuple[float, float]]) -> float:
    total, reach = 0.0, -math.inf
    for a, b in sorted(spans):
        a = max(a, reach)
        if b > a:
            total, reach = total + b - a, b
    return total


def _critical_pause(h: History, f: Fault) -> bool:
    return f.kind == "pause" and (not f.node or f.node == h.nodes[0])


def _stalled_secs(h: History, s: float) -> float:
    """Seconds of the first ``s`` seconds during which the topology made no progress
    (stall windows and pauses of the critical node may overlap: their union counts once)."""
    return _union((f.start, min(s, f.end)) for f in h.faults if f.kind == "stall" or _critical_pause(h, f))


def _stalled_since(h: History, s: float) -> float:
    """When the height last rose: just before the current stall began."""
    since = s
    while since > 0 and _stalled_secs(h, since) > _stalled_secs(h, since - h.step):
        since -= h.step
    return since


def _stall_clock(h: History, s: float) -> float:
    """``soak_consensus_stall_seconds`` as the exporter computes it (one per topology): time
    since the last progress, pauses of the critical node (window + grace) not counted."""
    since, grace = _stalled_since(h, s), ACTIONS["pause"].grace_secs
    paused = _union((max(f.start, since), min(f.end + grace, s)) for f in h.faults if _critical_pause(h, f))
    return max(0.0, s - since - paused)


def _node_samples(h: History, node: str, s: float, t: float) -> Iterator[tuple[str, dict[str, str], float]]:
    progressed = s - _stalled_secs(h, s)          # one block per second of progress
    height = float(int(progressed))
    lag = h.active("lag", s, node)
    yield "soak_consensus_network_committed_height", {}, height
    yield "soak_consensus_committed_height", {}, height - (lag.amount if lag else 0.0)
    yield "soak_consensus_last_progress_timestamp_seconds", {}, h.start + _stalled_since(h, s)
    yield "soak_consensus_height_regressions_excused_total", {}, 0.0
    yield "soak_consensus_height_regressions_total", {}, float(sum(
        1 for f in h.faults if f.kind == "regression" and f.node == node and f.start <= s))
    failed = sum(f.amount * max(0.0, min(s, f.end) - f.start) / h.step
                 for f in h.faults if f.kind == "distfs" and f.node in ("", node))
    checks = 10.0 * (s // h.step)
    yield "soak_distfs_checks_total", {"result": "failed"}, float(int(failed))
    yield "soak_distfs_checks_total", {"result": "passed"}, checks - float(int(failed))
    yield "soak_reward_invariant_ok", {}, 0.0 if h.active("invariant", s, node) else 1.0
    yield "soak_reward_invariant_violations", {}, 1.0 if h.active("invariant", s, node) else 0.0
    crashes = [f for f in h.faults if f.kind == "crash" and f.node == node and f.start <= s]
    yield "soak_process_restarts_total", {"cause": "crash"}, float(len(crashes))
    yield "soak_process_start_time_seconds", {}, h.start + max((f.start for f in crashes), default=-600.0)
    yield "soak_process_up", {}, 0.0 if h.active("down", s, node) else 1.0
    leak = next((f for f in h.faults if f.kind == "memory" and f.node == node and f.start <= s), None)
    grown = leak.amount * (min(s, leak.end) - leak.start) / 3600 if leak else 0.0
    yield "soak_process_resident_memory_bytes", {}, 100 * MiB + float(int(grown))
    yield "soak_process_open_fds", {}, 40.0
    yield "soak_node_disk_bytes", {}, 8 * MiB
    gap = h.active("reports_missing", s, node)
    epoch_at = gap.start if gap else s
    yield "soak_report_last_epoch_index", {}, float(int(epoch_at // h.epoch_secs))
    yield "soak_report_last_observed_timestamp_seconds", {}, h.start + (epoch_at // h.epoch_secs) * h.epoch_secs
    yield "soak_report_last_arrival_timestamp_seconds", {}, h.start + (epoch_at // h.epoch_secs) * h.epoch_secs
    yield "soak_report_gap_seconds", {}, s - (epoch_at // h.epoch_secs) * h.epoch_secs  # the exporter's gap clock
    yield "soak_reports_total", {}, float(int(epoch_at // h.epoch_secs) + 1)
    pause = h.active("pause", s, node)
    yield "soak_chaos_active", {"action": "pause"}, 1.0 if pause and pause.node == node else 0.0
    ended = max((f.end for f in h.faults if f.kind == "pause" and f.node == node and f.start <= s), default=None)
    if ended is not None:  # the exporter's exemption: window end (now while in effect) + the action's grace
        yield ("soak_chaos_exempt_until_timestamp_seconds", {"action": "pause"},
               h.start + min(ended, s) + ACTIONS["pause"].grace_secs)


def samples(h: History) -> Iterator[Sample]:
    base = {"run_id": h.run_id, "topology": h.topology}
    thresholds = {**get_profile(h.profile).thresholds, **dict(h.thresholds)}

    def out(metric: str, extra: Mapping[str, str], t: float, v: float) -> Sample:
        return metric, tuple(sorted({**base, **extra}.items())), t, v

    for s, t in h.times():
        yield out("soak_run_info", {"profile": h.profile_label or h.profile, "scenario": "synthetic"}, t, 1.0)
        for key, value in thresholds.items():
            yield out("soak_gate_threshold", {"gate": key}, t, float(value))
        for f in h.faults:
            if f.kind == "alert" and f.start <= s < f.end:
                yield out("ALERTS", {"alertname": f.node, "alertstate": "firing", "severity": "critical"}, t, 1.0)
        if h.rules_evaluated:
            yield out("soak:gate_value", {"gate": "consensus_stalled"}, t, 0.0)
        if not h.with_data:
            continue
        yield out("up", {"job": "soak-exporter"}, t, 1.0)
        yield out("soak_exporter_scrape_duration_seconds", {}, t, 0.01)
        yield out("soak_exporter_scrape_error", {}, t, 0.0)
        yield out("soak_consensus_stall_seconds", {}, t, _stall_clock(h, s))
        yield out("soak_consensus_hash_mismatches_total", {}, t,
                  float(sum(1 for f in h.faults if f.kind == "fork" and f.start <= s)))
        for node in h.nodes:
            for metric, extra, v in _node_samples(h, node, s, t):
                yield out(metric, {"node": node, **extra}, t, v)


def _number(v: float) -> str:
    """A sample value as OpenMetrics spells it (NaN, +Inf, -Inf)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def openmetrics(histories: list[History]) -> str:
    """OpenMetrics text: one family block per metric, each series' samples in time order."""
    families: dict[str, dict[tuple[tuple[str, str], ...], list[str]]] = defaultdict(lambda: defaultdict(list))
    for h in histories:
        for metric, labels, t, v in samples(h):
            families[metric][labels].append(f"{_number(v)} {t:.3f}")
    lines: list[str] = []
    for metric, series in families.items():
        lines.append(f"# TYPE {metric} gauge")
        for labels, points in series.items():
            head = metric + "{" + ",".join(f'{k}="{val}"' for k, val in labels) + "}"
            lines.extend(f"{head} {p}" for p in points)
    return "\n".join(lines) + "\n# EOF\n"


def backfill(histories: list[History], data_dir: Path) -> Path:
    """Write the histories as TSDB blocks into ``data_dir`` (created) with promtool."""
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir.parent / "histories.om"
    source.write_text(openmetrics(histories))
    done = subprocess.run([find_binary(PROMTOOL_BIN), "tsdb", "create-blocks-from", "openmetrics",
                           str(source), str(data_dir)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise EvaluationError(f"promtool backfill failed: {done.stderr.strip()[-500:]}")
    return data_dir


@contextmanager
def backfilled_prometheus(base: Path, histories: list[History]) -> Iterator[Service]:
    """A real Prometheus over ``histories`` backfilled into ``base/data`` (long retention:
    the fixed 2026-01-01 histories must not be deleted as too old)."""
    backfill(histories, base / "data")
    (base / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
    prom = start_prometheus(base / "prometheus.yml", base / "data",
                            extra_args=("--storage.tsdb.retention.time=100y",))
    try:
        yield prom
    finally:
        prom.stop()
