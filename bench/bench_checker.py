"""Benchmark: judge a 24-hour, 10-node history (backfilled with promtool) and report the
time and the number of Prometheus queries. Cost must grow with nodes, not run length.

    python3 bench/bench_checker.py [--hours 24] [--nodes 10] [--step 30]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# Judge with this checkout's checker, whatever copy of the package is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerts.profiles import get_profile  # noqa: E402
from checker.api import RunMeta, evaluate  # noqa: E402
from checker.report import write_reports  # noqa: E402
from checker.testing import MiB, Fault, History, backfill  # noqa: E402
from soakcore.services import start_prometheus  # noqa: E402

START = 1767225600.0  # 2026-01-01T00:00:00Z


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--step", type=float, default=30.0, help="sample interval of the history (s)")
    a = p.parse_args()
    duration = a.hours * 3600
    nodes = tuple(f"node{i:02d}" for i in range(a.nodes))
    # Known faults, so the bench also shows the verdict is the right one: a stall, a leak, and a
    # 60 s invariant violation (short against the window: it tests the query resolution).
    faults = (Fault("stall", duration / 2, duration / 2 + 900), Fault("memory", 3600, duration, nodes[3], 512 * MiB),
              Fault("invariant", duration / 3, duration / 3 + 60, nodes[2]))
    history = History("bench", "triad_distributed", nodes, START, duration, a.step, faults)
    with tempfile.TemporaryDirectory(prefix="bench-checker-") as tmp:
        base = Path(tmp)
        t0 = time.monotonic()
        backfill([history], base / "data")
        t1 = time.monotonic()
        (base / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
        with start_prometheus(base / "prometheus.yml", base / "data", timeout=120,
                              extra_args=("--storage.tsdb.retention.time=100y",)) as prom:
            t2 = time.monotonic()
            v = evaluate(prom.url, START, START + duration, run_id="bench", topology="triad_distributed",
                         profile=get_profile("soak_smoke"))
            t3 = time.monotonic()
            code = write_reports(base / "out", [v], RunMeta(run_dir=None, profile=v.profile))
            t4 = time.monotonic()
    failed = sorted(g.name for g in v.gates if g.status == "fail")
    print(f"history: {a.hours:g} h x {a.nodes} nodes, one sample per {a.step:g} s; backfill {t1 - t0:.1f} s, "
          f"Prometheus start {t2 - t1:.1f} s")
    print(f"evaluate: {t3 - t2:.1f} s, {v.queries} queries; reports and plots: {t4 - t3:.1f} s; "
          f"timeline rows {len(v.timeline)}")
    print(f"verdict: exit {code}, failed gates {failed} (expected consensus_stalled, memory_growth_high, reward_invariant_violated)")


if __name__ == "__main__":
    main()
