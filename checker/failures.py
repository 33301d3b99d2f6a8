"""failures.md: a page to act on. For each failed gate: when (UTC and seconds into the run),
which node, the value against the threshold in the gate's unit, the runbook's first steps and
its link, the evidence (report files with the offending field, log lines, alerts delivered,
chaos around it), the reproduce query with the run's labels filled in, and the commands that
reopen the run's saved TSDB. Gates that were not judged are listed apart, never as failures."""
from __future__ import annotations

import json
import re
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from alerts.gates import Gate, gate_by_name
from alerts.generate import DEFAULT_RUNBOOK_BASE_URL, human_template, runbook_link
from alerts.units import human, human_duration
from soakcore.files import tail

# Chaos events this close to the first failure are listed beside it: a fault's effects
# (a backlog, a resync) can take minutes to cross a threshold.
AROUND_SECS = 600
STDERR_TAIL_BYTES = 1500
STDERR_TAIL_LINES = 20
# Report files read per node when looking for evidence (newest last): bounded whatever the run.
MAX_REPORTS = 5000
REOPEN_URL = "http://127.0.0.1:9099"   # where reopen_commands' Prometheus listens
REPO_RUNBOOK = Path(__file__).resolve().parent.parent / "alerts" / "RUNBOOK.md"


def fmt(v: Any) -> str:
    """A number without a unit (machine-ish contexts); see ``alerts.units.human`` for people."""
    return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _stamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def when_text(at: float | None, start: float | None) -> str:
    """``2026-01-01T00:15:25Z (15m 25s into the run)``."""
    if at is None:
        return "n/a"
    into = f" ({human_duration(at - start)} into the run, T+{at - start:.0f}s)" if start is not None else ""
    return _iso(at) + into


# ---------------------------------------------------------------------------------------
# The reproduce query, with the run's labels in every catalog selector.

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def with_run_labels(query: str, run_id: str | None, topology: str) -> str:
    """``query`` with ``run_id="..."`` and ``topology="..."`` matchers added to every selector
    of a catalog metric (``soak_*``: every such series carries both labels). Strings, label
    lists, ranges and other metrics (``up``, ``ALERTS``) are left as they are."""
    matchers = ",".join(f'{k}={json.dumps(v)}' for k, v in (("run_id", run_id), ("topology", topology)) if v)
    out: list[str] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c in "\"'`":
            j = i + 1
            while j < n and query[j] != c:
                j += 2 if query[j] == "\\" and c != "`" else 1
            out.append(query[i:j + 1])
            i = j + 1
            continue
        if c == "[":
            j = query.index("]", i)
            out.append(query[i:j + 1])
            i = j + 1
            continue
        m = _IDENT.match(query, i) if (c.isalpha() or c in "_:") else None
        if m is None:
            out.append(c)
            i += 1
            continue
        name, i = m.group(0), m.end()
        out.append(name)
        k = i
        while k < n and query[k] == " ":
            k += 1
        if not name.startswith("soak_") or (k < n and query[k] == "("):
            continue
        if k < n and query[k] == "{":
            end = query.index("}", k)
            inside = query[k + 1:end]
            if "run_id" in inside:
                continue
            out.append(query[i:k + 1] + matchers + ("," if inside.strip() else ""))
            i = k + 1
        else:
            out.append("{" + matchers + "}")
    return "".join(out)


# ---------------------------------------------------------------------------------------
# Evidence from the run directory.

def _get(doc: Any, path: str) -> Any:
    for part in path.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def _reports(run_dir: Path, topology: str, node: str) -> list[tuple[int, Path]]:
    folder = run_dir / topology / "nodes" / node / "report"
    if not folder.is_dir():
        return []
    found = []
    for p in folder.glob("epoch-*.json"):
        m = re.fullmatch(r"epoch-(\d+)\.json", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)[-MAX_REPORTS:]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _consensus(doc: dict[str, Any], key: str) -> Any:
    """A consensus field of a G1 report (``node_snapshot.consensus``) or a G2 one (top level)."""
    value = _get(doc, f"node_snapshot.consensus.{key}")
    return _get(doc, key) if value is None else value


# Per gate: (field shown, test on one report given the previous one, what the test means).
Check = Callable[[dict[str, Any], "dict[str, Any] | None", float], "str | None"]


def _violations(doc: dict[str, Any], prev: dict[str, Any] | None, thr: float) -> str | None:
    v = _get(doc, "reward_asset_invariant_report.violations")
    ok = _get(doc, "reward_asset_invariant_status.ok")
    if v:
        return f"reward_asset_invariant_report.violations = {json.dumps(v)[:300]}"
    if ok is False:
        return f"reward_asset_invariant_status = {json.dumps(_get(doc, 'reward_asset_invariant_status'))}"
    return None


def _lag(doc: dict[str, Any], prev: dict[str, Any] | None, thr: float) -> str | None:
    c, net = _consensus(doc, "committed_height"), _consensus(doc, "network_committed_height")
    if isinstance(c, (int, float)) and isinstance(net, (int, float)) and net - c > thr:
        return f"node_snapshot.consensus: committed_height {c}, network_committed_height {net} ({net - c} behind)"
    return None


def _regressed(doc: dict[str, Any], prev: dict[str, Any] | None, thr: float) -> str | None:
    c, p = _consensus(doc, "committed_height"), _consensus(prev or {}, "committed_height")
    if isinstance(c, (int, float)) and isinstance(p, (int, float)) and c < p:
        return f"node_snapshot.consensus.committed_height {c}, down from {p} in the report before"
    return None


def _stalled(doc: dict[str, Any], prev: dict[str, Any] | None, thr: float) -> str | None:
    c, p = _consensus(doc, "committed_height"), _consensus(prev or {}, "committed_height")
    if isinstance(c, (int, float)) and c == p:
        return f"node_snapshot.consensus.committed_height still {c} (last_status {_consensus(doc, 'last_status')})"
    return None


def _distfs(doc: dict[str, Any], prev: dict[str, Any] | None, thr: float) -> str | None:
    failed = _get(doc, "distfs_challenge_report.failed_checks")
    if isinstance(failed, (int, float)) and failed > 0:
        reason = _get(doc, "distfs_challenge_report.latest_proof_semantics.failure_reason")
        reasons = _get(doc, "distfs_probe_cursor_state.cumulative_failure_reasons")
        return (f"distfs_challenge_report.failed_checks {failed} of {_get(doc, 'distfs_challenge_report.total_checks')}"
                f", failure_reason {reason}; cumulative_failure_reasons {json.dumps(reasons)}")
    return None


def _fork(doc: dict[str, Any], prev: dict[str, Any] | None, thr: float) -> str | None:
    own, height = _consensus(doc, "last_block_hash"), _consensus(doc, "committed_height")
    heads = _consensus(doc, "peer_heads") or []
    other = [h for h in heads if isinstance(h, dict) and h.get("height") == height
             and h.get("block_hash") not in (None, own)]
    if other:
        return (f"height {height}: own last_block_hash {str(own)[:16]}..., peer {other[0].get('node_id')} has "
                f"{str(other[0].get('block_hash'))[:16]}... (node_snapshot.consensus.peer_heads)")
    return None


EVIDENCE: dict[str, Check] = {
    "reward_invariant_violated": _violations, "consensus_lag_high": _lag,
    "committed_height_regressed": _regressed, "consensus_stalled": _stalled,
    "distfs_failure_ratio_high": _distfs, "distfs_recent_failure_ratio_high": _distfs,
    "distfs_failure_reason_burst": _distfs, "consensus_fork_detected": _fork,
}


def _observed(doc: dict[str, Any]) -> float | None:
    ms = doc.get("observed_at_unix_ms")
    return ms / 1000 if isinstance(ms, (int, float)) else None


def report_evidence(run_dir: Path, topology: str, nodes: list[str], gate: Gate, threshold: float,
                    since: float | None, until: float | None) -> list[str]:
    """The report files whose field shows the gate's failure: the first ones and the last one,
    each with the offending field (``reward_asset_invariant_report.violations``, ...)."""
    check = EVIDENCE.get(gate.name)
    if check is None:
        return []
    hits: list[str] = []
    total = 0
    last = ""
    for node in nodes:
        prev = None
        for epoch, path in _reports(run_dir, topology, node):
            doc = _read(path)
            if doc is None:
                continue
            at = _observed(doc)
            inside = at is None or since is None or until is None or since <= at <= until
            why = check(doc, prev, threshold) if inside else None
            prev = doc
            if why is None:
                continue
            total += 1
            line = f"`{path.relative_to(run_dir)}` ({_iso(at) if at else 'no observed_at'}): {why}"
            if len(hits) < 3:
                hits.append(line)
            last = line
    if total > len(hits):
        hits.append(f"... {total - len(hits) - 1} more, the last: {last}" if total > len(hits) + 1 else last)
    return hits


def _alert_lines(run_dir: Path, alert: str, run_id: str | None, topology: str) -> list[str]:
    path = run_dir / "alerts.log"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        labels = entry.get("labels") or {}
        if labels.get("alertname") != alert or labels.get("topology", topology) != topology:
            continue
        if run_id and labels.get("run_id", run_id) != run_id:
            continue
        at = entry.get("received_at")
        out.append(f"{_iso(at) if isinstance(at, (int, float)) else '?'} {entry.get('status')} "
                   f"{labels.get('node') or labels.get('topology', '')}: {(entry.get('annotations') or {}).get('summary', '')}")
    return out[:5] + ([f"... {len(out) - 5} more in alerts.log"] if len(out) > 5 else [])


def _log_lines(run_dir: Path, topology: str, node: str) -> tuple[str, list[str]]:
    rel = f"{topology}/nodes/{node}/stderr.log"
    text = tail(run_dir / rel, STDERR_TAIL_BYTES) or ""
    return rel, text.splitlines()[-STDERR_TAIL_LINES:]


# ---------------------------------------------------------------------------------------
# Chaos around the failure.

def chaos_log(run_dir: Path | None, topology: str) -> list[dict[str, Any]]:
    """Lines of ``chaos_events.log`` (timestamp|topology|event_id|phase|action|node|detail)."""
    path = run_dir / "chaos_events.log" if run_dir else None
    if path is None or not path.exists():
        return []
    rows = [line.split("|", 6) for line in path.read_text(errors="replace").splitlines()[1:]]
    return [{"at": _stamp(r[0]), "stamp": r[0], "event": r[2], "phase": r[3], "action": r[4], "node": r[5],
             "detail": r[6] if len(r) > 6 else ""} for r in rows if len(r) >= 6 and r[1] == topology]


def _chaos_near(t: dict[str, Any], at: float | None, start: float | None, run_dir: Path | None) -> list[str]:
    near = lambda ts: at is None or ts is None or abs(ts - at) <= AROUND_SECS  # noqa: E731
    rel = lambda ts: f" (T+{ts - start:.0f}s)" if ts is not None and start is not None else ""  # noqa: E731
    logged = [f"| {e['stamp']}{rel(e['at'])} | {e['action']} | {e['node']} | {e['phase']} | {e['event']} "
              f"| {e['detail']} |" for e in chaos_log(run_dir, t["topology"]) if near(e["at"])]
    head = ["| time (UTC) | action | node | phase | event | detail |", "|---|---|---|---|---|---|"]
    if logged:
        return head + logged
    # No run directory (a plain window check): the chaos windows Prometheus saw.
    seen = [f"| {w['start']}..{w['end']}{rel(_stamp(w['start']))} | {w['action']} | {w['node']} | window | - | "
            f"{w['action']} on {w['node']} |" for w in t["chaos_windows"]
            if near(_stamp(w["start"])) or near(_stamp(w["end"]))]
    return head + seen if seen else []


# ---------------------------------------------------------------------------------------

def runbook_target(gate: Gate) -> str:
    """Where the runbook opens: the checkout's RUNBOOK.md (a file URL; failures.md is written
    on the machine that ran the soak), else the configured web location."""
    if REPO_RUNBOOK.is_file():
        return f"{REPO_RUNBOOK.as_uri()}#{gate.anchor}"
    return runbook_link(gate.anchor, DEFAULT_RUNBOOK_BASE_URL)


def reopen_commands(run_dir: Path | None, prometheus_url: str | None,
                    topologies: list[dict[str, Any]] | None = None) -> list[str]:
    if run_dir is None:
        url = shlex.quote(prometheus_url or "http://127.0.0.1:9090")
        cmds = [f"python3 -m checker --prometheus {url} --since {t['window']['since']} --until {t['window']['until']}"
                + (f" --run-id {shlex.quote(t['run_id'])}" if t.get("run_id") else "") + f" --topology {t['topology']}"
                for t in topologies or [] if t.get("window")]
        return ["This window was judged on a live Prometheus; judge it again while it keeps the data "
                "(its retention):", "```sh", *cmds, "```"]
    rd = shlex.quote(str(run_dir))
    return ["Judge the run again from its saved TSDB (writes into a new `rejudge-<UTC time>/` folder):",
            "```sh", f"python3 -m checker --run-dir {rd}", "```",
            "Or browse it in a Prometheus of your own (on a copy: Prometheus writes into its data folder):",
            "```sh", f"cp -r {rd}/prometheus /tmp/soak-tsdb && rm -f /tmp/soak-tsdb/lock",
            "prometheus --config.file=/dev/null --storage.tsdb.path=/tmp/soak-tsdb "
            f"--storage.tsdb.retention.time=100y --web.listen-address={REOPEN_URL.split('//')[1]}",
            "```", f"then open {REOPEN_URL} or run the promtool commands above."]


def _gate_section(doc: dict[str, Any], t: dict[str, Any], name: str, g: dict[str, Any],
                  run_dir: Path | None) -> list[str]:
    gate = gate_by_name(name)
    start = _stamp(t["started_at"]) or _stamp((t.get("window") or {}).get("since"))
    at = _stamp(g["first_failed_at"])
    node = g["worst_node"]
    scope = {"node": "node", "topology": "whole-topology", "run": "whole-run"}[gate.scope]
    threshold = (f"{human(g['threshold'], gate.unit)} (`{gate.threshold_key}` under {doc['profile']})"
                 if gate.threshold_key else "0 (any positive value fails)")
    lines = [f"## {t['topology']}: {g['alert']} FAILED", "",
             f"- **when**: {when_text(at, start)}",
             f"- **node**: {node or '-'}" + ("" if gate.scope == "node" else f" (a {scope} gate)"),
             f"- **value**: {human(g['value'], gate.unit)} against threshold {threshold}",
             *([f"- **note**: {g['note']}"] if g.get("note") else []), "",
             f"**What it means:** {human_template(gate.description)}", "",
             f"**First steps:** {gate.runbook} Runbook: [{gate.alert}]({runbook_target(gate)})", ""]
    evidence: list[str] = []
    if run_dir is not None:
        nodes = [node] if node else _nodes(run_dir, t["topology"])
        evidence += [f"- report {line}" for line in report_evidence(
            run_dir, t["topology"], nodes, gate, g["threshold"] if gate.threshold_key else 0.0,
            _stamp((t.get("window") or {}).get("since")),
            _stamp(g.get("evaluated_at")) or _stamp((t.get("window") or {}).get("until")))]
        evidence += [f"- alerts.log: {line}" for line in _alert_lines(run_dir, g["alert"], t["run_id"], t["topology"])]
    lines += ["**Evidence:**", "", *(evidence or ["- (no report file or alert shows it; see the logs below)"]), ""]
    if run_dir is not None:
        for n in ([node] if node else _nodes(run_dir, t["topology"]))[:3]:
            rel, err = _log_lines(run_dir, t["topology"], n)
            lines += [f"Last lines of `{rel}`:", "```", *(err or ["(empty)"]), "```", ""]
    chaos = _chaos_near(t, at, start, run_dir)
    lines += [f"**Chaos within {AROUND_SECS // 60} min of it:**", "", *(chaos or ["(none)"]), ""]
    evaluated = g.get("evaluated_at") or (t["window"]["until"] if t["window"] else None)
    query = with_run_labels(g["query"], t["run_id"], t["topology"])
    lines += [f"**Reproduce** (instant query at {evaluated or '-'}; the run's labels filled in):", "",
              "```promql", query, "```", "",
              "```sh", f"promtool query instant --time={evaluated} {shlex.quote(_query_url(doc, run_dir))} "
              f"{shlex.quote(query)}", "```", ""]
    return lines


def _query_url(doc: dict[str, Any], run_dir: Path | None) -> str:
    """The live Prometheus judged; for a run directory, the one ``reopen_commands`` starts."""
    return REOPEN_URL if run_dir is not None else (doc.get("provenance", {}).get("prometheus_url") or REOPEN_URL)


def _nodes(run_dir: Path, topology: str) -> list[str]:
    folder = run_dir / topology / "nodes"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _iter_gates(doc: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    for t in doc["topologies"]:
        for name, g in t["gates"].items():
            yield t, name, g


def failures_markdown(doc: dict[str, Any], run_dir: Path | None) -> str:
    failed = [(t, n, g) for t, n, g in _iter_gates(doc) if g["outcome"] == "fail"]
    unjudged = [(t, n, g) for t, n, g in _iter_gates(doc) if g["outcome"] == "insufficient_data"
                and g["severity"] == "critical"]
    warned = [(t, n, g) for t, n, g in _iter_gates(doc) if g["outcome"] == "warn"]
    lines = [f"# Failures: {doc['overall_status'].upper()}", "",
             f"profile `{doc['profile']}`, run `{doc['run_dir'] or '-'}`, run ids "
             f"{', '.join(doc['provenance']['run_ids']) or '-'}. "
             f"{len(failed)} gate{'s' if len(failed) != 1 else ''} failed.", ""]
    for t, name, g in failed:
        lines += _gate_section(doc, t, name, g, run_dir)
    for t in doc["topologies"]:
        if t["status"] not in ("ok",) and not any(g["outcome"] == "fail" for g in t["gates"].values()):
            why = ("gates without data fail under this profile" if doc["profile"] != "soak_smoke" and any(
                g["outcome"] == "insufficient_data" for g in t["gates"].values()) else f"process {t['process_status']}")
            lines += [f"## {t['topology']}: {t['status'].upper()} ({why})", "", *[f"- {n}" for n in t["notes"]], ""]
    if unjudged:
        fails = doc["profile"] != "soak_smoke"
        lines += [f"## Not judged ({'each fails the run under ' + doc['profile'] if fails else 'not failures'})", ""]
        lines += [f"- {t['topology']}: {g['alert']}: {g.get('reason') or g.get('note') or 'no data'}"
                  for t, _, g in unjudged] + [""]
    if warned:
        lines += ["## Warnings (reported, never the exit code)", ""]
        lines += [f"- {t['topology']}: {g['alert']} on {g['worst_node'] or '-'}: "
                  f"{human(g['value'], gate_by_name(n).unit)} > {human(g['threshold'], gate_by_name(n).unit)}"
                  for t, n, g in warned] + [""]
    lines += ["## Reopen this run", "", *reopen_commands(run_dir, doc.get("provenance", {}).get("prometheus_url"),
                                                           doc["topologies"]), ""]
    return "\n".join(lines) + "\n"
