"""The run's verdict files: summary.json (every key of the old script's summary, plus
per-gate results), summary.md, failures.md, timeline.csv, junit.xml and plots."""
from __future__ import annotations

import csv
import json
import math
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence
from xml.etree import ElementTree as ET

from alerts.gates import GATES
from alerts.profiles import Profile
from checker.api import RunMeta, TopologyMeta, TopologyVerdict
from checker.figures import TIMELINE_COLUMNS
from checker.failures import failures_markdown, fmt
from checker.plots import plot_topology


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _status_without_verdict(m: TopologyMeta | None, profile: Profile) -> str:
    """No data to judge: a warning under smoke (unless the process itself failed), a failure otherwise."""
    broken = m is not None and m.process_status not in ("ok", "unknown")
    return "failed" if broken or profile.insufficient_data_fails else "ok"


def outcome(status: str, severity: str) -> str:
    """What a gate's result means for the run: a warning-severity gate that failed is a
    ``warn`` (reported, never a failure, never the exit code)."""
    return "warn" if status == "fail" and severity != "critical" else status


def _unjudged_gates(profile: Profile) -> dict[str, Any]:
    """Every gate of a topology that has no data at all: insufficient data, each listed."""
    return {g.name: {"status": "insufficient_data", "outcome": "insufficient_data", "severity": g.severity,
                     "alert": g.alert, "value": None,
                     "threshold": profile.thresholds.get(g.threshold_key, 0.0) if g.threshold_key else 0.0,
                     "query": g.value, "worst_node": None, "first_failed_at": None,
                     "note": "no data for this topology in its window", "evaluated_at": None} for g in GATES}


def _topology(v: TopologyVerdict | None, m: TopologyMeta | None, name: str, profile: Profile) -> dict[str, Any]:
    gate_status = v.metric_gate_status if v else "insufficient_data"
    failed = [g for g in (v.gates if v else ()) if g.status != "pass"]
    status = v.status if v else _status_without_verdict(m, profile)
    if m is not None and m.process_status == "aborted":
        status = "aborted"
    return {
        "topology": name, "run_id": v.run_id if v else None, "status": status, "process_status": m.process_status if m else "unknown",
        "started_at": iso(m.started_at if m else v and v.since), "ended_at": iso(m.ended_at if m else v and v.until),
        "notes": list(m.notes) if m else [], "report_samples": (v.figures.get("report_samples", 0) if v else 0),
        "chaos_events": m.chaos_events if m else (v.figures.get("chaos_events", 0) if v else 0),
        "metric_gate": {"status": gate_status,
                        "notes": [f"{g.alert} ({g.severity}): {outcome(g.status, g.severity)}" for g in failed]},
        "metrics": dict(v.figures) if v else {},
        "gates": {g.name: {"status": g.status, "outcome": outcome(g.status, g.severity),
                           "severity": g.severity, "alert": g.alert, "value": g.value,
                           "threshold": g.threshold, "query": g.query, "worst_node": g.worst_node,
                           "first_failed_at": iso(g.first_failed_at), "note": g.note,
                           "evaluated_at": iso(g.evaluated_at)}
                  for g in (v.gates if v else ())} if v else _unjudged_gates(profile),
        "alerts_fired": list(v.alerts_fired) if v else [], "disagreements": list(v.disagreements) if v else [],
        "window": {"since": iso(v.since), "until": iso(v.until), "judged_until": iso(v.judged_until)} if v else None,
        "chaos_windows": [{**w, "start": iso(w["start"]), "end": iso(w["end"])}
                          for w in (v.series.get("chaos_windows", []) if v else [])],
        "alert_crosscheck": ("done" if v.rules_evaluated else "skipped: no rule evaluations in the window")
        if v else "skipped: no data",
    }


def summary(verdicts: Sequence[TopologyVerdict], meta: RunMeta) -> dict[str, Any]:
    metas = {m.topology: m for m in meta.topologies}
    names = list(dict.fromkeys([*metas, *(v.topology for v in verdicts)]))
    by_name = {v.topology: v for v in verdicts}
    tops = [_topology(by_name.get(n), metas.get(n), n, meta.profile) for n in names]
    ok = [t for t in tops if t["status"] == "ok"]
    overall = "aborted" if meta.aborted else ("ok" if tops and len(ok) == len(tops) else "failed")
    # The numbers the gates were judged with (the run's own exported ones without --profile).
    th = dict(verdicts[0].thresholds) if verdicts and verdicts[0].thresholds else dict(meta.profile.thresholds)
    return {
        "generated_at_utc": iso(time.time()), "run_dir": str(meta.run_dir) if meta.run_dir else None,
        "profile": meta.profile.name, "scenario": meta.scenario, "chaos_plan": meta.chaos_plan,
        "chaos_continuous": meta.chaos_continuous, "duration_secs_per_topology": meta.duration_secs,
        "thresholds": {"max_stall_secs": th.get("max_stall_secs"), "max_lag_p95": th.get("max_lag_p95"),
                       "max_distfs_failure_ratio": th.get("max_distfs_failure_ratio"), **th},
        "artifacts": {"summary_md": "summary.md", "timeline_csv": "timeline.csv", "junit_xml": "junit.xml",
                      "chaos_events_log": "chaos_events.log", "alerts_log": "alerts.log", "prometheus_tsdb": "prometheus",
                      "failures_md": "failures.md" if overall != "ok" else None,
                      "plots": [f"plots/{n}.png" for n in by_name]},
        "totals": {"topology_count": len(tops), "topology_ok_count": len(ok),
                   "topology_failed_count": len(tops) - len(ok),
                   "report_samples_total": sum(t["report_samples"] for t in tops),
                   "chaos_events_total": sum(t["chaos_events"] for t in tops),
                   "alerts_fired_total": sum(len(t["alerts_fired"]) for t in tops)},
        "gate_failures": [{"topology": t["topology"], "reason": note} for t in tops
                          if t["status"] != "ok" for note in (t["metric_gate"]["notes"] or [t["process_status"]])],
        "topologies": tops, "overall_status": overall, "notes": list(meta.notes),
        "gates": _worst_gates(tops),
        "alerts_fired": [{"topology": t["topology"], **a} for t in tops for a in t["alerts_fired"]],
        "disagreements": [{"topology": t["topology"], "reason": d} for t in tops for d in t["disagreements"]],
        "provenance": {"seed": meta.seed, "chaos_plan": meta.chaos_plan, "profile": meta.profile.name,
                       "run_ids": sorted({v.run_id or "" for v in verdicts}),
                       "versions": {"agent_world_soak": _version(), "python": platform.python_version(),
                                    "prometheus": next((v.prometheus_version for v in verdicts), None)},
                       "prometheus_url": meta.prometheus_url,
                       "queries": sum(v.queries for v in verdicts)},
    }


SEVERITY_ORDER = {"fail": 2, "insufficient_data": 1, "pass": 0}


def _worst_gates(tops: list[dict[str, Any]]) -> dict[str, Any]:
    """Per gate, the worst topology's result (fail > insufficient_data > pass), naming it."""
    worst: dict[str, Any] = {}
    for t in tops:
        for name, g in t["gates"].items():
            if name not in worst or SEVERITY_ORDER[g["status"]] > SEVERITY_ORDER[worst[name]["status"]]:
                worst[name] = {**g, "topology": t["topology"]}
    return worst


def write_reports(out_dir: Path, verdicts: Sequence[TopologyVerdict], meta: RunMeta) -> int:
    """Write every output file; return the exit code (0 pass, 1 failed or aborted)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = summary(verdicts, meta)
    for v in verdicts:
        plot_topology(v, out_dir / "plots" / f"{v.topology}.png")
    # Strict JSON: no NaN or Infinity tokens (json.loads elsewhere rejects them).
    (out_dir / "summary.json").write_text(json.dumps(strict(doc), indent=2, sort_keys=False, allow_nan=False) + "\n")
    (out_dir / "summary.md").write_text(_markdown(doc))
    _timeline(out_dir / "timeline.csv", verdicts)
    _junit(out_dir / "junit.xml", doc)
    if doc["overall_status"] != "ok":
        (out_dir / "failures.md").write_text(failures_markdown(doc, meta.run_dir))
    return 0 if doc["overall_status"] == "ok" else 1


def strict(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def _markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Soak verdict: **{doc['overall_status'].upper()}**", "",
             f"profile `{doc['profile']}`, scenario `{doc['scenario']}`, run `{doc['run_dir'] or '-'}`", ""]
    if doc["notes"]:
        lines += [f"- note: {n}" for n in doc["notes"]] + [""]
    for t in doc["topologies"]:
        lines += [f"## {t['topology']}: {t['status'].upper()} (gates: {t['metric_gate']['status']}, "
                  f"process: {t['process_status']})", "",
                  f"{t['started_at']} .. {t['ended_at']}; {t['report_samples']} reports, {t['chaos_events']} chaos events",
                  "", "| gate | severity | status | value | threshold | worst node |", "|---|---|---|---|---|---|"]
        for name, g in t["gates"].items():
            mark = {"pass": "pass", "fail": "**FAIL**", "warn": "WARN",
                    "insufficient_data": "_insufficient data_"}.get(g["outcome"], g["outcome"])
            lines.append(f"| {g['alert']} | {g['severity']} | {mark} | {fmt(g['value'])} | {fmt(g['threshold'])} "
                         f"| {g['worst_node'] or '-'} |")
        if t["alerts_fired"]:
            lines += ["", "Alerts fired: " + ", ".join(sorted({a.get('alertname', '?') for a in t["alerts_fired"]}))]
        for name, g in t["gates"].items():
            if g.get("note") and g["note"] not in " ".join(t["disagreements"]):
                lines.append(f"- {g['alert']}: {g['note']}")
        for d in t["disagreements"]:
            lines.append(f"- disagreement: {d}")
        for n in t["notes"]:
            lines.append(f"- note: {n}")
        lines += ["", f"![{t['topology']}](plots/{t['topology']}.png)", ""]
    return "\n".join(lines) + "\n"


def _timeline(path: Path, verdicts: Sequence[TopologyVerdict]) -> None:
    rows = sorted((r for v in verdicts for r in v.timeline), key=lambda r: (r["observed_at_unix_ms"] or 0, r["topology"], r["node"]))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=TIMELINE_COLUMNS)
        w.writeheader()
        w.writerows(rows)


def _junit(path: Path, doc: dict[str, Any]) -> None:
    suites = ET.Element("testsuites", name="soak")
    for t in doc["topologies"]:
        gates = t["gates"]
        suite = ET.SubElement(suites, "testsuite", name=t["topology"], tests=str(len(gates)),
                              failures=str(sum(g["outcome"] == "fail" for g in gates.values())),
                              skipped=str(sum(g["outcome"] == "insufficient_data" for g in gates.values())))
        for name, g in gates.items():
            case = ET.SubElement(suite, "testcase", classname=f"soak.{t['topology']}", name=name)
            props = ET.SubElement(case, "properties")
            for key in ("severity", "outcome"):
                ET.SubElement(props, "property", name=key, value=str(g[key]))
            if g["outcome"] == "fail":
                ET.SubElement(case, "failure", message=f"{fmt(g['value'])} > {fmt(g['threshold'])}").text = g["query"]
            elif g["outcome"] == "warn":
                # A warning is reported, never a failed test: CI must not go red on it.
                ET.SubElement(case, "system-out").text = (
                    f"WARN ({g['severity']}): {fmt(g['value'])} > {fmt(g['threshold'])}\n{g['query']}")
            elif g["outcome"] == "insufficient_data":
                ET.SubElement(case, "skipped", message="insufficient data")
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
