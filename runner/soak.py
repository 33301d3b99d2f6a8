"""The stages of a soak, each a function: setup, start, perturb+wait, judge, cleanup.

Cleanup is idempotent and runs first (stale network cuts) and last (always, on interrupt
too). Nothing in the run directory is ever deleted.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time

from alerts.gates import MAX_FOR_SECS
from checker.api import RunMeta, TopologyMeta, TopologyVerdict, evaluate
from checker.cli import gate_lines, result_paths
from checker.report import write_reports
from runner import netcut, progress, reaper
from runner.chaos import ChaosEngine, ChaosLog
from runner.config import RunConfig
from runner.nodes import NodeProc, wait_ready
from runner.plan import ChaosEvent, continuous_events
from runner.ports import Reservation
from runner.progress import Progress
from runner.stack import REPO, Stack
from runner.topology import node_specs
from soakcore.errors import SoakError
from soakcore.services import free_port
from soakcore.files import tail
from soakcore.runstate import ChaosCount, NodeState, RunState, write_run_state


class Topology:
    """One topology's nodes, chaos engine and run-state publication."""

    def __init__(self, cfg: RunConfig, index: int, name: str, chaos_log: ChaosLog) -> None:
        self.cfg, self.index, self.name = cfg, index, name
        self.dir = cfg.run_dir / name
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        specs = node_specs(name, index, cfg.run_id, self.dir, cfg.launch, cfg.custom_topologies)
        self.nodes = {s.node: NodeProc(s, env) for s in specs}
        self.state_path = self.dir / "run_state.json"
        self._lock = threading.Lock()
        self.chaos = ChaosEngine(name, self.nodes, chaos_log, self.publish, netcut.table_tag(os.getpid(), index))
        self.notes: list[str] = [f"weak gate (--allow-weak-gates): {w}" for w in cfg.weak_gates]
        self.events = self._events()

    def _events(self) -> tuple[ChaosEvent, ...]:
        planned = tuple(e for e in self.cfg.plan_events if e.applies_to(self.name))
        if self.cfg.continuous is None:
            return planned
        cont = continuous_events(self.cfg.continuous, self.name, self.index, tuple(self.nodes),
                                 self.cfg.duration_secs)
        return tuple(sorted(planned + cont, key=lambda e: e.at_sec))

    def publish(self) -> None:
        with self._lock, self.chaos._lock:
            state = RunState(
                run_id=self.cfg.run_id, topology=self.name, profile=self.cfg.profile.name,
                scenario=self.cfg.launch.scenario, thresholds=dict(self.cfg.profile.thresholds),
                nodes=tuple(NodeState(n.spec.node, n.spec.role, n.spec.node_id, str(n.spec.report_dir),
                                      str(n.spec.work_dir), n.pid, n.spec.status_url, dict(n.restarts),
                                      n.first_started_at, n.spec.critical)
                            for n in self.nodes.values()),
                chaos_windows=tuple(self.chaos.windows),
                chaos_events=tuple(ChaosCount(n, a, p, c) for (n, a, p), c in sorted(self.chaos.counts.items())))
            write_run_state(self.state_path, state)

    def supervise(self) -> bool:
        """Handle nodes that exited outside chaos; False when the topology must stop."""
        for node in self.nodes.values():
            code = node.exited_unexpectedly()
            if code is None:
                continue
            note = f"{node.spec.node} crashed with exit code {code}: {tail(node.spec.log_dir / 'stderr.log', 400)}"
            self.notes.append(note)
            print(f"soak-run: {self.name}: {note}", file=sys.stderr)
            node.restarts["crash"] += 1
            if self.cfg.on_crash == "restart":
                node.start()
            else:  # leave it down (its gates judge the loss) or stop the whole topology
                node.intended_down = True
            self.publish()
            if self.cfg.on_crash == "stop":
                return False
        return True


def run_topology(cfg: RunConfig, stack: Stack, index: int, name: str, stop: threading.Event,
                 chaos_log: ChaosLog) -> tuple[TopologyVerdict | None, TopologyMeta]:
    topo = Topology(cfg, index, name, chaos_log)
    started = time.time()
    process_status, t0 = "ok", started
    try:  # a node that cannot start fails the topology at once (nodes stopped, no drain)
        topo.publish()
        stack.start_exporter(topo.state_path, topo.dir / "exporter.log")
        for node in topo.nodes.values():
            node.start()
        topo.publish()
        wait_ready(topo.nodes.values(), cfg.startup_timeout_secs, stop)
    except BaseException:
        for node in topo.nodes.values():
            node.stop()
        topo.publish()
        raise
    try:
        if cfg.prewarm:
            _wait_first_reports(topo, cfg.startup_timeout_secs, stop)
        stack.wait_queryable(cfg.run_id, name, cfg.startup_timeout_secs + 10, stop)
        t0 = time.time()
        process_status = _perturb_and_wait(cfg, stack, topo, t0, stop)
    finally:
        ended, horizon = _finish(cfg, topo, stop)
    crashes = sum(n.restarts["crash"] for n in topo.nodes.values())
    if crashes and process_status == "ok":
        process_status = "crashed"
    meta = TopologyMeta(name, started, ended, "aborted" if stop.is_set() else process_status,
                        tuple(topo.notes), sum(topo.chaos.counts.values()), crashes)
    # A topology stopped at once (a crash under --on-crash stop) is still judged over a window
    # a few scrapes wide: the data that exist, never an empty range.
    until = max(ended, t0 + 2 * cfg.interval_s)
    verdict = evaluate(stack.prometheus_url or "", t0, until, run_id=cfg.run_id, topology=name,
                       profile=cfg.profile, horizon=max(horizon, until), scrape_interval=cfg.interval_s)
    return verdict, meta


def _finish(cfg: RunConfig, topo: Topology, stop: threading.Event) -> tuple[float, float]:
    """End the window, heal every fault, then drain: the nodes keep running while Prometheus
    scrapes for the longest gate ``for`` plus two intervals, so a breach that began just
    before the window's end can still be seen to last (not after an interrupt). Until the
    runner itself stops a node, any exit is a crash: supervision goes on through the drain.
    Returns (the window's end, the end of the drain)."""
    ended = time.time()
    progress.clear_line()
    topo.chaos.heal_all()
    topo.notes.extend(topo.chaos.heal_errors)
    drain = MAX_FOR_SECS + 2 * cfg.interval_s if cfg.drain_secs is None else cfg.drain_secs
    drain_until = time.monotonic() + (0.0 if stop.is_set() else drain)
    topo.supervise()
    while time.monotonic() < drain_until and not stop.wait(0.2):
        topo.supervise()
    topo.supervise()
    horizon = time.time()
    for node in topo.nodes.values():
        node.stop()
    topo.publish()
    return ended, horizon


def _own_tables_gone() -> list[str]:
    """The run's own nftables tables must be gone when it ends: verified, deleted if still
    there; what was found is returned as notes (an error when a table cannot be deleted)."""
    found = [t for t in netcut.list_tables() if netcut.owner_of(t) == os.getpid()]
    failed = set(netcut.heal_owned(os.getpid()))
    notes = [(f"error: nftables table {t} of this run could not be deleted: traffic of its ports stays dropped; "
              f"delete it with: nft delete table inet {t}") if t in failed
             else f"nftables table {t} of this run was still in place at the end (deleted then)" for t in found]
    for note in notes:
        print(f"soak-run: {note}", file=sys.stderr)
    return notes


def _wait_first_reports(topo: Topology, timeout: float, stop: threading.Event) -> None:
    """Wait for every node's first report. A node with a status endpoint already proved it
    runs (readiness) and feeds the exporter from its status: no need to wait a whole epoch
    (60 s by default in G2) for its first file."""
    waiting = [n for n in topo.nodes.values() if not n.spec.status_url]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if all(any(n.spec.report_dir.glob("epoch-*.json")) for n in waiting):
            return
        topo.supervise()
        stop.wait(0.2)
    topo.notes.append(f"prewarm: not every node wrote a report within {timeout:g}s")


def _perturb_and_wait(cfg: RunConfig, stack: Stack, topo: Topology, t0: float, stop: threading.Event) -> str:
    pending = list(topo.events)
    progress = Progress(cfg, topo.name, stack, t0, topo.notes)
    next_sample = 0.0
    while not stop.is_set():
        elapsed = time.time() - t0
        if elapsed >= cfg.duration_secs:
            return "ok"
        while pending and pending[0].at_sec <= elapsed:
            topo.chaos.launch(pending.pop(0))
        if not topo.supervise():
            return "crashed"
        if time.monotonic() >= next_sample:
            next_sample = time.monotonic() + cfg.interval_s
            for node in topo.nodes.values():
                node.sample_rss(time.time())
            firing = progress.update(topo.nodes, topo.chaos.active)
            if cfg.abort_on_fail and firing and elapsed > cfg.profile.thresholds.get("warmup_secs", 0):
                topo.notes.append(f"aborted early: critical alert firing: {', '.join(firing)}")
                return "failed_early"
        stop.wait(0.2)
    return "aborted"


def run(cfg: RunConfig, stop: threading.Event, lease: Reservation | None = None) -> int:
    """The whole run. ``lease``: the run's port locks (runner/ports.py), handed on to the reaper."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    # From here on every process started carries the run's marker, and the reaper ends them all
    # (and deletes this run's nftables tables) as soon as this process is gone, however it dies.
    owner = reaper.Owner.me(cfg.run_dir)
    saved_env = os.environ.get(reaper.ENV)
    os.environ[reaper.ENV] = owner.marker
    reaper_pipe = reaper.start(owner, lease.fds if lease else [], cfg.run_dir / "reaper.log")
    cfg.save()
    chaos_log = ChaosLog(cfg.run_dir / "chaos_events.log")
    stack = Stack(cfg.run_dir, cfg.interval_s, cfg.prometheus_url, cfg.alertmanager_url,
                  cfg.exporter_port or free_port(), exporter_host=cfg.exporter_host)
    verdicts: list[TopologyVerdict] = []
    metas: list[TopologyMeta] = []
    windows: dict[str, tuple[float, ...]] = {}
    try:
        stack.start()
        print(f"soak-run: run {cfg.run_id} in {cfg.run_dir}; Prometheus {stack.prometheus_url}", file=sys.stderr)
        for index, name in enumerate(cfg.topologies):
            if stop.is_set():
                break
            try:
                verdict, meta = run_topology(cfg, stack, index, name, stop, chaos_log)
            except SoakError as exc:  # this topology could not run or be judged; the others still do
                print(f"soak-run: {name}: {exc}", file=sys.stderr)
                verdict, meta = None, TopologyMeta(name, time.time(), time.time(), "error", (str(exc),))
            metas.append(meta)
            # [since, until, horizon]: re-judging (--run-dir) sees the drain as the run did.
            windows[name] = ((verdict.since, verdict.until, verdict.judged_until or verdict.until) if verdict
                             else (meta.started_at, meta.ended_at))
            cfg.save({"windows": windows})
            if verdict is not None:
                verdicts.append(verdict)
            if cfg.fail_fast and (verdict is None or verdict.status != "ok"):
                break
    finally:
        stack.stop()
        netcut.heal_stale()
        table_notes = _own_tables_gone()
        os.close(reaper_pipe)  # the reaper checks once more that nothing of this run is left, then exits
        if saved_env is None:
            os.environ.pop(reaper.ENV, None)
        else:
            os.environ[reaper.ENV] = saved_env
    if table_notes and metas:
        metas[-1] = dataclasses.replace(metas[-1], notes=(*metas[-1].notes, *table_notes))
    meta = RunMeta(run_dir=cfg.run_dir, profile=cfg.profile, scenario=cfg.launch.scenario,
                   chaos_plan=str(cfg.chaos_plan) if cfg.chaos_plan else None,
                   chaos_continuous=cfg.to_json()["continuous"] or {}, seed=cfg.launch.seed,
                   duration_secs=cfg.duration_secs, topologies=tuple(metas), aborted=stop.is_set(),
                   prometheus_url=stack.prometheus_url)
    code = write_reports(cfg.run_dir, verdicts, meta)
    status = "aborted" if stop.is_set() else ("ok" if code == 0 else "failed")
    weak = f" with {len(cfg.weak_gates)} weak gate(s): {'; '.join(cfg.weak_gates)}" if cfg.weak_gates else ""
    progress.clear_line()
    print("\n".join([*gate_lines(json.loads((cfg.run_dir / "summary.json").read_text())),
                     f"soak-run: verdict {status.upper()}{weak}: summary {cfg.run_dir / 'summary.md'}",
                     *(f"  {p}" for p in result_paths(cfg.run_dir)[1:])]))
    return code if not stop.is_set() else 1
