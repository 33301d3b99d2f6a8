"""The samples of a scrape, as ``Block``s of catalog metrics (``soakcore.catalog``).

Names, types, labels and help texts are the catalog's (add, never rename); every series
carries ``run_id`` and ``topology`` first. What is built when:

- a node's report-derived samples (identity, report counters and gauges, consensus, DistFS):
  one block per node, kept until the node's next reading (``NodeView.version``), its lines
  rendered once;
- per scrape: the run's metadata, the wall-clock gauges (report gap, stall clock), process
  stats, restarts, disk size, chaos windows and exemptions, excused regressions, outside lag.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from exporter import chaoswin, topolag
from exporter.expo import Block
from exporter.procs import proc_stats, read_pid
from exporter.reports import STATUSES
from exporter.state import NodeView
from soakcore.actions import RELAUNCH, STOPS_COMMITS
from soakcore.catalog import (DIRECTIONS, FINALITY_STATS, GC_RESULTS, NODE_ALERT_CODES, PEER_STATES,
                              REPORT_ERROR_REASONS, STORAGE_DIRS, TIMING_REJECTIONS)
from soakcore.distfs import DISTFS_REASONS
from soakcore.runstate import CHAOS_ACTIONS, RESTART_CAUSES

if TYPE_CHECKING:
    from exporter.collector import SoakCollector, Source

__all__ = ["REPORT_ERROR_REASONS", "run_block", "node_block", "node_live_block", "run_state_block",
           "topology_block"]
_STATUS_VALUES = (*STATUSES, "unknown")
# The severity each node alert code has at HEAD (G2.md section 5): always served, 0 when not raised.
_ALERT_SEVERITY = {code: "critical" if code == "runtime_last_error" else "warn" for code in NODE_ALERT_CODES}


def run_block(c: "SoakCollector") -> Block:
    s, b = c.setup, Block()
    b.add("soak_run_info", (s.profile, s.scenario), 1)
    for key, value in sorted(s.thresholds.items()):
        b.add("soak_gate_threshold", (key,), value)
    return b


def node_block(c: "SoakCollector", src: "Source", view: NodeView | None) -> Block:
    """Samples that change only with the node's readings (kept by the collector until then)."""
    b = Block()
    node_id = src.node_id or (view.latest.node_id if view and view.latest else None) or ""
    b.add("soak_node_info", (src.node, src.role, node_id), 1)
    if view is not None:
        _report_metrics(b, view, src.node)
        _arrival_metrics(b, view, src, c.started_at)
        _consensus_metrics(b, view, src.node)
        _distfs_metrics(b, view, src.node)
        _g2_metrics(b, view, src.node)
    return b


def node_live_block(c: "SoakCollector", src: "Source", view: NodeView | None, now: float) -> Block:
    """Samples read at each scrape: the report gap (wall clock), process stats, disk."""
    b = Block()
    if view is not None and src.report_dir:
        since = _since(view, src, c.started_at)
        b.add("soak_report_gap_seconds", (src.node,),
              chaoswin.report_gap_seconds(since, src.node, c.windows_of(src.node), now))
    _process_metrics(b, c, src)
    return b


def run_state_block(c: "SoakCollector") -> Block:
    """What only the run state says (kept by the collector until it changes): faults in
    effect, chaos event counts."""
    s, b = c.setup, Block()
    active = chaoswin.active(s.chaos_windows)
    for src in s.sources:
        node = src.node
        for action in CHAOS_ACTIONS:
            b.add("soak_chaos_active", (node, action), float((node, action) in active))
    for node, action, phase, count in s.chaos_events:
        b.add("soak_chaos_events_total", (node, action, phase), count)
    return b


def topology_block(c: "SoakCollector", now: float) -> Block:
    b = Block()
    _chaos_metrics(b, c, now)
    b.add("soak_consensus_hash_mismatches_total", (), c.hashes.mismatches)
    for kind, book in c.hashes.kinds.items():
        b.add("soak_consensus_hash_divergences_total", (kind,), book.mismatches)
        b.add("soak_consensus_hash_heights_total", (kind,), book.keys)
    return b


def _chaos_metrics(b: Block, c: "SoakCollector", now: float) -> None:
    """Exemptions, excused regressions, outside lag and the stall clock: see ``exporter.chaoswin``."""
    s = c.setup
    exempt = chaoswin.exempt_until(s.chaos_windows)
    for (node, action), until in sorted(exempt.items()):
        b.add("soak_chaos_exempt_until_timestamp_seconds", (node, action), until)
    critical = {src.node for src in s.sources if src.critical}
    held = [until for (node, action), until in exempt.items() if node in critical and action in STOPS_COMMITS]
    if held:
        b.add("soak_chaos_critical_exempt_until_timestamp_seconds", (), max(held))
    relaunch = {node for (node, action), until in exempt.items() if action in RELAUNCH and until > now}
    for src in s.sources:
        view = c.views.get(src.node)
        if view is not None:
            b.add("soak_consensus_height_regressions_excused_total", (src.node,),
                  c.excuser.observe(src.node, view.regressions, src.node in relaunch))
    for node, blocks in sorted(c.behind().items()):
        b.add("soak_consensus_height_behind_topology", (node,), blocks)
    progress = [v.last_progress_s for v in c.views.values() if v.last_progress_s is not None]
    starts = [src.started_at for src in s.sources if src.started_at is not None]
    stall = chaoswin.stall_seconds(max(progress, default=None), min(starts, default=None), s.chaos_windows,
                                   critical, now)
    b.add("soak_consensus_stall_seconds", (), stall)


def behind(c: "SoakCollector") -> dict[str, int]:
    return topolag.behind({n: v.trail for n, v in c.views.items()})


def _process_metrics(b: Block, c: "SoakCollector", src: "Source") -> None:
    n = (src.node,)
    pid = read_pid(src.pid) if src.pid else None
    st = proc_stats(pid)
    b.add("soak_process_up", n, float(st.up))
    if st.up:
        b.add("soak_process_resident_memory_bytes", n, st.rss)
        b.add("soak_process_cpu_seconds_total", n, st.cpu_s)
        b.add("soak_process_open_fds", n, st.fds)
        b.add("soak_process_threads", n, st.threads)
        b.add("soak_process_start_time_seconds", n, st.start_time)
    restarts = c.restarts(src, (pid, st.start_ticks) if st.up else None)
    for cause in RESTART_CAUSES:
        b.add("soak_process_restarts_total", (src.node, cause), restarts.get(cause, 0))
    if src.work_dir:
        size = c.disk.size(src.work_dir)
        if size is not None:
            b.add("soak_node_disk_bytes", n, size.bytes)
            b.add("soak_node_disk_entries", n, size.entries)


def _report_metrics(b: Block, v: NodeView, node: str) -> None:
    n = (node,)
    b.add("soak_reports_total", n, v.reports_total)
    for reason in REPORT_ERROR_REASONS:
        b.add("soak_report_errors_total", (node, reason), v.errors.get(reason, 0))
    r = v.latest_report
    if r is None:
        return
    b.add("soak_report_last_observed_timestamp_seconds", n, r.observed_at_ms / 1000)
    b.add("soak_report_last_epoch_index", n, r.epoch_index)
    b.add("soak_report_missing_fields", n, len(r.missing))


def _since(v: NodeView, src: "Source", exporter_started_at: float) -> float:
    # Before its first report a node counts from its start (run state), else from ours:
    # a node that never reports ages like one that stopped reporting.
    started = src.started_at
    return v.last_arrival_s if v.last_arrival_s is not None else (
        started if started is not None else exporter_started_at)


def _arrival_metrics(b: Block, v: NodeView, src: "Source", exporter_started_at: float) -> None:
    """Report timing on this machine's clock, and what the node's own clock says against it
    (the gap since the last arrival is a wall-clock gauge: ``node_live_block``)."""
    n = (src.node,)
    b.add("soak_report_clock_steps_total", n, v.clock_steps)
    b.add("soak_report_clock_offset_seconds", n, v.clock_offset_s)
    b.add("soak_report_numbering_restarts_total", n, v.sequence_restarts)
    b.add("soak_exporter_ingest_failures_total", n, v.ingest_failures)
    if src.report_dir:
        b.add("soak_report_last_arrival_timestamp_seconds", n, _since(v, src, exporter_started_at))


def _consensus_metrics(b: Block, v: NodeView, node: str) -> None:
    n = (node,)
    b.add("soak_consensus_height_regressions_total", n, v.regressions)
    r = v.latest
    if r is None:
        return
    b.add("soak_consensus_committed_height", n, r.committed_height)
    b.add("soak_consensus_network_committed_height", n, r.network_committed_height)
    b.add("soak_consensus_last_execution_height", n, r.last_execution_height)
    b.add("soak_consensus_last_progress_timestamp_seconds", n, v.last_progress_s)
    for p in v.peers:
        b.add("soak_consensus_peer_height", (node, p.node_id), p.height)
    current = r.last_status or "unknown"
    for status in _STATUS_VALUES:
        b.add("soak_consensus_status", (node, status), float(current == status))
    if r.invariant_ok is not None:
        b.add("soak_reward_invariant_ok", n, float(r.invariant_ok))
    if r.invariant_violations is not None:
        b.add("soak_reward_invariant_violations", n, r.invariant_violations)


def _distfs_metrics(b: Block, v: NodeView, node: str) -> None:
    d = v.distfs
    if not d.seen:
        return
    b.add("soak_distfs_checks_total", (node, "passed"), d.passed.value)
    b.add("soak_distfs_checks_total", (node, "failed"), d.failed.value)
    by_reason = dict.fromkeys(DISTFS_REASONS, 0)
    for reason, counter in d.reasons.items():  # closed label set: unknown names count as UNKNOWN
        key = reason if reason in by_reason else "UNKNOWN"
        by_reason[key] += counter.value
    for reason, count in by_reason.items():
        b.add("soak_distfs_check_failures_total", (node, reason), count)


def _g2_metrics(b: Block, v: NodeView, node: str) -> None:
    """G2 status fields (HEAD schema): gauges from the latest good document, counters banked."""
    if not v.head_schema:
        return
    n = (node,)
    b.add("soak_node_status_head_schema", n, 1)
    _g2_counters(b, v, node)
    g = v.g2
    if g is None:
        return
    raised: dict[tuple[str, str], int] = dict.fromkeys(((sev, code) for code, sev in _ALERT_SEVERITY.items()), 0)
    for pair in g.alerts:
        raised[pair] = raised.get(pair, 0) + 1
    for (severity, code), count in raised.items():
        b.add("soak_node_alerts", (node, severity, code), count)
    for state, count in zip(PEER_STATES, g.peers):
        b.add("soak_replication_peers", (node, state), count)
    b.add("soak_consensus_network_height_lag", n, g.network_height_lag)
    if g.last_commit_age_ms is not None:
        b.add("soak_consensus_last_commit_age_seconds", n, g.last_commit_age_ms / 1000)
    for stat, ms in zip(FINALITY_STATS, g.finality_ms):
        if ms is not None:
            b.add("soak_consensus_finality_latency_seconds", (node, stat), ms / 1000)
    b.add("soak_consensus_pending_actions", n, g.pending_actions)
    b.add("soak_consensus_pending_actions_capacity", n, g.pending_capacity)
    for d, size in zip(STORAGE_DIRS, g.storage_bytes):
        b.add("soak_storage_bytes", (node, d), size)
    b.add("soak_storage_orphan_blobs", n, g.orphan_blobs)
    for result in GC_RESULTS:
        b.add("soak_storage_last_gc_result", (node, result), float(g.gc_result == result))
    b.add("soak_replication_recent_errors", n, g.replication_errors)


_TRAFFIC = (("udp", "soak_gossip_udp_datagrams_total", "soak_gossip_udp_payload_bytes_total"),
            ("libp2p", "soak_replication_libp2p_messages_total", "soak_replication_libp2p_payload_bytes_total"))


def _g2_counters(b: Block, v: NodeView, node: str) -> None:
    """Banked counters (``NodeView.g2_counters``), served once seen, also while a document is bad."""
    c = v.g2_counters
    for i, kind in enumerate(TIMING_REJECTIONS):
        if f"timing/{i}" in c:
            b.add("soak_consensus_inbound_timing_rejections_total", (node, kind), c[f"timing/{i}"].value)
    if "missed_slots" in c:
        b.add("soak_consensus_missed_slots_total", (node,), c["missed_slots"].value)
    for key, messages, payload in _TRAFFIC:
        for j, direction in enumerate(DIRECTIONS):
            if f"{key}/{2 * j}" in c:
                b.add(messages, (node, direction), c[f"{key}/{2 * j}"].value)
                b.add(payload, (node, direction), c[f"{key}/{2 * j + 1}"].value)
