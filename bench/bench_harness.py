"""Benchmark: what the harness itself costs over a soak. Runs ``soak-run`` on the simulator
(triad_distributed, light continuous chaos unless ``--no-chaos``) and samples, every
``--every`` seconds with psutil, the CPU and resident memory of the runner (with its reaper),
the exporter, Prometheus and Alertmanager, and of the nodes apart (they are the system under
test, not the harness). Prints per component mean and max CPU % (100 % = one core) and max
RSS, over the soak window and over the whole run (start-up, drain and the checker included),
with the load average before and after (the machine may be shared).

    python3 bench/bench_harness.py [--secs 600] [--every 3] [--no-chaos] [--keep DIR]

Measured: see docs/performance.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulator.testing import port_block  # noqa: E402

HARNESS = ("runner", "exporter", "prometheus", "alertmanager")
OTHERS: set[str] = set()      # names of the processes counted as "other"
KIND: dict[int, str] = {}     # pid -> component, from the first sample that saw the process alive
# Light chaos: a restart or a pause of a node every minute (the runner's own defaults otherwise).
CHAOS = ["--chaos-continuous-enable", "--chaos-continuous-interval-secs", "60", "--chaos-continuous-start-sec", "30"]


def component(proc: psutil.Process, runner_pid: int) -> str:
    """Which part of the run a process is (by its argv: nodes are relaunched with new pids)."""
    if proc.pid == runner_pid:
        return "runner"
    try:
        argv = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        OTHERS.add("a process that exited before it was first sampled")
        return "other"
    exe = Path(argv[0]).name if argv else ""
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
    if module == "runner.reaper":
        return "runner"
    if module == "exporter":
        return "exporter"
    if module.startswith("simulator"):
        return "nodes"
    if exe.startswith("prometheus-alertmanager") or exe == "alertmanager":
        return "alertmanager"
    if exe == "prometheus":
        return "prometheus"
    OTHERS.add(" ".join(argv[:3])[:60] or proc.name())
    return "other"


@dataclass
class Sample:
    at: float
    cpu_secs: dict[int, float]          # pid -> user + system CPU seconds so far
    rss: dict[str, int]                 # component -> summed RSS bytes
    kind: dict[int, str]


@dataclass
class Usage:
    cpu: list[float] = field(default_factory=list)     # CPU % per interval (100 = one core)
    rss: list[int] = field(default_factory=list)
    cpu_secs: float = 0.0


def sample(runner: psutil.Process) -> Sample:
    cpu: dict[int, float] = {}
    rss: dict[str, int] = {}
    kind: dict[int, str] = {}
    try:
        procs = [runner, *runner.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            with p.oneshot():
                t = p.cpu_times()
                mem = p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        # Sticky: an exited node waiting to be reaped (a zombie: no argv) stays a node.
        k = KIND.get(p.pid) or KIND.setdefault(p.pid, component(p, runner.pid))
        cpu[p.pid], kind[p.pid] = t.user + t.system, k
        rss[k] = rss.get(k, 0) + mem
    return Sample(time.time(), cpu, rss, kind)


TOTAL = "harness total"


def usage(samples: list[Sample], since: float, until: float) -> dict[str, Usage]:
    """Per component (and the harness's total): CPU % of each sampling interval inside
    [since, until], RSS, CPU seconds. A process counts from its first sample on (a node
    relaunched between two samples loses less than one interval)."""
    out: dict[str, Usage] = {}
    for prev, cur in zip(samples, samples[1:]):
        if prev.at < since or cur.at > until:
            continue
        dt = cur.at - prev.at
        spent: dict[str, float] = {}
        for pid, secs in cur.cpu_secs.items():
            if pid in prev.cpu_secs:
                k = cur.kind[pid]
                spent[k] = spent.get(k, 0.0) + max(0.0, secs - prev.cpu_secs[pid])
        spent[TOTAL] = sum(v for k, v in spent.items() if k in HARNESS)
        rss = {**cur.rss, TOTAL: sum(v for k, v in cur.rss.items() if k in HARNESS)}
        for k in set(spent) | set(rss):
            u = out.setdefault(k, Usage())
            u.cpu.append(100.0 * spent.get(k, 0.0) / dt)
            u.cpu_secs += spent.get(k, 0.0)
            u.rss.append(rss.get(k, 0))
    return out


def table(title: str, found: dict[str, Usage], secs: float) -> None:
    print(f"{title} ({secs:.0f} s):")
    print(f"  {'component':<14} {'mean CPU %':>10} {'max CPU %':>10} {'max RSS MiB':>12} {'CPU s':>8}")
    for name in (*HARNESS, TOTAL, "other", "nodes"):
        if name in found:
            u = found[name]
            print(f"  {name:<14} {statistics.fmean(u.cpu) if u.cpu else 0:>10.1f} {max(u.cpu, default=0):>10.1f} "
                  f"{max(u.rss, default=0) / 2**20:>12.1f} {u.cpu_secs:>8.1f}")


def window(run_dir: Path | None) -> tuple[float, float] | None:
    """The soak window [since, until] of the run's (only) topology, from its summary.json."""
    try:
        t = json.loads((run_dir / "summary.json").read_text())["topologies"][0]  # type: ignore[operator]
        w = t.get("window") or {}
        return tuple(dt.datetime.fromisoformat(str(w.get(k) or t[j]).replace("Z", "+00:00")).timestamp()
                     for k, j in (("since", "started_at"), ("until", "ended_at")))  # type: ignore[return-value]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--secs", type=int, default=600, help="soak window (default 600: 10 minutes)")
    p.add_argument("--every", type=float, default=3.0, help="sampling interval (s)")
    p.add_argument("--no-chaos", action="store_true", help="no chaos (default: a restart or pause every minute)")
    p.add_argument("--keep", type=Path, help="keep the run directory under here")
    a = p.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp:
        out = a.keep or Path(tmp)
        base = port_block(144, 32000, 32700)
        argv = [sys.executable, "-m", "runner", "--profile", "soak_smoke", "--topology", "triad_distributed",
                "--duration-secs", str(a.secs), "--base-port", str(base - 100), "--out-dir", str(out), "--seed", "7",
                *([] if a.no_chaos else CHAOS)]
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "runner.log", "wb") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)})
        runner = psutil.Process(proc.pid)
        samples = []
        while proc.poll() is None:
            samples.append(sample(runner))
            time.sleep(a.every)
        runs = sorted(d for d in out.iterdir() if d.is_dir())
        span = window(runs[-1] if runs else None)
        if proc.returncode not in (0, 1):
            print((out / "runner.log").read_text(errors="replace")[-3000:], file=sys.stderr)
    load_after = os.getloadavg()
    chaos = "no chaos" if a.no_chaos else "a restart or pause every 60 s"
    print(f"soak-run triad_distributed on the simulator, {a.secs} s window, {chaos}; exit {proc.returncode}; "
          f"{len(samples)} samples every {a.every:g} s; {psutil.cpu_count()} cores")
    print(f"load average before {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in load_after)}")
    if span:
        table("soak window", usage(samples, *span), span[1] - span[0])
    else:
        print("(no summary.json with the window: whole run only)")
    table("whole run (start-up, window, drain, checker)", usage(samples, 0.0, float("inf")),
          samples[-1].at - samples[0].at if samples else 0.0)
    if OTHERS:
        print(f"other: {'; '.join(sorted(OTHERS))}")


if __name__ == "__main__":
    main()
