"""The metric catalog: every series the exporter serves, once (name, type, help, labels, unit).

The exporter emits only these entries, in this order, with these help texts (its families are
built from here); ``docs/metrics.md`` is generated from here (``python3 -m soakcore.catalog``,
``--check`` exits 1 when the checked-in file is stale); tests prove that the exposition, the
alert rules, the dashboards and the checker's queries use no other ``soak_*`` name, and that
the design contract's table (``tests/fixtures/DESIGN.md``) is covered. Names are fixed once
published: add, never rename.

Every series also carries ``run_id`` and ``topology`` (``BASE_LABELS``), before the labels
listed here. Label values are bounded: ``values`` names the closed sets; ``node`` is the
runner's node name, ``peer`` a node id from the reports, ``gate`` a threshold key.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from soakcore.actions import CHAOS_ACTIONS
from soakcore.distfs import DISTFS_REASONS
from soakcore.runstate import CHAOS_PHASES, RESTART_CAUSES

BASE_LABELS: tuple[str, ...] = ("run_id", "topology")
# Closed label value sets (the exporter emits exactly these, in this order).
# ``status``: a status endpoint poll that failed or answered a document we cannot read.
REPORT_ERROR_REASONS: tuple[str, ...] = ("partial", "invalid_json", "schema", "too_large", "io", "duplicate",
                                         "status")
CONSENSUS_STATUSES: tuple[str, ...] = ("Pending", "Committed", "Rejected", "unknown")
DISTFS_RESULTS: tuple[str, ...] = ("passed", "failed")
# Hash consistency per height: the block hash, and the execution block hash and state root of
# the executed height (a state root is compared only between reports of one executed block).
HASH_KINDS: tuple[str, ...] = ("block_hash", "execution_block_hash", "execution_state_root")
# G2 status document (``/v1/chain/status`` at HEAD, tests/fixtures/agent_world/G2.md section 3).
# The node's own alert codes (G2.md section 5); a code the node adds later counts as ``other``.
NODE_ALERT_CODES: tuple[str, ...] = ("runtime_last_error", "consensus_network_lag", "replication_peer_health_degraded",
                                     "replication_no_connected_peers", "replication_recent_errors",
                                     "storage_degraded", "reward_runtime_degraded", "other")
NODE_ALERT_SEVERITIES: tuple[str, ...] = ("critical", "warn", "other")
# observability.*_peer_count
PEER_STATES: tuple[str, ...] = ("connected", "active", "candidate", "suspect", "blocked", "with_issues")
FINALITY_STATS: tuple[str, ...] = ("p50", "p95", "max")
TIMING_REJECTIONS: tuple[str, ...] = ("proposal_future_slot", "proposal_stale_slot", "attestation_future_slot",
                                      "attestation_stale_slot", "attestation_epoch_mismatch")
STORAGE_DIRS: tuple[str, ...] = ("runtime_root", "execution_world_dir", "execution_records_dir",
                                 "execution_store_root", "reward_runtime_report_dir", "replication_root")
GC_RESULTS: tuple[str, ...] = ("not_available", "unknown", "success", "failed")
DIRECTIONS: tuple[str, ...] = ("inbound", "outbound")
DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


@dataclass(frozen=True)
class MetricDef:
    name: str                    # the sample name (a counter's ends in _total)
    type: str                    # "gauge" or "counter"
    help: str
    labels: tuple[str, ...] = ()  # after BASE_LABELS
    unit: str = ""               # "seconds", "bytes", "" (a count or a 0/1 flag)
    source: str = ""             # where the value comes from (docs)

    @property
    def all_labels(self) -> tuple[str, ...]:
        return (*BASE_LABELS, *self.labels)


def _g(name: str, help_: str, labels: tuple[str, ...] = ("node",), unit: str = "", source: str = "") -> MetricDef:
    return MetricDef(name, "gauge", help_, labels, unit, source)


def _c(name: str, help_: str, labels: tuple[str, ...] = ("node",), unit: str = "", source: str = "") -> MetricDef:
    assert name.endswith("_total"), name
    return MetricDef(name, "counter", help_, labels, unit, source)


RUN, REPORTS, STATUS, PROC, DISK, CHAOS, EXPORTER, G2 = (
    "run state", "report files", "report files and status polls", "/proc of the node's pid",
    "the node's working directory", "run state (fault windows)", "the exporter itself",
    "G2 status polls (HEAD schema)")
# A G2 counter that the node resets when it restarts: banked by the exporter (never decreases).
_BANKED = " Run-cumulative: banked across the node's restarts."

# In exposition order.
CATALOG: tuple[MetricDef, ...] = (
    _g("soak_run_info", "Run metadata.", ("profile", "scenario"), source=RUN),
    _g("soak_gate_threshold", "Active threshold of the profile (and overrides).", ("gate",), source=RUN),
    _g("soak_node_info", "Node identity.", ("node", "role", "node_id"), source=RUN + ", reports"),
    _c("soak_reports_total", "Reports ingested.", source=REPORTS),
    _c("soak_report_errors_total", "Report files that stayed invalid.", ("node", "reason"), source=REPORTS),
    _g("soak_report_last_observed_timestamp_seconds", "observed_at of the newest report.", unit="seconds",
       source=REPORTS),
    _g("soak_report_last_epoch_index", "Epoch index of the newest report.", source=REPORTS),
    _g("soak_report_missing_fields", "Fields the newest report lacks.", source=REPORTS),
    _c("soak_report_clock_steps_total",
       "Jumps of more than 60 s in the node's clock offset (its observed_at against the arrival).", source=STATUS),
    _g("soak_report_clock_offset_seconds",
       "observed_at of the node's last reading minus its arrival (file mtime or poll time) here.", unit="seconds",
       source=STATUS),
    _c("soak_report_numbering_restarts_total",
       "Times the node's report numbering started over (a rewritten epoch file with new content).", source=REPORTS),
    _c("soak_exporter_ingest_failures_total",
       "Polls of the node's report folder that failed as a whole (its last readings are kept).", source=REPORTS),
    _g("soak_report_last_arrival_timestamp_seconds",
       "Arrival here (file mtime) of the node's most recent report; its start before the first.", unit="seconds",
       source=REPORTS),
    _g("soak_report_gap_seconds",
       "Seconds since that arrival, not counting the node's own down faults (window + grace).", unit="seconds",
       source=REPORTS + ", wall clock at each scrape"),
    _c("soak_consensus_height_regressions_total", "Committed height went down.", source=REPORTS),
    _g("soak_consensus_committed_height", "Committed height.", source=STATUS),
    _g("soak_consensus_network_committed_height", "Network committed height.", source=STATUS),
    _g("soak_consensus_last_execution_height", "Last execution height.", source=STATUS),
    _g("soak_consensus_last_progress_timestamp_seconds", "When committed height last rose.", unit="seconds",
       source=STATUS),
    _g("soak_consensus_peer_height", "Peer heads.", ("node", "peer"), source=STATUS),
    _g("soak_consensus_status", "1 for the current status.", ("node", "status"), source=STATUS),
    _g("soak_reward_invariant_ok", "Reward-asset invariant holds.", source=STATUS),
    _g("soak_reward_invariant_violations", "violation_count.", source=STATUS),
    _c("soak_distfs_checks_total", "DistFS checks, run-cumulative.", ("node", "result"), source=REPORTS),
    _c("soak_distfs_check_failures_total", "DistFS failures by reason.", ("node", "reason"), source=REPORTS),
    _g("soak_process_up", "1 while the node process runs.", source=PROC),
    _g("soak_process_resident_memory_bytes", "Resident set size.", unit="bytes", source=PROC),
    _c("soak_process_cpu_seconds_total", "User+system CPU of the process.", unit="seconds", source=PROC),
    _g("soak_process_open_fds", "Open file descriptors.", source=PROC),
    _g("soak_process_threads", "Threads.", source=PROC),
    _g("soak_process_start_time_seconds", "Process start (unix s).", unit="seconds", source=PROC),
    _c("soak_process_restarts_total", "Restarts by cause.", ("node", "cause"),
       source=RUN + "; without one, a new pid or start time"),
    _g("soak_node_disk_bytes", "Size of the node's directory.", unit="bytes", source=DISK),
    _g("soak_node_disk_entries", "Files and folders counted in the last walk of the node's directory (no cap).",
       source=DISK),
    _g("soak_chaos_active", "1 while an injected fault is in effect.", ("node", "action"), source=CHAOS),
    _g("soak_chaos_exempt_until_timestamp_seconds",
       "Gates exempt the node from this action's effects until then (window end + grace; +Inf while in effect).",
       ("node", "action"), unit="seconds", source=CHAOS),
    _g("soak_chaos_critical_exempt_until_timestamp_seconds",
       "Consensus gates of every node are exempt until then: a fault that can stop commits held a "
       "consensus-critical node (window end + grace; +Inf while in effect).", (), unit="seconds", source=CHAOS),
    _c("soak_consensus_height_regressions_excused_total",
       "Height drops first seen while the node was exempt from a restart or kill.", source=REPORTS + ", " + CHAOS),
    _g("soak_consensus_height_behind_topology",
       "Blocks behind the topology's highest node at the moment of this node's newest reading.", source=STATUS),
    _g("soak_consensus_stall_seconds",
       "Seconds without committed-height progress in the topology, faults on critical nodes not counted.", (),
       unit="seconds", source=STATUS + ", " + CHAOS + ", wall clock at each scrape"),
    _c("soak_chaos_events_total", "Chaos events by outcome.", ("node", "action", "phase"), source=RUN),
    _c("soak_consensus_hash_mismatches_total", "Heights with two different block hashes.", (), source=STATUS),
    _c("soak_consensus_hash_divergences_total",
       "Heights seen with two different values of this kind across the nodes' readings (an execution state root: "
       "two roots for one executed block).", ("kind",), source=STATUS),
    _c("soak_consensus_hash_heights_total", "Heights seen with a value of this kind (what the divergence count "
       "compared).", ("kind",), source=STATUS),
    _g("soak_node_status_head_schema",
       "1: the node's status endpoint serves the G2 HEAD schema, so the gates on its own alerts, finality and "
       "replication apply.", source=G2),
    _g("soak_node_alerts", "Alerts the node raises itself (observability.alerts), by severity and code.",
       ("node", "severity", "code"), source=G2),
    _g("soak_replication_peers", "Peers by state (observability.*_peer_count; connected: replication links up).",
       ("node", "state"), source=G2),
    _g("soak_consensus_network_height_lag", "The node's own network height lag (observability.network_height_lag).",
       source=G2),
    _g("soak_consensus_last_commit_age_seconds", "Since the node's last commit, by its own clock "
       "(consensus.last_commit_age_ms).", unit="seconds", source=G2),
    _g("soak_consensus_finality_latency_seconds", "Recent finality latency (consensus.recent_finality_latency).",
       ("node", "stat"), unit="seconds", source=G2),
    _g("soak_consensus_pending_actions", "Consensus actions queued (pending_consensus_actions.queued_action_count).",
       source=G2),
    _g("soak_consensus_pending_actions_capacity", "Capacity of that queue (pending_consensus_actions.max_capacity).",
       source=G2),
    _c("soak_consensus_inbound_timing_rejections_total", "Proposals and attestations refused for their slot or "
       "epoch (consensus.inbound_timing_rejections)." + _BANKED, ("node", "kind"), source=G2),
    _c("soak_consensus_missed_slots_total", "Slots the node missed (consensus.missed_slot_count)." + _BANKED,
       source=G2),
    _g("soak_storage_bytes", "Bytes per storage directory (storage.bytes_by_dir).", ("node", "dir"), unit="bytes",
       source=G2),
    _g("soak_storage_orphan_blobs", "Blobs no reference holds (storage.orphan_blob_count).", source=G2),
    _g("soak_storage_last_gc_result", "1 for the result of the store's last GC (storage.last_gc_result).",
       ("node", "result"), source=G2),
    _g("soak_replication_recent_errors", "Recent replication errors (observability.recent_replication_error_count).",
       source=G2),
    _c("soak_gossip_udp_datagrams_total", "UDP gossip datagrams (traffic.udp_gossip.totals)." + _BANKED,
       ("node", "direction"), source=G2),
    _c("soak_gossip_udp_payload_bytes_total", "UDP gossip payload bytes (traffic.udp_gossip.totals)." + _BANKED,
       ("node", "direction"), unit="bytes", source=G2),
    _c("soak_replication_libp2p_messages_total", "libp2p replication messages (traffic.libp2p_replication.totals)."
       + _BANKED, ("node", "direction"), source=G2),
    _c("soak_replication_libp2p_payload_bytes_total", "libp2p replication payload bytes "
       "(traffic.libp2p_replication.totals)." + _BANKED, ("node", "direction"), unit="bytes", source=G2),
    _g("soak_exporter_scrape_duration_seconds", "Time the last scrape took.", (), unit="seconds", source=EXPORTER),
    _g("soak_exporter_scrape_error", "1 if the last scrape or run-state read failed.", (), source=EXPORTER),
)
BY_NAME: Mapping[str, MetricDef] = MappingProxyType({m.name: m for m in CATALOG})
NAMES: frozenset[str] = frozenset(BY_NAME)
# The closed label value sets, per (metric, label).
LABEL_VALUES: Mapping[tuple[str, str], tuple[str, ...]] = MappingProxyType({
    ("soak_report_errors_total", "reason"): REPORT_ERROR_REASONS,
    ("soak_consensus_status", "status"): CONSENSUS_STATUSES,
    ("soak_distfs_checks_total", "result"): DISTFS_RESULTS,
    ("soak_distfs_check_failures_total", "reason"): DISTFS_REASONS,
    ("soak_process_restarts_total", "cause"): RESTART_CAUSES,
    ("soak_chaos_active", "action"): CHAOS_ACTIONS,
    ("soak_chaos_exempt_until_timestamp_seconds", "action"): CHAOS_ACTIONS,
    ("soak_chaos_events_total", "action"): CHAOS_ACTIONS,
    ("soak_chaos_events_total", "phase"): CHAOS_PHASES,
    ("soak_consensus_hash_divergences_total", "kind"): HASH_KINDS,
    ("soak_consensus_hash_heights_total", "kind"): HASH_KINDS,
    ("soak_node_alerts", "severity"): NODE_ALERT_SEVERITIES,
    ("soak_node_alerts", "code"): NODE_ALERT_CODES,
    ("soak_replication_peers", "state"): PEER_STATES,
    ("soak_consensus_finality_latency_seconds", "stat"): FINALITY_STATS,
    ("soak_consensus_inbound_timing_rejections_total", "kind"): TIMING_REJECTIONS,
    ("soak_storage_bytes", "dir"): STORAGE_DIRS,
    ("soak_storage_last_gc_result", "result"): GC_RESULTS,
    ("soak_gossip_udp_datagrams_total", "direction"): DIRECTIONS,
    ("soak_gossip_udp_payload_bytes_total", "direction"): DIRECTIONS,
    ("soak_replication_libp2p_messages_total", "direction"): DIRECTIONS,
    ("soak_replication_libp2p_payload_bytes_total", "direction"): DIRECTIONS,
})


def markdown() -> str:
    """The catalog as ``docs/metrics.md``."""
    lines = ["# Metrics served by soak-exporter", "",
             "GENERATED by `python3 -m soakcore.catalog` from `soakcore/catalog.py`. Do not edit.", "",
             f"Every series carries {', '.join(f'`{b}`' for b in BASE_LABELS)} first; the labels below follow. "
             "Names are fixed once published (add, never rename). Counters never decrease within a run, "
             "also across exporter restarts.", "",
             "| metric | type | labels | unit | help | from |", "|---|---|---|---|---|---|"]
    for m in CATALOG:
        labels = ", ".join(f"`{label}`" for label in m.labels) or "-"
        lines.append(f"| `{m.name}` | {m.type} | {labels} | {m.unit or '-'} | {m.help.replace('|', '/')} | "
                     f"{m.source or '-'} |")
    lines += ["", "## Closed label value sets", "", "| metric | label | values |", "|---|---|---|"]
    for (metric, label), values in LABEL_VALUES.items():
        lines.append(f"| `{metric}` | `{label}` | {', '.join(f'`{v}`' for v in values)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m soakcore.catalog", description="Write docs/metrics.md.")
    p.add_argument("--out", type=Path, default=DOCS)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when the file is stale")
    a = p.parse_args(argv)
    text = markdown()
    if a.check:
        current = a.out.read_text() if a.out.is_file() else None
        if current != text:
            print(f"stale: {a.out} (run python3 -m soakcore.catalog)", file=sys.stderr)
            return 1
        return 0
    a.out.write_text(text)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
