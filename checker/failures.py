"""failures.md: for each failed gate, when, which node, the query that reproduces it (and
the time to evaluate it at), the chaos around it, and the tail of that node's stderr."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from soakcore.files import tail

# Chaos events this close to the first failure are listed beside it: a fault's effects
# (a backlog, a resync) can take minutes to cross a threshold.
AROUND_SECS = 600
STDERR_TAIL_BYTES = 1500


def fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _stamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _chaos_log(run_dir: Path | None, topology: str) -> list[tuple[float | None, str]]:
    """Lines of ``chaos_events.log`` (timestamp|topology|event_id|phase|action|node|detail)."""
    path = run_dir / "chaos_events.log" if run_dir else None
    if path is None or not path.exists():
        return []
    rows = [line.split("|") for line in path.read_text(errors="replace").splitlines()[1:]]
    return [(_stamp(r[0]), "|".join(r)) for r in rows if len(r) >= 6 and r[1] == topology]


def _chaos_near(t: dict[str, Any], g: dict[str, Any], run_dir: Path | None) -> list[str]:
    at = _stamp(g["first_failed_at"]) if g["first_failed_at"] else None
    near = lambda ts: at is None or ts is None or abs(ts - at) <= AROUND_SECS  # noqa: E731
    logged = [line for ts, line in _chaos_log(run_dir, t["topology"]) if near(ts)]
    if logged:
        return logged
    # No run directory (a plain window check): the chaos windows Prometheus saw.
    return [f"{w['start']}..{w['end']} {w['action']} on {w['node']}" for w in t["chaos_windows"]
            if near(_stamp(w["start"])) or near(_stamp(w["end"]))]


def _gate_section(t: dict[str, Any], g: dict[str, Any], run_dir: Path | None) -> list[str]:
    lines = [f"## {t['topology']}: {g['alert']} — {g['status']}", "",
             f"- when: {g['first_failed_at'] or 'n/a'}; worst node: {g['worst_node'] or '-'}; "
             f"value {fmt(g['value'])} vs threshold {fmt(g['threshold'])}", "",
             *([f"- note: {g['note']}", ""] if g.get("note") else []),
             f"Reproduce (instant query at {g.get('evaluated_at') or (t['window']['until'] if t['window'] else '-')}; "
             f'keep the series with run_id="{t["run_id"]}", topology="{t["topology"]}"):', "```promql", g["query"], "```"]
    chaos = _chaos_near(t, g, run_dir)
    lines += ["Chaos around it:", "```", *(chaos or ["(none)"]), "```"]
    node = g["worst_node"]
    if run_dir and node:
        err = tail(run_dir / t["topology"] / "nodes" / node / "stderr.log", STDERR_TAIL_BYTES)
        lines += [f"Tail of {t['topology']}/nodes/{node}/stderr.log:", "```", err or "(empty)", "```"]
    return lines + [""]


def failures_markdown(doc: dict[str, Any], run_dir: Path | None) -> str:
    lines = ["# Failures", ""]
    for t in doc["topologies"]:
        for g in t["gates"].values():
            # Critical gates that did not pass: what made (or, with missing data, may make) the run fail.
            if g["status"] != "pass" and g["severity"] == "critical":
                lines += _gate_section(t, g, run_dir)
        if t["status"] != "ok" and all(g["status"] == "pass" for g in t["gates"].values()):
            lines += [f"## {t['topology']}: {t['status']} (process {t['process_status']})", *t["notes"], ""]
    return "\n".join(lines) + "\n"
