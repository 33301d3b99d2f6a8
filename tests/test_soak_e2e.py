"""Real end-to-end soaks through ``python3 -m runner``: simulator nodes, exporter, Prometheus,
Alertmanager, chaos and the checker. One soak runs both topologies with every chaos action but corrupt_store;
others, started at the same time, are interrupted with SIGINT mid-run, stop early on a critical
alert (--abort-on-fail), and lose a node to a crash (then the next topology still runs)."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from soakrun import SoakRun, soak_ports, start_soak

# Every action on both topologies inside the 36 s window. Two lanes that never overlap on a
# node: the process (restart, pause, kill, clock_skew) and the network (disconnect, loss,
# bandwidth, delay, partition: their probes would read each other's tables). corrupt_store is
# left out: it damages the store on purpose, so the DistFS gates fail (the gate matrix has it).
# triad is one node: it has no peer to be partitioned from.
AT = {"restart": 4, "disconnect": 4, "pause": 8, "loss": 9, "kill": 13, "bandwidth": 14, "clock_skew": 17,
      "delay": 21, "challenge_pressure": 26, "partition": 28}
FIELDS = {"restart": {"down_secs": 1}, "kill": {"down_secs": 1}, "loss": {"percent": 10},
          "bandwidth": {"rate_kbit": 1024}, "delay": {"delay_ms": 100, "jitter_ms": 10},
          "clock_skew": {"offset_ms": 2000}, "partition": {"peers": ["storage"]}}
NODE_FOR = {"triad": {a: "triad" for a in AT if a != "partition"},
            "triad_distributed": {"restart": "sequencer", "pause": "storage", "challenge_pressure": "storage",
                                  "disconnect": "observer", "kill": "storage", "loss": "storage",
                                  "bandwidth": "observer", "clock_skew": "observer", "delay": "sequencer",
                                  "partition": "observer"}}


def _plan(path: Path) -> Path:
    events = [{"id": f"{topology}-{action}", "at_sec": AT[action], "topology": topology, "node": node,
               "action": action, "duration_secs": 0 if action in ("restart", "kill") else 3,
               **FIELDS.get(action, {})}
              for topology, nodes in NODE_FOR.items() for action, node in nodes.items()]
    path.write_text(json.dumps({"meta": {"name": "e2e"}, "events": events}))
    return path


def _processes_under(run_dir: Path) -> list[str]:
    """Live processes whose working directory or command line lies under the run directory."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        info = p.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        text = " ".join(info["cmdline"] or []) + " " + (info["cwd"] or "")
        if str(run_dir) in text:
            found.append(f"{info['pid']}: {text[:200]}")
    return found


def _stale_tables(runner_pid: int) -> list[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"soak_{runner_pid}_" in line]


@pytest.fixture(scope="module")
def soaks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SoakRun]]:
    tmp = tmp_path_factory.mktemp("e2e")
    runs = {
        "full": start_soak("full", tmp, soak_ports(), ["--duration-secs", "36", "--chaos-plan", str(_plan(tmp / "plan.json"))]),
        # Continuous chaos with short faults, so a fault is likely in effect when SIGINT lands.
        "interrupted": start_soak("interrupted", tmp, soak_ports(), [
            "--topologies", "triad_distributed,triad", "--duration-secs", "300", "--enable-chaos",
            "--chaos-continuous-interval-secs", "3", "--chaos-continuous-start-sec", "1",
            "--chaos-continuous-actions", "pause,disconnect,restart", "--chaos-continuous-pause-duration-secs", "2"]),
        "abort_on_fail": start_soak("abort_on_fail", tmp, soak_ports(), [
            "--topology", "triad", "--duration-secs", "300", "--abort-on-fail", "--threshold", "warmup_secs=3",
            "--node-arg", "triad=--fault-invariant-at-sec=4"]),
        "crash_then_next": start_soak("crash_then_next", tmp, soak_ports(), [
            "--topologies", "triad,triad_distributed", "--duration-secs", "15", "--on-crash", "stop",
            "--node-arg", "triad=--fault-crash-at-sec=3", "--node-arg", "triad=--fault-crash-code=5"]),
    }
    try:
        yield runs
    finally:
        for run in runs.values():
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()


def test_a_short_soak_with_every_chaos_action_leaves_a_complete_judged_run_directory(
        soaks: dict[str, SoakRun]) -> None:
    run = soaks["full"]
    code = run.wait(240)
    log = (run.out_dir / "runner.log").read_text()
    assert code in (0, 1), log[-3000:]
    d = run.run_dir
    for name in ("run_config.json", "summary.json", "summary.md", "timeline.csv", "chaos_events.log", "alerts.log"):
        assert (d / name).is_file(), name
    assert any((d / "prometheus").rglob("*")), "the run's TSDB is kept"
    summary = run.summary()
    assert summary["overall_status"] in ("ok", "failed")
    assert f"verdict {summary['overall_status'].upper()}" in log and str(d / "summary") in log
    assert [t["topology"] for t in summary["topologies"]] == ["triad", "triad_distributed"]
    for t in summary["topologies"]:
        assert t["status"] in ("ok", "failed") and t["metric_gate"]["status"] in ("pass", "fail", "insufficient_data")
        assert t["process_status"] == "ok", t["notes"]
        assert t["chaos_events"] == len(NODE_FOR[t["topology"]])
        for node in NODE_FOR[t["topology"]].values():
            node_dir = d / t["topology"] / "nodes" / node
            for name in ("stdout.log", "stderr.log", "command.txt", "rss.csv"):
                assert (node_dir / name).is_file(), node_dir / name
            assert any((node_dir / "report").glob("epoch-*.json"))
    chaos = list(csv.reader((d / "chaos_events.log").read_text().splitlines(), delimiter="|"))
    assert chaos[0] == ["timestamp", "topology", "event_id", "phase", "action", "node", "detail"]
    completed = {(r[1], r[4]) for r in chaos[1:] if r[3] == "completed"}
    assert completed == {(t, a) for t, nodes in NODE_FOR.items() for a in nodes}, chaos
    assert summary["totals"]["chaos_events_total"] == sum(map(len, NODE_FOR.values()))
    config = json.loads((d / "run_config.json").read_text())
    assert config["seed"] == 7 and set(config["windows"]) == {"triad", "triad_distributed"}
    assert config["repeat_argv"][:2] == ["--profile", "soak_smoke"] and "--chaos-plan" in config["repeat_argv"]
    with open(d / "timeline.csv") as fh:
        assert next(csv.reader(fh))[:3] == ["topology", "node", "epoch_index"]
    assert not _processes_under(d), "no process of the run may survive it"
    assert not _stale_tables(run.proc.pid)


def test_sigint_mid_run_heals_stops_everything_and_writes_an_aborted_summary(soaks: dict[str, SoakRun]) -> None:
    run = soaks["interrupted"]
    deadline = time.monotonic() + 120
    state = None
    while time.monotonic() < deadline and run.proc.poll() is None:
        paths = list(run.out_dir.glob("*/triad_distributed/run_state.json"))
        state = json.loads(paths[0].read_text()) if paths else None
        if state and any(c["phase"] == "completed" for c in state["chaos_events"]):
            break
        time.sleep(0.5)
    assert state is not None and run.proc.poll() is None, (run.out_dir / "runner.log").read_text()[-3000:]
    time.sleep(1.5)
    run.proc.send_signal(signal.SIGINT)
    code = run.wait(90)
    log = (run.out_dir / "runner.log").read_text()
    assert code == 1, log[-3000:]
    d = run.run_dir
    summary = run.summary()
    assert summary["overall_status"] == "aborted"
    assert [t["topology"] for t in summary["topologies"]] == ["triad_distributed"], "later topologies do not start"
    assert summary["topologies"][0]["process_status"] == "aborted"
    for name in ("run_config.json", "summary.md", "timeline.csv", "chaos_events.log", "alerts.log"):
        assert (d / name).is_file(), name
    assert not _processes_under(d), "orphans left behind"
    assert not _stale_tables(run.proc.pid), "a network cut outlived the run"
    starts = [r for r in (d / "chaos_events.log").read_text().splitlines()[1:] if "|start|" in r]
    ends = [r for r in (d / "chaos_events.log").read_text().splitlines()[1:] if "|start|" not in r]
    assert len(starts) == len(ends), "every started fault was ended (healed) and logged"


def test_abort_on_fail_stops_early_when_a_critical_gate_fires_after_warm_up(soaks: dict[str, SoakRun]) -> None:
    run = soaks["abort_on_fail"]
    started = time.monotonic()
    code = run.wait(150)
    assert code == 1 and time.monotonic() - started < 150
    top = run.summary()["topologies"][0]
    assert top["process_status"] == "failed_early" and top["status"] == "failed"
    assert any("SoakRewardInvariantViolated" in n for n in top["notes"]), top["notes"]
    assert not _processes_under(run.run_dir)


def test_a_crashing_node_is_reported_as_a_crash_and_the_next_topology_still_runs(soaks: dict[str, SoakRun]) -> None:
    run = soaks["crash_then_next"]
    assert run.wait(150) == 1
    summary = run.summary()
    crashed, nxt = summary["topologies"]
    assert crashed["topology"] == "triad" and crashed["process_status"] == "crashed"
    assert crashed["status"] == "failed" and crashed["gates"]["process_crashed"]["status"] == "fail"
    assert any("exit code 5" in n for n in crashed["notes"]), crashed["notes"]
    assert crashed["chaos_events"] == 0, "a crash is not chaos"
    assert nxt["topology"] == "triad_distributed" and nxt["process_status"] == "ok"
    assert "|triad|" not in (run.run_dir / "chaos_events.log").read_text()
    assert not _processes_under(run.run_dir)
