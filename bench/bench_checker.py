"""Benchmark: judge a 24-hour, 10-node history (backfilled with promtool) end to end (run
discovery, every gate, figures, timeline, then the report files and plots), in two cases:

- backfilled-raw: only the raw series, as an archived or backfilled run: every gate is
  recomputed from raw series (nested subqueries, asked in parallel);
- live-recorded: the gates' recording rules (soak:gate_value, soak:gate_coverage) evaluated
  over the same data with ``promtool tsdb create-blocks-from rules`` at ``--eval-interval``,
  then merged into the TSDB by Prometheus's compaction, as a live soak's Prometheus records
  them: every gate is judged from the recordings. The raw path is timed again on that same
  TSDB, interleaved, for the ratio.

Also the one-off cost of producing the recordings for backfilled data (promtool, a
Prometheus restart, its compaction). Minimum and median over ``--reps``, CPU seconds of the
checker and Prometheus (less sensitive to other work on the machine), query counts, and
whether both paths reach the same verdict.

    python3 bench/bench_checker.py [--hours 24] [--nodes 10] [--step 30] [--reps 5] [--eval-interval 15]

Measured: see docs/performance.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

# Judge with this checkout's checker, whatever copy of the package is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerts.profiles import get_profile  # noqa: E402
from checker.api import RunMeta, TopologyVerdict, evaluate_window  # noqa: E402
from checker.recording import move_blocks, record_gate_values  # noqa: E402
from checker.report import write_reports  # noqa: E402
from checker.testing import MiB, Fault, History, backfill  # noqa: E402
from soakcore.services import Service, start_prometheus  # noqa: E402

START = 1767225600.0  # 2026-01-01T00:00:00Z
GOAL_RECORDED, GOAL_RAW = 2.5, 5.0
LOAD_BEFORE = " ".join(f"{x:.2f}" for x in os.getloadavg())
EXPECTED = ["consensus_stalled", "memory_growth_high", "reward_invariant_violated"]


Run = tuple[float, float, TopologyVerdict, float]


def judge_once(prom: Service, until: float, out: Path, use_recordings: bool) -> Run:
    """(evaluate seconds, reports seconds, the verdict, CPU seconds of the checker and
    Prometheus together): what soak-check does for one window. CPU seconds depend less on
    other work on the machine than wall time."""
    server = psutil.Process(prom.proc.pid)
    cpu0 = time.process_time() + sum(server.cpu_times()[:2])
    t0 = time.perf_counter()
    (v,) = evaluate_window(prom.url, START, until, run_id="bench", topology="triad_distributed",
                           profile=get_profile("soak_smoke"), use_recordings=use_recordings)
    t1 = time.perf_counter()
    write_reports(out, [v], RunMeta(run_dir=None, profile=v.profile))
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, v, time.process_time() + sum(server.cpu_times()[:2]) - cpu0


def stats(name: str, runs: list[Run]) -> float:
    ev = [r[0] for r in runs]
    total = [r[0] + r[1] for r in runs]
    v = runs[-1][2]
    print(f"  {name:<28} end to end min {min(total):5.2f} s  median {statistics.median(total):5.2f} s  "
          f"(evaluate min {min(ev):.2f} / median {statistics.median(ev):.2f} s, reports median "
          f"{statistics.median(r[1] for r in runs):.2f} s; CPU median {statistics.median(r[3] for r in runs):.2f} s "
          f"checker + Prometheus); {v.queries} queries; {len(v.recorded_gates)}/{len(v.gates)} gates from recordings")
    return statistics.median(total)


def compacted(data: Path, before: int, timeout: float = 300.0) -> float:
    """Seconds until Prometheus merged the recorded blocks (promtool writes one block per rule
    and 2 h; Prometheus compacts them about a minute after it starts, and a live run's TSDB
    holds recordings and raw series in the same blocks): judging many small blocks is
    several times slower, and a compaction running meanwhile takes a core."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if len([d for d in data.iterdir() if d.is_dir() and len(d.name) == 26]) <= before:
            return time.monotonic() - t0
        time.sleep(1.0)
    return float("nan")


def verdict_of(v: TopologyVerdict) -> dict[str, tuple[str, str | None]]:
    return {g.name: (g.status, g.worst_node) for g in v.gates}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--step", type=float, default=30.0, help="sample interval of the history (s)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--eval-interval", type=float, default=15.0, help="rule evaluation interval of the recordings (s)")
    a = p.parse_args()
    duration = a.hours * 3600
    until = START + duration
    nodes = tuple(f"node{i:02d}" for i in range(a.nodes))
    # Known faults, so the bench also shows the verdict is the right one: a stall, a leak, and a
    # 60 s invariant violation (short against the window: it tests the query resolution).
    faults = (Fault("stall", duration / 2, duration / 2 + 900), Fault("memory", 3600, duration, nodes[3], 512 * MiB),
              Fault("invariant", duration / 3, duration / 3 + 60, nodes[2]))
    history = History("bench", "triad_distributed", nodes, START, duration, a.step, faults)
    args = ("--storage.tsdb.retention.time=100y",)
    with tempfile.TemporaryDirectory(prefix="bench-checker-") as tmp:
        base = Path(tmp)
        t0 = time.monotonic()
        data = backfill([history], base / "data")
        backfill_secs = time.monotonic() - t0
        (base / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
        with start_prometheus(base / "prometheus.yml", data, timeout=120, extra_args=args) as prom:
            raw = [judge_once(prom, until, base / f"raw{i}", True) for i in range(a.reps)]
            t0 = time.monotonic()
            blocks = record_gate_values(prom.url, START, until, base / "recorded", a.eval_interval)
            record_secs = time.monotonic() - t0
        raw_blocks = len([d for d in data.iterdir() if d.is_dir()])
        t0 = time.monotonic()
        move_blocks(blocks, data)
        with start_prometheus(base / "prometheus.yml", data, timeout=120, extra_args=args) as prom:
            restart_secs = time.monotonic() - t0
            compact_secs = compacted(data, raw_blocks)
            recorded, forced = [], []
            for i in range(a.reps):      # interleaved: the same load for both paths
                recorded.append(judge_once(prom, until, base / f"rec{i}", True))
                forced.append(judge_once(prom, until, base / f"forced{i}", False))

    print(f"history: {a.hours:g} h x {a.nodes} nodes, one sample per {a.step:g} s; backfill {backfill_secs:.1f} s; "
          f"{a.reps} repetitions each")
    print("soak-check end to end (discovery, gates, figures, timeline, reports and plots):")
    raw_med = stats("backfilled-raw", raw)
    rec_med = stats(f"live-recorded ({a.eval_interval:g} s rules)", recorded)
    forced_med = stats("same TSDB, raw forced", forced)
    print(f"  ratio raw/recorded (interleaved, medians): {forced_med / rec_med:.1f}x; "
          f"backfilled-raw/recorded: {raw_med / rec_med:.1f}x")
    once = record_secs + restart_secs + compact_secs
    print(f"recording once for backfilled data: promtool create-blocks-from rules {record_secs:.1f} s "
          f"({len(blocks)} blocks) + Prometheus restart {restart_secs:.1f} s + its compaction of them "
          f"{compact_secs:.0f} s; then each judging {rec_med:.2f} s (the live-recorded case) vs raw {raw_med:.1f} s: "
          f"record once then judge {once + rec_med:.1f} s, pays off from judging "
          f"{max(2, int(once // max(0.01, raw_med - rec_med)) + 1)} times")
    same = verdict_of(raw[-1][2]) == verdict_of(recorded[-1][2]) == verdict_of(forced[-1][2]) and \
        raw[-1][2].disagreements == recorded[-1][2].disagreements == forced[-1][2].disagreements
    failed = sorted(g.name for g in recorded[-1][2].gates if g.status == "fail")
    print(f"verdicts: recorded == raw (status, worst node, every gate; disagreements): {same}; failed gates {failed} "
          f"(expected {', '.join(EXPECTED)})")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"goals: live-recorded <= {GOAL_RECORDED} s: {'met' if rec_med <= GOAL_RECORDED else 'MISSED'} "
          f"({rec_med:.2f} s median); backfilled <= {GOAL_RAW} s: from raw series "
          f"{'met' if raw_med <= GOAL_RAW else 'MISSED'} ({raw_med:.2f} s median), with the recordings produced "
          f"once {'met' if rec_med <= GOAL_RAW else 'MISSED'} ({rec_med:.2f} s median per judging, "
          f"{once:.0f} s once); load average at the end {load} (before {LOAD_BEFORE})")


if __name__ == "__main__":
    main()
