"""``soak-check``: judge a window of a live or finished soak; exit 0 pass, 1 failed,
2 bad arguments, 3 could not evaluate."""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alerts.profiles import PROFILES, get_profile
from checker.api import (RunMeta, TopologyMeta, TopologyVerdict, describe_runs, discover, evaluate_window,
                         max_for_secs, runs_in_window)
from checker.promapi import Prom, duration_secs
from alerts.gates import gate_by_name
from alerts.units import human
from checker.report import iso, topology_counts, write_reports
from checker.tsdb import open_saved
from soakcore.errors import EvaluationError, InputError, UsageError, crash_log_dir, run_cli

EPILOG = """\
examples:
  # the last 30 minutes of a live soak, on the runner's or the compose Prometheus
  soak-check --prometheus http://127.0.0.1:9090 --since 30m --out /tmp/verdict
  # one run and topology over a fixed window (RFC3339 or unix seconds)
  soak-check --prometheus http://127.0.0.1:9090 --since 2026-01-01T00:00:00Z \\
             --until 2026-01-01T01:00:00Z --run-id 20260101-000000 --topology triad
  # a finished run again, from its saved TSDB (writes RUN/rejudge-<UTC time>/)
  soak-check --run-dir .tmp/p2p_longrun/20260101-000000
  # the same, judged with the release profile's numbers
  soak-check --run-dir .tmp/p2p_longrun/20260101-000000 --profile soak_release --out /tmp/release

durations (--since, --until): 90 (seconds), 90s, 10m, 1h, 2d ago; or an RFC3339 time
(2026-01-01T00:00:00Z) or unix seconds (a number of 10 digits or more).

outputs (in --out): summary.md (read this first), failures.md (on failure: node, time,
evidence, next steps), summary.json, junit.xml, timeline.csv, plots/<topology>.png; the
per-gate results and these paths are printed at the end.

exit codes: 0 pass, 1 a gate failed (also missing data under endurance/release), 2 bad
arguments, 3 could not evaluate (Prometheus unreachable or not answering like Prometheus, no
run in the window, an unknown profile label, an internal error: its traceback is in the log
file the error line names).

A window ending less than the longest gate `for` plus one scrape/evaluation ago is judged
after waiting for it (--no-wait: now), so that a breach that began at the end is seen to
last. A warning-severity gate that failed is WARN: reported, never the exit code. An alert
that fired in the window while the gate's query passed fails that gate (with a note).

--run-dir RUN judges a finished run again from its saved TSDB into RUN/rejudge-<UTC time>/
(or --out), never over the run's own files; every topology of its run_config.json is kept
(no data: insufficient data); damaged TSDB blocks are left out and named in the verdict.
"""
WAIT_PROGRESS_SECS = 15.0
DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
# A bare number below this is a duration in seconds (``--since 90``), above it unix seconds
# (1e9 s is 2001-09-09: no soak is older, no window is longer).
BARE_DURATION_MAX = 1e9
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UsageError(message)


def parse_time(text: str, now: float, flag: str) -> float:
    """``90``, ``90s``, ``30m``, ``1h``, ``2d`` (ago), an RFC3339 time, or unix seconds (a bare
    number of at least ``BARE_DURATION_MAX``); a finite time after 1970, else exit 2."""
    m = DURATION.match(text.strip())
    if m and (m.group(2) or float(m.group(1)) < BARE_DURATION_MAX):
        if float(m.group(1)) == 0:
            raise UsageError(f"{flag} {text!r}: a duration of 0 is no time ago; give one above 0 (90, 10m, 1h), "
                             "an RFC3339 time or unix seconds")
        at = now - float(m.group(1)) * UNITS[m.group(2)]
    else:
        try:
            at = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=timezone.utc)
                at = parsed.timestamp()
            except (ValueError, OverflowError, OSError):
                raise UsageError(f"{flag} {text!r}: expected a duration like 90, 90s, 10m or 1h (ago), an RFC3339 "
                                 "time or unix seconds") from None
    if not math.isfinite(at) or at <= 0:
        raise UsageError(f"{flag} {text!r}: not a time after 1970 (NaN, infinite, negative or too far back)")
    return at


def check_url(url: str) -> str:
    """``--prometheus``: an http(s) URL with a host; a bare ``host:port`` gets a suggestion."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        hint = f"; did you mean http://{url.strip()}" if url.strip() and "://" not in url else ""
        raise UsageError(f"--prometheus {url!r}: expected an http:// or https:// URL{hint}")
    try:
        parsed.port
    except ValueError as exc:
        raise UsageError(f"--prometheus {url!r}: {exc}") from None
    return url.strip()


Window = tuple[str | None, float, float]  # (topology or None for all, since, until)


def judge(url: str, windows: list[Window], run_id: str | None, profile_name: str | None, out: Path, *,
          run_dir: Path | None = None, scenario: str = "unknown", seed: int | None = None,
          notes: tuple[str, ...] = (), live: bool = False, wait: bool = True,
          horizons: dict[str, float] | None = None, scrape_interval: float | None = None) -> int:
    """Judge each window (every topology in it), write the outputs, return the exit code.
    Nothing to judge is never a pass: exit 3 naming what was looked for and what was found.

    ``live``: a Prometheus that is still scraping: its data past ``until`` are used to see a
    breach that began at the end last its ``for``, waiting for them unless ``wait`` is False.
    Otherwise ``horizons`` (per topology) say how far past its window a saved run's data go."""
    for note in notes:
        print(f"soak-check: warning: {note}", file=sys.stderr)
    explicit = get_profile(profile_name) if profile_name else None
    if not any(discover(url, since, until, run_id, topology) for topology, since, until in windows):
        raise EvaluationError(_nothing_found(url, windows, run_id) + "".join(f"; {n}" for n in notes))
    horizons = dict(horizons or {})
    if live:
        horizon, scrape_interval = wait_for_window_end(Prom(url), max(w[2] for w in windows), wait)
    verdicts = [v for topology, since, until in windows
                for v in evaluate_window(url, since, until, run_id=run_id, topology=topology, profile=explicit,
                                         horizon=horizon if live else horizons.get(str(topology)),
                                         scrape_interval=scrape_interval)]
    if not verdicts:
        raise EvaluationError(_nothing_found(url, windows, run_id) + "".join(f"; {n}" for n in notes))
    # Every topology asked for is kept, in the order asked: one without data is insufficient
    # data, never dropped.
    judged = {v.topology for v in verdicts}
    named = tuple(TopologyMeta(topology, since, until, "unknown", () if topology in judged else
                               (f"no data for this topology in {iso(since)}..{iso(until)}: insufficient data",))
                  for topology, since, until in windows if topology is not None)
    missing = [m for m in named if m.topology not in judged]
    for m in missing:
        level = "failure" if verdicts[0].profile.insufficient_data_fails else "warning"
        print(f"soak-check: {level}: {m.topology}: no data in its window: insufficient data for every gate",
              file=sys.stderr)
    meta = RunMeta(run_dir=run_dir, profile=verdicts[0].profile, scenario=scenario, prometheus_url=url, seed=seed,
                   notes=notes, topologies=named)
    code = write_reports(out, verdicts, meta)
    _warn_insufficient(verdicts)
    sys.stderr.flush()
    print(verdict_text(out), flush=True)
    return code


def verdict_text(out: Path) -> str:
    """The end of a check: per topology each gate's result (FAIL, WARN, pass, not judged) in
    its unit, then the verdict and the paths, summary.md first."""
    doc = json.loads((out / "summary.json").read_text())
    lines = gate_lines(doc)
    status = doc["overall_status"].upper()
    lines += [f"soak-check: {status}", *(f"  {p}" for p in result_paths(out))]
    return "\n".join(lines)


def result_paths(out: Path) -> list[Path]:
    """The verdict files a person opens, summary.md first."""
    return [out / "summary.md", *([out / "failures.md"] if (out / "failures.md").exists() else []),
            out / "summary.json", out / "junit.xml", out / "timeline.csv", out / "plots"]


def gate_lines(doc: dict[str, Any]) -> list[str]:
    """Per topology of a summary.json, each gate's result in its unit, failures first."""
    order = {"fail": 0, "warn": 1, "insufficient_data": 2, "pass": 3}
    marks = {"fail": "FAIL", "warn": "WARN", "insufficient_data": "not judged", "pass": "pass"}
    lines = []
    for t in doc["topologies"]:
        lines.append(f"{t['topology']}: {t['status'].upper()} ({topology_counts(t)})")
        for name, g in sorted(t["gates"].items(), key=lambda kv: (order[kv[1]["outcome"]], kv[0])):
            unit = gate_by_name(name).unit
            if g["outcome"] == "insufficient_data":
                detail = g.get("reason") or g.get("note") or "no data"
            else:
                limit = human(g["threshold"], unit) if gate_by_name(name).threshold_key else "0"
                detail = f"{human(g['value'], unit)} (threshold {limit})"
                if g["outcome"] in ("fail", "warn"):
                    detail += f" on {g['worst_node'] or t['topology']}, first at {g['first_failed_at'] or '-'}"
            lines.append(f"  {marks[g['outcome']]:<10}  {g['alert']:<34} {detail}")
    return lines


def wait_for_window_end(prom: Prom, until: float, wait: bool) -> tuple[float, float]:
    """On a live Prometheus, wait until a breach that began at ``until`` can have lasted the
    longest gate ``for`` and been scraped and evaluated; (the data's horizon, the scrape
    interval). A progress line on stderr says why and how long."""
    scrape = prom.config_interval("scrape_interval")
    ready = until + max_for_secs() + max(scrape, prom.config_interval("evaluation_interval"))
    left = ready - time.time()
    if wait and left > 0:
        print(f"soak-check: waiting {left:.0f} s (until {iso(ready)}): a breach that began at the window's end "
              f"needs its gate's `for` (up to {max_for_secs():g} s) and one scrape and evaluation to be judged; "
              "--no-wait judges at once", file=sys.stderr, flush=True)
        while (left := ready - time.time()) > 0:
            time.sleep(min(left, WAIT_PROGRESS_SECS))
            if ready - time.time() > 0:
                print(f"soak-check: waiting, {ready - time.time():.0f} s left", file=sys.stderr, flush=True)
    return time.time(), scrape


def _nothing_found(url: str, windows: list[Window], run_id: str | None) -> str:
    topologies = sorted({t for t, _, _ in windows if t})
    since, until = min(w[1] for w in windows), max(w[2] for w in windows)
    looked = (f"run_id={run_id!r}" if run_id else "any run_id") + (f", topology {'/'.join(topologies)}" if topologies else "")
    found = describe_runs(runs_in_window(url, since, until))
    return f"nothing to judge: no soak run ({looked}) in {iso(since)}..{iso(until)} on {url}; {found}"


def _warn_insufficient(verdicts: list[TopologyVerdict]) -> None:
    """Missing data is never silent: a warning under smoke, a failure (exit 1) otherwise.
    A warning-severity gate that failed is said too, as a warning (never the exit code)."""
    for v in verdicts:
        warned = [g.alert for g in v.gates if g.status == "fail" and g.severity != "critical"]
        if warned:
            print(f"soak-check: warning: {v.topology}: WARN {', '.join(warned)}", file=sys.stderr)
        missing = [g.name for g in v.gates if g.status == "insufficient_data" and g.severity == "critical"
                   and g.applicable]
        if missing:
            level = "failure" if v.profile.insufficient_data_fails else "warning"
            print(f"soak-check: {level}: {v.topology}: insufficient data for {', '.join(missing)}", file=sys.stderr)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Examples and exit codes as written; each flag's help names its default itself."""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="soak-check", description="Judge a soak window from Prometheus: every gate of alerts/gates.py "
                "over the window, per run and topology; write the verdict files and exit 0/1/2/3.",
                formatter_class=_Formatter, epilog=EPILOG)
    p.add_argument("--prometheus", metavar="URL", default=None,
                   help="Prometheus base URL, with http:// or https:// (required unless --run-dir)")
    p.add_argument("--since", metavar="WHEN", default=None,
                   help="window start: 90, 90s, 10m, 1h, 2d (ago), RFC3339 or unix seconds (required unless --run-dir)")
    p.add_argument("--until", metavar="WHEN", default=None,
                   help="window end, same forms as --since (default: now)")
    p.add_argument("--run-id", metavar="ID", default=None,
                   help="judge only this run (soak_run_info's run_id; default: every run in the window)")
    p.add_argument("--topology", metavar="NAME", default=None,
                   help="judge only this topology (default: every topology in the window)")
    p.add_argument("--profile", choices=list(PROFILES), default=None,
                   help="judge with this profile's thresholds (default: each run's own profile and exported "
                        "thresholds)")
    p.add_argument("--out", type=Path, metavar="DIR", default=None,
                   help="folder for the verdict files (default: the current folder; with --run-dir "
                        "RUN/rejudge-<UTC time>/)")
    p.add_argument("--run-dir", type=Path, metavar="RUN", default=None,
                   help="judge a finished run again from its saved TSDB (RUN/prometheus) over its own windows "
                        "(default: none, judge --prometheus live)")
    p.add_argument("--no-wait", action="store_true",
                   help="judge at once, even if the window ends less than a gate's `for` ago (default: wait, "
                        "with a progress line every 15 s)")
    return p


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        p = build_parser()
        a = p.parse_args(argv)
        now = time.time()
        if a.out is not None and a.out.exists() and not a.out.is_dir():
            raise UsageError(f"--out {a.out}: exists and is not a folder")
        if a.run_dir:
            out = _rejudge_out(a)
            crash_log_dir(out)
            return judge_run_dir(a.run_dir, a.profile, out, a.topology)
        crash_log_dir(a.out)
        if not a.prometheus or not a.since:
            raise UsageError("--prometheus and --since are required (or --run-dir)")
        url = check_url(a.prometheus)
        since = parse_time(a.since, now, "--since")
        until = parse_time(a.until, now, "--until") if a.until else now
        if until <= since:
            raise UsageError(f"--until must be after --since ({until:.0f} <= {since:.0f})")
        return judge(url, [(a.topology, since, until)], a.run_id, a.profile, a.out or Path("."), live=True,
                     wait=not a.no_wait)
    run_cli("soak-check", body)


def _rejudge_out(a: argparse.Namespace) -> Path:
    """Where re-judging writes: ``--out``, else a new ``RUN/rejudge-<UTC time>/``; never the
    run's own folder (its verdict files are the record of the run). Flags that re-judging
    would ignore are refused, not silently dropped."""
    ignored = [flag for flag, value in (("--prometheus", a.prometheus), ("--since", a.since), ("--until", a.until),
                                        ("--run-id", a.run_id), ("--no-wait", a.no_wait)) if value]
    if ignored:
        raise UsageError(f"--run-dir judges the run's saved TSDB over the run's own windows and run id: "
                         f"{', '.join(ignored)} would be ignored; drop {'it' if len(ignored) == 1 else 'them'}")
    if not a.run_dir.is_dir():
        raise UsageError(f"--run-dir {a.run_dir}: not a folder")
    if a.out is not None:
        if a.out.resolve() == a.run_dir.resolve():
            raise UsageError(f"--out {a.out} is the run directory: re-judging never writes over the run's own "
                             "verdict files (default: RUN/rejudge-<UTC time>/)")
        return a.out
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out, n = a.run_dir / f"rejudge-{stamp}", 1
    while out.exists():
        n += 1
        out = a.run_dir / f"rejudge-{stamp}-{n}"
    return out


def judge_run_dir(run_dir: Path, profile: str | None, out: Path, topology: str | None = None) -> int:
    """Start a temporary Prometheus on a copy of the run's TSDB and judge the run again."""
    path = run_dir / "run_config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, "(file)", f"cannot read: {exc}") from exc
    if not isinstance(cfg, dict):
        raise InputError(path, "(top level)", "expected a JSON object")
    for key in ("run_id", "profile"):
        if cfg.get(key) is not None and not isinstance(cfg.get(key), str):
            raise InputError(path, key, f"expected a string, not {cfg.get(key)!r}")
    tsdb = run_dir / "prometheus"
    if not tsdb.is_dir():
        raise UsageError(f"{tsdb}: no saved TSDB in this run directory")
    # Each topology over its own window: judged over a later one, a finished topology's
    # last samples would look like a stall.
    spans = _windows(cfg, path)
    windows: list[Window] = [(name, since, until) for name, (since, until, _) in spans.items()]
    horizons = {name: horizon for name, (_, _, horizon) in spans.items() if horizon is not None}
    if topology is not None:
        if topology not in {w[0] for w in windows}:
            raise UsageError(f"--topology {topology!r}: not in {path} (topologies: {', '.join(str(w[0]) for w in windows)})")
        windows = [w for w in windows if w[0] == topology]
    launch = cfg.get("launch") if isinstance(cfg.get("launch"), dict) else {}
    with tempfile.TemporaryDirectory(prefix="soak-check-") as tmp, open_saved(tsdb, Path(tmp)) as (prom, notes):
        return judge(prom.url, windows, cfg.get("run_id"), profile or cfg.get("profile"), out,
                     run_dir=run_dir, scenario=str(launch.get("scenario", "unknown")), seed=cfg.get("seed"),
                     notes=tuple(notes), horizons=horizons, scrape_interval=_scrape_interval(run_dir))


def _windows(cfg: dict[str, object], path: Path) -> dict[str, tuple[float, float, float | None]]:
    """Each topology's (since, until, horizon): the runner's ``windows`` map ``{name: [since,
    until]}`` or ``{name: [since, until, horizon]}``, or ``topologies`` entries ``{name,
    started_at, ended_at, horizon?}``. The horizon is the end of the drain after the window
    (the nodes still running): a breach that began by ``until`` is watched up to it."""
    windows = cfg.get("windows")
    try:
        if isinstance(windows, dict) and windows:
            return _finite({str(k): (float(v[0]), float(v[1]), float(v[2]) if len(v) > 2 and v[2] is not None else None)
                            for k, v in windows.items()}, path, "windows")
        entries: Any = cfg.get("topologies") or []
        found = {str(t["name"]): (float(t["started_at"]), float(t["ended_at"]),
                                  float(t["horizon"]) if t.get("horizon") is not None else None) for t in entries}
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise InputError(path, "windows/topologies", f"expected {{name: [since, until(, horizon)]}} or "
                         f"[{{name, started_at, ended_at}}] with unix seconds ({exc!r})") from exc
    if not found:
        raise InputError(path, "windows", "missing (the run did not finish a topology)")
    return _finite(found, path, "topologies")


def _finite(found: dict[str, tuple[float, float, float | None]], path: Path,
            field: str) -> dict[str, tuple[float, float, float | None]]:
    for name, (since, until, horizon) in found.items():
        if not (math.isfinite(since) and math.isfinite(until) and 0 < since < until):
            raise InputError(path, f"{field}.{name}", f"window {since!r}..{until!r} is not a finite time span")
        if horizon is not None and not (math.isfinite(horizon) and horizon >= until):
            raise InputError(path, f"{field}.{name}", f"horizon {horizon!r} is not a time at or after {until!r}")
    return found


def _scrape_interval(run_dir: Path) -> float | None:
    """The run's scrape interval from its saved prometheus.yml (the first one: global)."""
    try:
        text = (run_dir / "prometheus.yml").read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"^\s*scrape_interval:\s*'?([0-9a-z]+)'?\s*$", text, re.MULTILINE)
    return duration_secs(m.group(1)) if m else None
