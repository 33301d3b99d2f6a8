"""Each gate defined once. Everything else is derived from these definitions:
the Prometheus alert and recording rules and RUNBOOK.md (``alerts/generate.py``), the
checker's window queries and the dashboards' threshold lines.

Contract used by the checker and dashboards (keep these fields stable):
- ``value``: PromQL instant vector, one series per judged thing, labels ``run_id``,
  ``topology`` and (for node-scoped gates) ``node``. Chaos exemptions are already inside
  it. A gate FAILS when value > threshold. Never relies on recording rules, so it also
  works on backfilled data.
- ``threshold_key``: key of ``alerts.profiles.Profile.thresholds``; None means the
  threshold is 0 (any positive value fails).
- ``data``: PromQL instant vector (labels run_id, topology) that is non-empty exactly when
  there is enough data to judge; empty over the whole window means ``insufficient_data``.
- ``breach``: value compared with the ``soak_gate_threshold`` series (used by alerts).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["critical", "warning"]
Scope = Literal["node", "topology", "run"]
JOIN = "on(run_id, topology)"
SCOPE_LABELS = {"node": "run_id, topology, node", "topology": "run_id, topology", "run": "run_id, topology"}
# Actions that take a node (or its traffic) away on purpose.
DOWN = ("restart", "kill", "pause", "disconnect")
WINDOW = "5m"      # window of the rate-like gates (lag p95, bursts, regressions, crashes)
SLOPE_WINDOW = "10m"  # window of the growth-slope gates (memory, fds, disk)
# Window of the regression counter: short so that a restart's grace can outlast it, yet
# longer than the checker's coarsest subquery step (an 8 h run judged in 400 steps = 72 s).
REGRESSION_WINDOW = "2m"


def threshold(key: str) -> str:
    """The active threshold for ``key`` as a PromQL vector (labels run_id, topology)."""
    return f'max by (run_id, topology) (soak_gate_threshold{{gate="{key}"}})'


def outside_chaos(expr: str, actions: tuple[str, ...], grace: str, scope: Scope) -> str:
    """``expr`` minus the series whose node (or topology) had one of ``actions`` in effect
    at any time during the last ``grace``: the fault window plus its grace is exempt."""
    if not actions:
        return expr
    by = SCOPE_LABELS[scope]
    active = f'max by ({by}) (max_over_time(soak_chaos_active{{action=~"{"|".join(actions)}"}}[{grace}]))'
    return f"({expr}) unless on({by}) ({active} > 0)"


def after_warmup(expr: str) -> str:
    """Only processes running longer than ``warmup_secs`` (a restart starts warm-up again)."""
    age = f"(time() - soak_process_start_time_seconds) > {JOIN} group_left() {threshold('warmup_secs')}"
    return f"({expr}) and on(run_id, topology, node) ({age})"


def warming_up() -> str:
    """Runs (labels run_id, topology) whose oldest process is still within ``warmup_secs``."""
    oldest = "min by (run_id, topology) (soak_process_start_time_seconds)"
    return f"(time() - {oldest}) <= {JOIN} group_left() {threshold('warmup_secs')}"


@dataclass(frozen=True)
class Gate:
    name: str                 # snake_case id: summary.json / junit key
    alert: str                # Soak + CamelCase alert name
    severity: Severity        # critical fails the run; warning is reported only
    measure: str              # PromQL of the raw figure, before chaos exemption
    data: str                 # PromQL: non-empty when there is enough data to judge
    threshold_key: str | None
    for_: str                 # how long the breach must last before the alert fires
    exempt: tuple[str, ...]   # chaos actions whose windows (plus grace) exempt the gate
    grace: str                # exemption lasts this long after the fault ends
    summary: str
    description: str
    runbook: str              # what to look at first when it fires
    scope: Scope = "node"
    unit: str = ""
    # True when ``data`` only exists after warm-up: the insufficient-data alert waits for it.
    warmup: bool = False

    @property
    def value(self) -> str:
        return outside_chaos(self.measure, self.exempt, self.grace, self.scope)

    @property
    def breach(self) -> str:
        if self.threshold_key is None:
            return f"({self.value}) > 0"
        return f"({self.value}) > {JOIN} group_left() {threshold(self.threshold_key)}"

    @property
    def anchor(self) -> str:
        return self.alert.lower()


def _lag_outside_chaos() -> str:
    # Samples taken during a fault window (plus grace) are left out of the p95 itself, so a
    # long pause does not poison the next five minutes.
    lag = "soak_consensus_network_committed_height - soak_consensus_committed_height"
    return f"quantile_over_time(0.95, ({outside_chaos(lag, DOWN, '30s', 'node')})[{WINDOW}:10s])"


def _stall_clock() -> str:
    # The stall clock restarts when a fault ends, so time inside fault windows never counts
    # (the old script added all down-time to the threshold instead). Looking back one hour
    # is enough while max_stall_secs stays below it: an older fault cannot hide a stall.
    fault = f'timestamp(soak_chaos_active{{action=~"{"|".join(DOWN)}"}} > 0)'
    progress = "max by (run_id, topology) (soak_consensus_last_progress_timestamp_seconds)"
    fault_end = f"max by (run_id, topology) (max_over_time(({fault})[1h:5s]))"
    # Distinct labels so that `or` keeps both and max picks the later of the two.
    since = (f'label_replace({progress}, "since", "progress", "", "") or '
             f'label_replace({fault_end}, "since", "fault", "", "")')
    return f"time() - max by (run_id, topology) ({since})"


_NODE_CHECKS = 'sum by (run_id, topology, node) (soak_distfs_checks_total)'

GATES: tuple[Gate, ...] = (
    Gate("committed_height_regressed", "SoakCommittedHeightRegressed", "critical",
         f"increase(soak_consensus_height_regressions_total[{REGRESSION_WINDOW}])",
         # Grace longer than the window: a drop counted during a restart never fires later.
         "soak_consensus_committed_height", None, "0s", ("restart", "kill"), "180s",
         "Committed height went down on {{ $labels.node }}",
         "{{ $labels.node }} ({{ $labels.topology }}) reported a lower committed height than before, outside any restart.",
         "A committed block was un-committed: check the node's persisted state and its stderr around the drop."),
    Gate("consensus_stalled", "SoakConsensusStalled", "critical",
         _stall_clock(),
         "soak_consensus_last_progress_timestamp_seconds", "max_stall_secs", "15s", DOWN, "60s",
         "No committed-height progress in {{ $labels.topology }}",
         "No node of {{ $labels.topology }} committed a new block for {{ $value | humanizeDuration }} outside fault windows.",
         "Check the sequencer first (process up? paused? stderr), then gossip connectivity between nodes.",
         scope="topology", unit="s"),
    Gate("consensus_lag_high", "SoakConsensusLagHigh", "critical", _lag_outside_chaos(),
         "soak_consensus_network_committed_height", "max_lag_p95", "30s", DOWN, "30s",
         "Consensus lag p95 high on {{ $labels.node }}",
         "p95 of network-committed minus committed height on {{ $labels.node }} over 5m is {{ $value | printf \"%.1f\" }} blocks.",
         "A follower is not keeping up: look for packet loss, CPU starvation or a slow executor on that node.",
         unit="blocks"),
    Gate("consensus_fork_detected", "SoakConsensusForkDetected", "critical",
         "max by (run_id, topology) (soak_consensus_hash_mismatches_total)",
         "soak_consensus_committed_height", None, "0s", (), "0s",
         "Fork: two block hashes at one height in {{ $labels.topology }}",
         "{{ $value }} heights were seen with two different block hashes across nodes. Never exempt.",
         "Compare last_block_hash and peer_heads in the nodes' reports at the first mismatched height.",
         scope="topology"),
    Gate("distfs_failure_ratio_high", "SoakDistfsFailureRatioHigh", "critical",
         f'(sum by (run_id, topology, node) (soak_distfs_checks_total{{result="failed"}}) / {_NODE_CHECKS})'
         f" and on(run_id, topology, node) ({_NODE_CHECKS} >= {JOIN} group_left() {threshold('min_distfs_checks')})",
         f"{_NODE_CHECKS} >= {JOIN} group_left() {threshold('min_distfs_checks')}",
         "max_distfs_failure_ratio", "30s", (), "0s",
         "DistFS challenge failure ratio high on {{ $labels.node }}",
         "Run-cumulative DistFS failed/total checks on {{ $labels.node }} is {{ $value | humanizePercentage }}.",
         "See soak_distfs_check_failures_total by reason; MISSING_SAMPLE points at the blob store, TIMEOUT at load.",
         unit="ratio"),
    Gate("distfs_failure_reason_burst", "SoakDistfsFailureReasonBurst", "warning",
         f"max by (run_id, topology, node) (increase(soak_distfs_check_failures_total[{WINDOW}]))"
         f" / on(run_id, topology, node) sum by (run_id, topology, node) (increase(soak_distfs_checks_total[{WINDOW}]))",
         f"sum by (run_id, topology, node) (increase(soak_distfs_checks_total[{WINDOW}])) > 0",
         # Grace outlasts the 5m window, so pressure-induced failures never fire afterwards.
         "max_distfs_failure_ratio", "30s", ("challenge_pressure",), "330s",
         "One DistFS failure reason dominates on {{ $labels.node }}",
         "In the last 5m a single failure reason made up {{ $value | humanizePercentage }} of all checks.",
         "A burst of one reason is usually one broken thing (a disk, a clock, a key): look at that reason first.",
         unit="ratio"),
    Gate("reward_invariant_violated", "SoakRewardInvariantViolated", "critical",
         "1 - soak_reward_invariant_ok", "soak_reward_invariant_ok", None, "0s", (), "0s",
         "Reward-asset invariant violated on {{ $labels.node }}",
         "reward_asset_invariant_status.ok is false on {{ $labels.node }}. Never exempt.",
         "Read reward_asset_invariant_report.violations in the node's newest report."),
    Gate("process_crashed", "SoakProcessCrashed", "critical",
         f'increase(soak_process_restarts_total{{cause="crash"}}[{WINDOW}])',
         "soak_process_up", None, "0s", (), "0s",
         "{{ $labels.node }} exited without being told to",
         "{{ $labels.node }} exited outside chaos (a crash) in the last 5m.",
         "Read the tail of the node's stderr.log in the run directory; the runner noted the exit code."),
    Gate("process_down", "SoakProcessDown", "critical", "1 - soak_process_up", "soak_process_up", None, "15s",
         ("restart", "kill"), "30s",
         "{{ $labels.node }} is not running",
         "The process of {{ $labels.node }} has been down for more than 15s outside a restart.",
         "Was it stopped by the crash policy? Check run_state.json and the node's stderr.log."),
    Gate("memory_growth_high", "SoakMemoryGrowthHigh", "critical",
         after_warmup(f"deriv(soak_process_resident_memory_bytes[{SLOPE_WINDOW}]) * 3600"),
         after_warmup("soak_process_resident_memory_bytes"), "max_rss_growth_bytes_per_hour", "30s", DOWN, "60s",
         "RSS of {{ $labels.node }} grows too fast",
         "RSS slope of {{ $labels.node }} after warm-up is {{ $value | humanize1024 }}B/h.",
         "A leak or an unbounded queue: compare rss.csv over time; take a heap profile of the node.",
         unit="bytes/h", warmup=True),
    Gate("fd_growth_high", "SoakFdGrowthHigh", "critical",
         after_warmup(f"deriv(soak_process_open_fds[{SLOPE_WINDOW}]) * 3600"),
         after_warmup("soak_process_open_fds"), "max_fd_growth_per_hour", "30s", DOWN, "60s",
         "Open fds of {{ $labels.node }} keep growing",
         "Open file descriptors of {{ $labels.node }} grow by {{ $value | printf \"%.0f\" }} per hour after warm-up.",
         "List /proc/<pid>/fd of the node: sockets or files that are never closed.", unit="fds/h", warmup=True),
    Gate("disk_growth_high", "SoakDiskGrowthHigh", "critical",
         after_warmup(f"deriv(soak_node_disk_bytes[{SLOPE_WINDOW}]) * 3600"),
         after_warmup("soak_node_disk_bytes"), "max_disk_growth_bytes_per_hour", "30s", ("restart", "kill"), "60s",
         "Disk use of {{ $labels.node }} grows too fast",
         "The working directory of {{ $labels.node }} grows by {{ $value | humanize1024 }}B/h after warm-up.",
         "Look for logs or stores that are never compacted under the node's work directory.", unit="bytes/h", warmup=True),
    Gate("reports_missing", "SoakReportsMissing", "critical",
         "time() - soak_report_last_observed_timestamp_seconds",
         "soak_report_last_observed_timestamp_seconds", "max_report_gap_secs", "0s", DOWN, "60s",
         "No new epoch report from {{ $labels.node }}",
         "{{ $labels.node }} wrote no epoch report for {{ $value | humanizeDuration }} outside fault windows.",
         "Is the reward runtime enabled with a short epoch? Is the node stuck (tick_count)?", unit="s"),
    Gate("exporter_down", "SoakExporterDown", "critical",
         '(1 - max(up{job="soak-exporter"})) or absent(soak_exporter_scrape_duration_seconds)',
         "soak_exporter_scrape_duration_seconds", None, "30s", (), "0s",
         "The soak exporter is not being scraped",
         "Prometheus cannot scrape the soak exporter: every other gate is blind. A dead man's switch.",
         "Is soak-exporter running and listening on the port in prometheus.yml?", scope="run"),
)


def gate_by_name(name: str) -> Gate:
    for gate in GATES:
        if gate.name == name:
            return gate
    raise KeyError(name)
