"""Old-script figures, plot series and the timeline, from range queries over catalog metrics.

Figures that a gate already measures (stall, slopes, crashes, forks) are taken from the gate
results, not queried again; the rest select by run_id/topology on raw catalog metrics.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from alerts.gates import outside_chaos
from soakcore.actions import DOWN
from checker.promapi import Prom

if TYPE_CHECKING:
    from checker.api import GateResult

Points = list[tuple[float, float]]
Rows = list[tuple[dict[str, str], Points]]
GATE_FIGURES = {"consensus_stalled": "max_stall_secs_observed", "memory_growth_high": "rss_growth_bytes_per_hour",
                "fd_growth_high": "fd_growth_per_hour", "disk_growth_high": "disk_growth_bytes_per_hour",
                "consensus_fork_detected": "fork_heights", "process_crashed": "crashes_in_5m_max",
                "committed_height_regressed": "height_regressions_in_5m_max"}


def nearest_rank(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _by_node(rows: list[tuple[dict[str, str], list[tuple[float, float]]]]) -> dict[str, list[tuple[float, float]]]:
    return {lab.get("node", "?"): pts for lab, pts in rows}


def _last(rows: list[tuple[dict[str, str], list[tuple[float, float]]]]) -> float | None:
    vals = [pts[-1][1] for _, pts in rows if pts]
    return sum(vals) if vals else None


def collect_figures(prom: Prom, results: "tuple[GateResult, ...]", run_id: str | None, topology: str,
                    since: float, until: float, step: float) -> tuple[dict[str, Any], dict[str, Any], tuple[dict[str, Any], ...]]:
    sel = f'run_id="{run_id}",topology="{topology}"' if run_id else f'topology="{topology}"'
    asked: dict[str, Rows] = {}

    def rng(q: str) -> Rows:
        """Each range query once (the figures and the timeline read some series both)."""
        if q not in asked:
            asked[q] = prom.range(q, since, until, step)
        return asked[q]

    lag_expr = outside_chaos(f"soak_consensus_network_committed_height{{{sel}}} - "
                             f"soak_consensus_committed_height{{{sel}}}", DOWN)
    lag = _by_node(rng(lag_expr))
    heights = _by_node(rng(f"soak_consensus_committed_height{{{sel}}}"))
    rss = _by_node(rng(f"soak_process_resident_memory_bytes{{{sel}}}"))
    fds = _by_node(rng(f"soak_process_open_fds{{{sel}}}"))
    disk = _by_node(rng(f"soak_node_disk_bytes{{{sel}}}"))
    failed = rng(f'sum by (node) (soak_distfs_checks_total{{{sel},result="failed"}})')
    passed = rng(f'sum by (node) (soak_distfs_checks_total{{{sel},result="passed"}})')
    total, ratio = _checks(_by_node(failed), _by_node(passed))
    chaos = rng(f"max by (node, action) (soak_chaos_active{{{sel}}}) > 0")
    inv = rng(f"min by (node) (soak_reward_invariant_ok{{{sel}}})")
    reports = rng(f"sum by (node) (soak_reports_total{{{sel}}})")
    restarts = rng(f"sum by (cause) (soak_process_restarts_total{{{sel}}})")
    chaos_done = rng(f'sum(soak_chaos_events_total{{{sel},phase="completed"}})')
    total_checks, failed_checks = _last(total), _last(failed)
    by_gate = {r.name: r for r in results}
    figures: dict[str, Any] = {
        "lag_p95": nearest_rank([v for pts in lag.values() for _, v in pts], 0.95),
        "distfs_failure_ratio": (failed_checks / total_checks) if total_checks else None,
        "distfs_total_checks": total_checks, "distfs_failed_checks": failed_checks,
        "invariant_all_ok": (all(v == 1 for _, pts in inv for _, v in pts) if inv else None),
        "report_samples": int(_last(reports) or 0),
        "restarts": {lab.get("cause", "?"): int(pts[-1][1]) for lab, pts in restarts if pts},
        "chaos_events": int(_last(chaos_done) or 0),
    }
    for gate, key in GATE_FIGURES.items():
        figures[key] = by_gate[gate].value if gate in by_gate else None
    windows = [{"node": lab.get("node"), "action": lab.get("action"), "start": s, "end": e}
               for lab, pts in chaos for s, e in _spans(pts, step)]
    series = {"heights": heights, "lag": lag, "rss": rss, "fds": fds, "disk": disk, "distfs_ratio": ratio,
              "chaos_windows": windows}
    return figures, series, _timeline(rng, sel, topology, since)


def _spans(points: list[tuple[float, float]], step: float) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    for t, _ in points:
        if spans and t - spans[-1][1] <= step * 1.5:
            spans[-1] = (spans[-1][0], t)
        else:
            spans.append((t, t))
    return spans


TIMELINE_COLUMNS = ("topology", "node", "epoch_index", "observed_at_unix_ms", "committed_height",
                    "network_committed_height", "lag", "total_checks", "failed_checks", "distfs_failure_ratio",
                    "invariant_ok", "report_path", "observed_at_utc", "secs_since_start")


def _checks(failed: dict[str, Points], passed: dict[str, Points]) -> tuple[Rows, dict[str, Points]]:
    """Per node, all checks (failed + passed, where either has a sample) and the failed ratio
    (where there were checks), at the range queries' common steps."""
    total: Rows = []
    ratio: dict[str, Points] = {}
    for node in sorted(set(failed) | set(passed)):
        f, p = dict(failed.get(node, [])), dict(passed.get(node, []))
        points = [(t, f.get(t, 0.0) + p.get(t, 0.0)) for t in sorted(set(f) | set(p))]
        total.append(({"node": node}, points))
        shares = [(t, f[t] / n) for t, n in points if t in f and n > 0]
        if shares:   # failed / total like PromQL: where a failed sample exists and there were checks
            ratio[node] = shares
    return total, ratio


def _timeline(rng: Callable[[str], Rows], sel: str, topology: str, since: float) -> tuple[dict[str, Any], ...]:
    """One row per new epoch report per node, time-ordered (old columns first)."""
    metric = {
        "epoch_index": "soak_report_last_epoch_index", "observed": "soak_report_last_observed_timestamp_seconds",
        "committed_height": "soak_consensus_committed_height",
        "network_committed_height": "soak_consensus_network_committed_height",
        "invariant_ok": "soak_reward_invariant_ok"}
    data = {k: _by_node(rng(f"{m}{{{sel}}}")) for k, m in metric.items()}
    for result in ("passed", "failed"):
        data[result] = _by_node(rng(f'sum by (node) (soak_distfs_checks_total{{{sel},result="{result}"}})'))
    rows = []
    for node, points in data["epoch_index"].items():
        at = {k: dict(data[k].get(node, [])) for k in data}
        prev = None
        for t, epoch in points:
            if epoch == prev:
                continue
            prev = epoch
            passed, failed = at["passed"].get(t), at["failed"].get(t)
            total = (passed or 0) + (failed or 0) if passed is not None or failed is not None else None
            committed, network = at["committed_height"].get(t), at["network_committed_height"].get(t)
            observed = at["observed"].get(t)
            rows.append({
                "topology": topology, "node": node, "epoch_index": int(epoch),
                "observed_at_unix_ms": int(observed * 1000) if observed else "",
                "committed_height": _int(committed), "network_committed_height": _int(network),
                "lag": _int(network - committed) if committed is not None and network is not None else "",
                "total_checks": _int(total), "failed_checks": _int(failed),
                "distfs_failure_ratio": round(failed / total, 6) if total and failed is not None else "",
                "invariant_ok": "" if at["invariant_ok"].get(t) is None else str(at["invariant_ok"][t] == 1).lower(),
                "report_path": f"{topology}/nodes/{node}/report/epoch-{int(epoch)}.json",
                "observed_at_utc": _utc_ms(observed) if observed else "",
                "secs_since_start": f"{observed - since:.3f}" if observed else ""})
    return tuple(sorted(rows, key=lambda r: (r["observed_at_unix_ms"] or 0, r["node"], r["epoch_index"])))


def _utc_ms(ts: float) -> str:
    """ISO 8601 UTC with milliseconds: ``2026-01-01T00:15:20.000Z``."""
    return datetime.fromtimestamp(round(ts, 3), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _int(v: float | None) -> int | str:
    return "" if v is None else int(v)
