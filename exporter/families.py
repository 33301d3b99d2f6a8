"""Metric families from the collector's state: the exposition side of the exporter.

Names, types and labels follow the catalog in DESIGN.md (add, never rename). Every series
carries ``run_id`` and ``topology`` first.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter import chaoswin, topolag
from exporter.procs import proc_stats, read_pid
from exporter.reports import STATUSES
from exporter.state import NodeView
from soakcore.distfs import DISTFS_REASONS
from soakcore.actions import RELAUNCH
from soakcore.runstate import CHAOS_ACTIONS, RESTART_CAUSES

if TYPE_CHECKING:
    from soakcore.runstate import ChaosWindow
    from exporter.collector import SoakCollector, Source

REPORT_ERROR_REASONS = ("partial", "invalid_json", "schema", "too_large", "io", "duplicate")
BASE = ("run_id", "topology")


class Families:
    """Creates each family once per scrape with the run labels in front."""

    def __init__(self, base_values: list[str]) -> None:
        self.base = base_values
        self.out: dict[str, Metric] = {}

    def add(self, kind: str, name: str, doc: str, labels: tuple[str, ...], values: list[str],
            v: float | None) -> None:
        if v is None:
            return
        fam = self.out.get(name)
        if fam is None:
            if kind == "counter":
                fam = CounterMetricFamily(name.removesuffix("_total"), doc, labels=[*BASE, *labels])
            else:
                fam = GaugeMetricFamily(name, doc, labels=[*BASE, *labels])
            self.out[name] = fam
        fam.add_metric([*self.base, *values], float(v))


def build_families(c: "SoakCollector") -> Iterator[Metric]:
    s = c.setup
    f = Families([s.run_id, s.topology])
    f.add("gauge", "soak_run_info", "Run metadata.", ("profile", "scenario"), [s.profile, s.scenario], 1)
    for key, value in sorted(s.thresholds.items()):
        f.add("gauge", "soak_gate_threshold", "Active threshold of the profile (and overrides).", ("gate",),
              [key], value)
    now = time.time()
    for src in s.sources:
        view = c.views.get(src.node)
        node_id = src.node_id or (view.latest.node_id if view and view.latest else None) or ""
        f.add("gauge", "soak_node_info", "Node identity.", ("node", "role", "node_id"),
              [src.node, src.role, node_id], 1)
        if view is not None:
            _report_metrics(f, view, src.node)
            _arrival_metrics(f, view, src, c.started_at, s.chaos_windows, now)
            _consensus_metrics(f, view, src.node)
            _distfs_metrics(f, view, src.node)
        _process_metrics(f, c, src)
    _chaos_metrics(f, c, now)
    for node, action, phase, count in s.chaos_events:
        f.add("counter", "soak_chaos_events_total", "Chaos events by outcome.", ("node", "action", "phase"),
              [node, action, phase], count)
    f.add("counter", "soak_consensus_hash_mismatches_total", "Heights with two different block hashes.",
          (), [], c.hashes.mismatches)
    yield from f.out.values()


def _chaos_metrics(f: Families, c: "SoakCollector", now: float) -> None:
    """Fault windows (exemptions) and the stall clock: see ``exporter.chaoswin``."""
    s = c.setup
    active = chaoswin.active(s.chaos_windows)
    for src in s.sources:
        for action in CHAOS_ACTIONS:
            f.add("gauge", "soak_chaos_active", "1 while an injected fault is in effect.", ("node", "action"),
                  [src.node, action], float((src.node, action) in active))
    exempt = chaoswin.exempt_until(s.chaos_windows)
    for (node, action), until in sorted(exempt.items()):
        f.add("gauge", "soak_chaos_exempt_until_timestamp_seconds",
              "Gates exempt the node from this action's effects until then (window end + grace; +Inf while "
              "in effect).",
              ("node", "action"), [node, action], until)
    relaunch = {node for (node, action), until in exempt.items() if action in RELAUNCH and until > now}
    for src in s.sources:
        view = c.views.get(src.node)
        if view is not None:
            f.add("counter", "soak_consensus_height_regressions_excused_total",
                  "Height drops first seen while the node was exempt from a restart or kill.", ("node",),
                  [src.node], c.excuser.observe(src.node, view.regressions, src.node in relaunch))
    for node, blocks in sorted(topolag.behind({n: v.trail for n, v in c.views.items()}).items()):
        f.add("gauge", "soak_consensus_height_behind_topology",
              "Blocks behind the topology's highest node at the moment of this node's newest reading.",
              ("node",), [node], blocks)
    progress = [v.last_progress_s for v in c.views.values() if v.last_progress_s is not None]
    starts = [src.started_at for src in s.sources if src.started_at is not None]
    stall = chaoswin.stall_seconds(max(progress, default=None), min(starts, default=None), s.chaos_windows,
                                   {src.node for src in s.sources if src.critical}, now)
    f.add("gauge", "soak_consensus_stall_seconds",
          "Seconds without committed-height progress in the topology, faults on critical nodes not counted.",
          (), [], stall)


def _process_metrics(f: Families, c: "SoakCollector", src: "Source") -> None:
    n = [src.node]
    pid = read_pid(src.pid) if src.pid else None
    st = proc_stats(pid)
    f.add("gauge", "soak_process_up", "1 while the node process runs.", ("node",), n, float(st.up))
    if st.up:
        f.add("gauge", "soak_process_resident_memory_bytes", "Resident set size.", ("node",), n, st.rss)
        f.add("counter", "soak_process_cpu_seconds_total", "User+system CPU of the process.", ("node",), n,
              st.cpu_s)
        f.add("gauge", "soak_process_open_fds", "Open file descriptors.", ("node",), n, st.fds)
        f.add("gauge", "soak_process_threads", "Threads.", ("node",), n, st.threads)
        f.add("gauge", "soak_process_start_time_seconds", "Process start (unix s).", ("node",), n, st.start_time)
    restarts = c.restarts(src, pid if st.up else None)
    for cause in RESTART_CAUSES:
        f.add("counter", "soak_process_restarts_total", "Restarts by cause.", ("node", "cause"),
              [src.node, cause], restarts.get(cause, 0))
    if src.work_dir:
        f.add("gauge", "soak_node_disk_bytes", "Size of the node's directory.", ("node",), n,
              c.disk.size(src.work_dir))


def _report_metrics(f: Families, v: NodeView, node: str) -> None:
    n = [node]
    f.add("counter", "soak_reports_total", "Reports ingested.", ("node",), n, v.reports_total)
    for reason in REPORT_ERROR_REASONS:
        f.add("counter", "soak_report_errors_total", "Report files that stayed invalid.", ("node", "reason"),
              [node, reason], v.errors.get(reason, 0))
    r = v.latest_report
    if r is None:
        return
    f.add("gauge", "soak_report_last_observed_timestamp_seconds", "observed_at of the newest report.",
          ("node",), n, r.observed_at_ms / 1000)
    f.add("gauge", "soak_report_last_epoch_index", "Epoch index of the newest report.", ("node",), n,
          r.epoch_index)
    f.add("gauge", "soak_report_missing_fields", "Fields the newest report lacks.", ("node",), n, len(r.missing))


def _arrival_metrics(f: Families, v: NodeView, src: "Source", exporter_started_at: float,
                     windows: "tuple[ChaosWindow, ...]", now: float) -> None:
    """Report timing on this machine's clock, and what the node's own clock says against it."""
    n = [src.node]
    f.add("counter", "soak_report_clock_steps_total",
          "Jumps of more than 60 s in the node's clock offset (its observed_at against the arrival).",
          ("node",), n, v.clock_steps)
    f.add("gauge", "soak_report_clock_offset_seconds",
          "observed_at of the node's last reading minus its arrival (file mtime or poll time) here.",
          ("node",), n, v.clock_offset_s)
    f.add("counter", "soak_report_numbering_restarts_total",
          "Times the node's report numbering started over (a rewritten epoch file with new content).",
          ("node",), n, v.sequence_restarts)
    f.add("counter", "soak_exporter_ingest_failures_total",
          "Polls of the node's report folder that failed as a whole (its last readings are kept).",
          ("node",), n, v.ingest_failures)
    if src.report_dir:
        # Before its first report a node counts from its start (run state), else from ours:
        # a node that never reports ages like one that stopped reporting.
        started = getattr(src, "started_at", None)
        since = v.last_arrival_s if v.last_arrival_s is not None else (
            started if started is not None else exporter_started_at)
        f.add("gauge", "soak_report_last_arrival_timestamp_seconds",
              "Arrival here (file mtime) of the node's most recent report; its start before the first.",
              ("node",), n, since)
        f.add("gauge", "soak_report_gap_seconds",
              "Seconds since that arrival, not counting the node's own down faults (window + grace).",
              ("node",), n, chaoswin.report_gap_seconds(since, src.node, windows, now))


def _consensus_metrics(f: Families, v: NodeView, node: str) -> None:
    n = [node]
    f.add("counter", "soak_consensus_height_regressions_total", "Committed height went down.", ("node",), n,
          v.regressions)
    r = v.latest
    if r is None:
        return
    f.add("gauge", "soak_consensus_committed_height", "Committed height.", ("node",), n, r.committed_height)
    f.add("gauge", "soak_consensus_network_committed_height", "Network committed height.", ("node",), n,
          r.network_committed_height)
    f.add("gauge", "soak_consensus_last_execution_height", "Last execution height.", ("node",), n,
          r.last_execution_height)
    f.add("gauge", "soak_consensus_last_progress_timestamp_seconds", "When committed height last rose.",
          ("node",), n, v.last_progress_s)
    for p in v.peers:
        f.add("gauge", "soak_consensus_peer_height", "Peer heads.", ("node", "peer"), [node, p.node_id], p.height)
    current = r.last_status or "unknown"
    for status in (*STATUSES, "unknown"):
        f.add("gauge", "soak_consensus_status", "1 for the current status.", ("node", "status"), [node, status],
              float(current == status))
    if r.invariant_ok is not None:
        f.add("gauge", "soak_reward_invariant_ok", "Reward-asset invariant holds.", ("node",), n,
              float(r.invariant_ok))
    if r.invariant_violations is not None:
        f.add("gauge", "soak_reward_invariant_violations", "violation_count.", ("node",), n, r.invariant_violations)


def _distfs_metrics(f: Families, v: NodeView, node: str) -> None:
    d = v.distfs
    if not d.seen:
        return
    f.add("counter", "soak_distfs_checks_total", "DistFS checks, run-cumulative.", ("node", "result"),
          [node, "passed"], d.passed.value)
    f.add("counter", "soak_distfs_checks_total", "DistFS checks, run-cumulative.", ("node", "result"),
          [node, "failed"], d.failed.value)
    by_reason = dict.fromkeys(DISTFS_REASONS, 0)
    for reason, counter in d.reasons.items():  # closed label set: unknown names count as UNKNOWN
        key = reason if reason in by_reason else "UNKNOWN"
        by_reason[key] += counter.value
    for reason, count in by_reason.items():
        f.add("counter", "soak_distfs_check_failures_total", "DistFS failures by reason.", ("node", "reason"),
              [node, reason], count)
