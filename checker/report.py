"""The run's verdict files: summary.json (every key of the old script's summary, plus
per-gate results), summary.md, failures.md, timeline.csv, junit.xml and plots."""
from __future__ import annotations

import csv
import json
import math
import platform
import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence
from xml.etree import ElementTree as ET

from alerts.gates import GATES, Gate, gate_by_name
from alerts.profiles import Profile
from alerts.units import human, human_duration
from checker.api import RunMeta, TopologyMeta, TopologyVerdict
from checker.figures import TIMELINE_COLUMNS
from checker.failures import failures_markdown, when_text
from soakcore.catalog import BY_NAME, REPORTS, STATUS


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version(short: bool = True) -> str:
    """The stack's commit (``git rev-parse HEAD``), or ``unknown`` outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def not_judged_reason(g: Gate, note: str | None, thresholds: dict[str, float]) -> str:
    """Why a gate was not judged, in words: the checker's note when it gave one, else what its
    data requirement needs (warm-up, enough DistFS checks, reports)."""
    if note:
        return note
    if g.warmup:
        return (f"no process ran past the {human_duration(thresholds.get('warmup_secs', 0.0))} warm-up "
                "(`warmup_secs`) in the window: slopes are judged only after it")
    if "min_distfs_checks" in g.data:
        return (f"no node made {thresholds.get('min_distfs_checks', 0):g} DistFS checks "
                f"(`min_distfs_checks`){' within 5 minutes' if 'increase' in g.data else ''}")
    if "> 0" in g.data:
        return "no DistFS checks in the window"
    metric = next(iter(re.findall(r"soak_[a-z_]+", g.data)), g.data)
    source = BY_NAME[metric].source if metric in BY_NAME else ""
    what = "epoch reports" if source in (REPORTS, STATUS) else "exporter data"
    return f"no `{metric}` series in the window (no {what} for this topology)"


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
                     "note": "no data for this topology in its window", "evaluated_at": None, "unit": g.unit,
                     "reason": "no data for this topology in its window"} for g in GATES}


def _topology(v: TopologyVerdict | None, m: TopologyMeta | None, name: str, profile: Profile) -> dict[str, Any]:
    gate_status = v.metric_gate_status if v else "insufficient_data"
    failed = [g for g in (v.gates if v else ()) if g.status != "pass" and g.applicable]
    thresholds = dict(v.thresholds) if v and v.thresholds else dict(profile.thresholds)
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
                           "evaluated_at": iso(g.evaluated_at), "unit": gate_by_name(g.name).unit,
                           "reason": not_judged_reason(gate_by_name(g.name), g.note, thresholds)
                           if g.status == "insufficient_data" else None}
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
    # matplotlib (about 45 MiB and 0.4 s) is loaded only here: a runner holds it only after a
    # topology is judged, not through the soak.
    from checker.plots import plot_topology
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


MARKS = {"pass": "pass", "fail": "**FAIL**", "warn": "WARN", "insufficient_data": "not judged"}


def _human_threshold(name: str, g: dict[str, Any]) -> str:
    gate = gate_by_name(name)
    return human(g["threshold"], gate.unit) if gate.threshold_key else "0"


def _span(t: dict[str, Any]) -> str:
    since, until = (t["window"] or {}).get("since"), (t["window"] or {}).get("until")
    start, end = since or t["started_at"], until or t["ended_at"]
    try:
        secs = datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp() - \
            datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return f"{start} .. {end}"
    return f"{start} .. {end} ({human_duration(secs)})"


def topology_counts(t: dict[str, Any]) -> str:
    """``13 pass, 1 WARN, 2 not judged``."""
    counts: dict[str, int] = {}
    for g in t["gates"].values():
        counts[g["outcome"]] = counts.get(g["outcome"], 0) + 1
    return ", ".join(f"{counts[k]} {MARKS[k].strip('*').replace('FAIL', 'failed')}"
                     for k in ("fail", "warn", "pass", "insufficient_data") if counts.get(k))


def _markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Soak verdict: **{doc['overall_status'].upper()}**", "",
             f"profile `{doc['profile']}`, scenario `{doc['scenario']}`, run `{doc['run_dir'] or '-'}`, "
             f"seed {doc['provenance']['seed'] if doc['provenance']['seed'] is not None else '-'}", ""]
    if doc["notes"]:
        lines += [f"- note: {n}" for n in doc["notes"]] + [""]
    if doc["overall_status"] != "ok":
        lines += ["What failed, where, when and what to do first: [failures.md](failures.md)", ""]
    for t in doc["topologies"]:
        start = _stamp(t["started_at"]) or _stamp((t["window"] or {}).get("since"))
        lines += [f"## {t['topology']}: {t['status'].upper()} ({topology_counts(t)}; process {t['process_status']})",
                  "", f"{_span(t)}; {t['report_samples']} reports, {t['chaos_events']} chaos events", "",
                  "| gate | unit | severity | result | value | threshold | worst node | first failure |",
                  "|---|---|---|---|---|---|---|---|"]
        judged = {n: g for n, g in t["gates"].items() if g["outcome"] != "insufficient_data"}
        for name, g in judged.items():
            unit = g.get("unit") or gate_by_name(name).unit
            first = when_text(_stamp(g["first_failed_at"]), start) if g["first_failed_at"] else "-"
            lines.append(f"| {g['alert']} | {unit or 'count'} | {g['severity']} | {MARKS[g['outcome']]} "
                         f"| {human(g['value'], unit)} | {_human_threshold(name, g)} | {g['worst_node'] or '-'} "
                         f"| {first} |")
        unjudged = {n: g for n, g in t["gates"].items() if g["outcome"] == "insufficient_data"}
        if unjudged:
            lines += ["", f"Not judged ({len(unjudged)}; "
                      f"{'each fails the run under this profile' if doc['profile'] != 'soak_smoke' else 'not a pass, not a failure under soak_smoke'}):", ""]
            lines += [f"- {g['alert']}: {g.get('reason') or g.get('note') or 'no data'}" for g in unjudged.values()]
        notes = [f"- {g['alert']}: {g['note']}" for g in judged.values()
                 if g.get("note") and g["note"] not in " ".join(t["disagreements"])]
        notes += [f"- disagreement: {d}" for d in t["disagreements"]] + [f"- note: {n}" for n in t["notes"]]
        if t["alerts_fired"]:
            notes.append("- alerts fired: " + ", ".join(sorted({a.get('alertname', '?') for a in t["alerts_fired"]})))
        if notes:
            lines += ["", *notes]
        lines += ["", f"![{t['topology']}](plots/{t['topology']}.png)", ""]
    return "\n".join(lines) + "\n"


def _stamp(text: str | None) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None
    except ValueError:
        return None


def _timeline(path: Path, verdicts: Sequence[TopologyVerdict]) -> None:
    rows = sorted((r for v in verdicts for r in v.timeline), key=lambda r: (r["observed_at_unix_ms"] or 0, r["topology"], r["node"]))
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TIMELINE_COLUMNS)
        w.writerows([r.get(c, "") for c in TIMELINE_COLUMNS] for r in rows)


def _junit_time(ts: float | None) -> str:
    """JUnit's timestamp: ISO 8601 without a zone (the XSD's pattern); always UTC here."""
    return datetime.fromtimestamp(ts or time.time(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def junit_message(t: dict[str, Any], name: str, g: dict[str, Any], start: float | None) -> str:
    """``SoakConsensusStalled on triad at 2026-...Z (15m 25s into the run): 8m 10s > 5m``."""
    unit = gate_by_name(name).unit
    where = f" on {g['worst_node']}" if g["worst_node"] else f" in {t['topology']}"
    at = _stamp(g["first_failed_at"])
    when = f" at {when_text(at, start)}" if at is not None else ""
    return f"{g['alert']}{where}{when}: {human(g['value'], unit)} > threshold {_human_threshold(name, g)}"


def _junit(path: Path, doc: dict[str, Any]) -> None:
    commit = _version(short=False)
    suites = ET.Element("testsuites", name="soak")
    total_time = 0.0
    for t in doc["topologies"]:
        gates = t["gates"]
        start = _stamp((t["window"] or {}).get("since")) or _stamp(t["started_at"])
        end = _stamp((t["window"] or {}).get("until")) or _stamp(t["ended_at"])
        secs = max(0.0, (end or 0) - (start or 0)) if start and end else 0.0
        total_time += secs
        suite = ET.SubElement(suites, "testsuite", name=f"soak.{t['topology']}", tests=str(len(gates)),
                              failures=str(sum(g["outcome"] == "fail" for g in gates.values())), errors="0",
                              skipped=str(sum(g["outcome"] == "insufficient_data" for g in gates.values())),
                              time=f"{secs:.3f}", timestamp=_junit_time(start), hostname=platform.node() or "localhost")
        props = ET.SubElement(suite, "properties")
        for key, value in (("run_id", t["run_id"]), ("profile", doc["profile"]),
                           ("seed", doc["provenance"]["seed"]), ("topology", t["topology"]),
                           ("scenario", doc["scenario"]), ("commit", commit), ("run_dir", doc["run_dir"]),
                           ("window", _span(t)), ("status", t["status"]), ("process_status", t["process_status"])):
            ET.SubElement(props, "property", name=key, value="" if value is None else str(value))
        for name, g in gates.items():
            gate = gate_by_name(name)
            case = ET.SubElement(suite, "testcase", classname=f"soak.{t['topology']}", name=name,
                                 time=f"{secs:.3f}", timestamp=_junit_time(start))
            cprops = ET.SubElement(case, "properties")
            for key, value in (("alert", g["alert"]), ("severity", g["severity"]), ("outcome", g["outcome"]),
                               ("unit", gate.unit or "count"), ("value", human(g["value"], gate.unit)),
                               ("threshold", _human_threshold(name, g)), ("worst_node", g["worst_node"] or "-"),
                               ("first_failed_at", g["first_failed_at"] or "-")):
                ET.SubElement(cprops, "property", name=key, value=str(value))
            detail = (f"{gate.runbook}\nquery (evaluated at {g.get('evaluated_at') or '-'}):\n{g['query']}"
                      + (f"\nnote: {g['note']}" if g.get("note") else ""))
            if g["outcome"] == "fail":
                msg = junit_message(t, name, g, start)
                ET.SubElement(case, "failure", message=msg, type=g["alert"]).text = f"{msg}\n{detail}"
            elif g["outcome"] == "warn":
                # A warning is reported, never a failed test: CI must not go red on it.
                ET.SubElement(case, "system-out").text = f"WARN ({g['severity']}): {junit_message(t, name, g, start)}\n{detail}"
            elif g["outcome"] == "insufficient_data":
                ET.SubElement(case, "skipped", message=f"not judged: {g.get('reason') or g.get('note') or 'no data'}")
    suites.set("tests", str(sum(int(s.get("tests", "0")) for s in suites)))
    suites.set("failures", str(sum(int(s.get("failures", "0")) for s in suites)))
    suites.set("skipped", str(sum(int(s.get("skipped", "0")) for s in suites)))
    suites.set("time", f"{total_time:.3f}")
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
