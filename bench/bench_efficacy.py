"""Benchmark: how fast and how exactly each gate catches its fault, with and without chaos.

Runs the gate matrix of ``tests/test_gate_matrix.py`` (real soaks: simulator, exporter,
Prometheus, Alertmanager, webhook, checker), then per gate: the fault, the verdict alone
and under chaos on the other nodes, the time from injection to the alert firing (the
``startsAt`` Prometheus sent) and to the webhook delivery (``received_at`` in alerts.log),
the floor (the gate's own ``for`` + one scrape + one evaluation + Alertmanager's
group_wait, plus the threshold for duration gates) and the ratio to it. Writes
docs/efficacy.md.

    python3 bench/bench_efficacy.py [--out docs/efficacy.md]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from alerts.gates import GATES, _secs  # noqa: E402
from soakcore.services import read_alerts_log  # noqa: E402
from soakrun import FAST, SoakRun  # noqa: E402
from test_gate_matrix import EXPECTED_FAILURES, run_matrix  # noqa: E402

GROUP_WAIT = 5.0  # alerts/alertmanager.yml route group_wait
# Why a gate stays above 1.5x its floor, as measured (bench runs of 2026-11-27).
WHY_SLOW = {
    "SoakReportsMissing": "the case's breach comes and goes with every report (epoch 6 s, threshold 3 s); each "
                          "breach is shorter than Alertmanager's 5 s group_wait, so the first notification waits "
                          "for a flush that catches one. The verdict is unaffected; a `keep_firing_for` on the "
                          "rule would make delivery prompt",
    "SoakDiskGrowthHigh": "the slope over 10 m must first cross the threshold after warm-up: the leak's rate, "
                          "not the pipeline, sets the time",
}
INTERVAL = float(FAST[FAST.index("--poll-interval-secs") + 1])  # scrape = evaluation interval


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", text.replace("Z", "+00:00"))).timestamp()


def _injected_at(run: SoakRun) -> float | None:
    """Unix time of the fault: the faulted node's first start + its --fault-*-at-sec."""
    argv = " ".join(run.proc.args)
    m = re.search(r"(?:--node-arg[ =])(\w+)=--fault-[a-z]+-at-sec=(\d+)", argv)
    node, at = (m.group(1), float(m.group(2))) if m else (None, 0.0)
    state = next(run.run_dir.glob("*/run_state.json"))
    nodes = json.loads(state.read_text())["nodes"]
    starts = [n["started_at"] for n in nodes if n.get("started_at") and (node is None or n["node"] == node)]
    return min(starts) + at if starts else None


def _delivery(run: SoakRun, alert: str) -> tuple[float | None, float | None]:
    firing = [e for e in read_alerts_log(run.run_dir / "alerts.log")
              if e.get("status") == "firing" and e.get("labels", {}).get("alertname") == alert]
    if not firing:
        return None, None
    first = min(firing, key=lambda e: e["received_at"])
    return (_ts(first["startsAt"]) if first.get("startsAt") else None), first["received_at"]


def _floor(gate_name: str, run: SoakRun) -> float:
    g = next(g for g in GATES if g.name == gate_name)
    gate = run.gates()[gate_name]
    extra = gate["threshold"] if g.threshold_is_duration else 0.0
    return _secs(g.for_) + 2 * INTERVAL + GROUP_WAIT + extra


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "efficacy.md")
    args = p.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_matrix(Path(tmp))
        wall = time.monotonic() - started
        rows = ["| gate | fault | verdict alone | verdict under chaos | injection to firing | to delivery | "
                "floor | ratio |", "|---|---|---|---|---|---|---|---|"]
        for case, gates in sorted(EXPECTED_FAILURES.items()):
            alone, chaos = runs[case], runs[f"{case}+chaos"]
            injected = _injected_at(alone)
            for name in sorted(gates):
                g = next(g for g in GATES if g.name == name)
                fired, delivered = _delivery(alone, g.alert)
                floor = _floor(name, alone)
                to_fire = f"{fired - injected:.1f} s" if fired and injected else "not fired"
                to_deliver = delivered - injected if delivered and injected else None
                ratio = f"{to_deliver / floor:.2f}" if to_deliver else "-"
                rows.append(f"| {g.alert} | {case} | {alone.gates()[name]['status']} | "
                            f"{chaos.gates()[name]['status']} | {to_fire} | "
                            f"{f'{to_deliver:.1f} s' if to_deliver else '-'} | {floor:.0f} s | {ratio} |")
        green = runs["green_chaos"].summary()["overall_status"]
        slow = [f"- {alert}: {why}." for alert, why in WHY_SLOW.items()]
    text = "\n".join([
        "# Gate efficacy", "",
        f"Generated by `python3 bench/bench_efficacy.py` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"({wall:.0f} s of wall time for {len(runs)} soaks, two batches side by side).", "",
        "Injection: the faulted node's first start plus its `--fault-*-at-sec` (0 for faults present from the "
        "start: DistFS ratio, leaks, report gap). Floor: the gate's `for` + one scrape + one evaluation "
        f"({INTERVAL:g} s each) + Alertmanager's group_wait ({GROUP_WAIT:g} s), plus the threshold for duration "
        "gates. Figures that need time to cross their threshold (a p95 over 5 m, a ratio, a slope after "
        "warm-up) are above their floor by that time, which the floor does not include.", "",
        f"Healthy run with every chaos action and tight thresholds: **{green}**.", "", *rows, "",
        "Above 1.5x of the floor, and why:", "", *slow, ""])
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
