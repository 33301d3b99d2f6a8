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
- ``applies`` (optional): PromQL instant vector (labels run_id, topology), non-empty when the
  gate applies to the topology at all; empty over the whole window means "not applicable"
  (not judged, not counted as missing data), as for the G2 status gates on G1 nodes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from soakcore.actions import ACTIONS, DOWN, RELAUNCH

Severity = Literal["critical", "warning"]
Scope = Literal["node", "topology", "run"]
JOIN = "on(run_id, topology)"
NODE = "run_id, topology, node"
SCOPE_LABELS = {"node": NODE, "topology": "run_id, topology", "run": "run_id, topology"}
WINDOW = "5m"      # window of the rate-like gates (lag p95, bursts, regressions, crashes)
SLOPE_WINDOW = "10m"  # window of the growth-slope gates (memory, fds, disk)
# Window of the regression counters: longer than the checker's coarsest subquery step (an
# 8 h run judged in 400 steps = 72 s). Regressions during a restart are not in it: the
# exporter counts those apart (soak_consensus_height_regressions_excused_total).
REGRESSION_WINDOW = "2m"


def threshold(key: str) -> str:
    """The active threshold for ``key`` as a PromQL vector (labels run_id, topology)."""
    return f'max by (run_id, topology) (soak_gate_threshold{{gate="{key}"}})'


def exempt_now(actions: tuple[str, ...]) -> str:
    """Nodes (labels run_id, topology, node) exempt now from ``actions``: a window of one is
    in effect or ended less than that action's grace ago (``soakcore.actions``). The exporter
    keeps each window's end in the series, so a fault shorter than a scrape is still seen."""
    return (f'max by ({NODE}) (soak_chaos_exempt_until_timestamp_seconds{{action=~"{"|".join(actions)}"}})'
            " - time() > 0")


def outside_chaos(expr: str, actions: tuple[str, ...]) -> str:
    """``expr`` minus the nodes exempt from ``actions`` now: only the faulted node, only for
    its fault window plus the action's grace."""
    if not actions:
        return expr
    return f"({expr}) unless on({NODE}) ({exempt_now(actions)})"


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
    exempt: tuple[str, ...]   # chaos actions whose windows (plus each action's grace) exempt the node
    summary: str
    description: str
    runbook: str              # what to look at first when it fires
    scope: Scope = "node"
    unit: str = ""
    # True when ``data`` only exists after warm-up: the insufficient-data alert waits for it.
    warmup: bool = False
    # The gate can only fire once its threshold (a duration, in seconds) has elapsed: a
    # shorter window is insufficient_data, never a pass (stall, report gap).
    threshold_is_duration: bool = False
    # PromQL over the whole judged window (``{window}`` = its length, e.g. ``90s``; labels
    # run_id, topology), non-empty when the window itself proves a failure whatever the
    # threshold: used by the checker only (an alert cannot see a whole window).
    whole_window: str | None = None
    # PromQL (labels run_id, topology), non-empty when the gate applies to the topology at all
    # (None: always). A gate that does not apply over the whole window is not judged and, unlike
    # missing data, is not held against the run: the G2 status gates on G1 nodes, which have no
    # status document to read them from. Where it applies, missing ``data`` is insufficient_data.
    applies: str | None = None

    @property
    def value(self) -> str:
        return outside_chaos(self.measure, self.exempt)

    @property
    def breach(self) -> str:
        if self.threshold_key is None:
            return f"({self.value}) > 0"
        return f"({self.value}) > {JOIN} group_left() {threshold(self.threshold_key)}"

    @property
    def anchor(self) -> str:
        return self.alert.lower()

    def needs_secs(self, thresholds: dict[str, float]) -> float:
        """Shortest window in which this gate could fire at all; a passing gate judged over a
        shorter window is insufficient_data (it could not have failed)."""
        secs = _secs(self.for_)
        if self.threshold_is_duration and self.threshold_key:
            secs += thresholds.get(self.threshold_key, 0.0)
        if self.warmup:
            secs += thresholds.get("warmup_secs", 0.0)
        return secs


def _secs(duration: str) -> float:
    return float(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def grace_text(actions: tuple[str, ...]) -> str:
    """Human text of the exemption: each action with its grace."""
    return ", ".join(f"{a} (+{ACTIONS[a].grace_secs:g}s)" for a in actions) or "never exempt"


def _lag_outside_chaos() -> str:
    # The larger of the node's own view (network minus committed height) and the view from
    # outside (blocks behind the topology's highest node: a node cut off from everyone does
    # not know it lags). Samples taken during the node's own fault window (plus grace) are
    # left out of the p95 itself, so a long pause does not poison the next five minutes.
    # A fault that can stop commits on a consensus-critical node excuses the outside view
    # only: every follower then falls behind it as seen from outside, but none learns of
    # heights it cannot reach, so its own view does not grow. A follower that stopped on its
    # own still knows it is behind, and continuous chaos on the sequencer does not hide it.
    own = outside_chaos("soak_consensus_network_committed_height - soak_consensus_committed_height", DOWN)
    outside = outside_critical_fault(outside_chaos("soak_consensus_height_behind_topology", DOWN))
    lag = (f'max by ({NODE}) (label_replace({own}, "view", "own", "", "") or '
           f'label_replace({outside}, "view", "outside", "", ""))')
    return f"quantile_over_time(0.95, ({lag})[{WINDOW}:10s])"


def outside_critical_fault(expr: str) -> str:
    """``expr`` minus every node of a topology while a fault that can stop commits holds one of
    its consensus-critical nodes (window + grace): every follower falls behind it or stops with it."""
    critical = "max by (run_id, topology) (soak_chaos_critical_exempt_until_timestamp_seconds) - time() > 0"
    return f"({expr}) unless on(run_id, topology) ({critical})"


# Nothing committed over the whole window although every node reported at least three
# times (a few epochs really passed) and the stall clock, which pauses for faults on
# critical nodes, ran for at least half the window: a stall whatever the threshold.
_TOP_HEIGHT = "max by (run_id, topology) (soak_consensus_committed_height)"
_NOTHING_COMMITTED = (
    f"(max_over_time({_TOP_HEIGHT}[{{window}}:]) - min_over_time({_TOP_HEIGHT}[{{window}}:]) == 0)"
    f" and on(run_id, topology) (sum by (run_id, topology) (increase(soak_reports_total[{{window}}]))"
    f" >= 3 * count by (run_id, topology) (soak_reports_total))"
    f" and on(run_id, topology) (max by (run_id, topology) (max_over_time(soak_consensus_stall_seconds[{{window}}]))"
    f" >= {{half_window}})")
_NODE_CHECKS = 'sum by (run_id, topology, node) (soak_distfs_checks_total)'
_RECENT_CHECKS = f'sum by (run_id, topology, node) (increase(soak_distfs_checks_total[{WINDOW}]))'
_MIN_CHECKS = f"{JOIN} group_left() {threshold('min_distfs_checks')}"
# The G2 status gates read what only a G2 node's status document (HEAD schema) says.
_G2_STATUS = "soak_node_status_head_schema"
_STATE_ROOTS = 'soak_consensus_hash_heights_total{kind="execution_state_root"} > 0'
_EXECUTES = "soak_consensus_last_execution_height > 0"  # a node of the topology executes blocks

GATES: tuple[Gate, ...] = (
    Gate(name="committed_height_regressed", alert="SoakCommittedHeightRegressed", severity="critical",
         # Drops seen while the node was exempt from a restart/kill are counted apart by the
         # exporter, at the moment they were seen: a real drop 30 s after a restart still fails.
         measure=f"increase(soak_consensus_height_regressions_total[{REGRESSION_WINDOW}])"
                 f" - on({NODE}) increase(soak_consensus_height_regressions_excused_total[{REGRESSION_WINDOW}])",
         data="soak_consensus_committed_height", threshold_key=None, for_="0s", exempt=(),
         summary="Committed height went down on {{ $labels.node }}",
         description="{{ $labels.node }} ({{ $labels.topology }}) reported a lower committed height than before, "
                     "outside any restart of that node.",
         runbook="A committed block was un-committed: check the node's persisted state and its stderr around the drop."),
    Gate(name="consensus_stalled", alert="SoakConsensusStalled", severity="critical",
         # The exporter's stall clock pauses only while a fault holds a consensus-critical
         # node (window + grace); it never restarts for a fault (exporter/chaoswin.py).
         measure="max by (run_id, topology) (soak_consensus_stall_seconds)",
         data="soak_consensus_stall_seconds", threshold_key="max_stall_secs", for_="15s", exempt=(),
         summary="No committed-height progress in {{ $labels.topology }}",
         description="No node of {{ $labels.topology }} committed a new block for {{ $value | humanizeDuration }}, "
                     "not counting faults on consensus-critical nodes.",
         runbook="Check the sequencer first (process up? paused? stderr), then gossip connectivity between nodes.",
         scope="topology", unit="s", threshold_is_duration=True, whole_window=_NOTHING_COMMITTED),
    Gate(name="consensus_lag_high", alert="SoakConsensusLagHigh", severity="critical", measure=_lag_outside_chaos(),
         data="soak_consensus_network_committed_height", threshold_key="max_lag_p95", for_="30s", exempt=DOWN,
         summary="Consensus lag p95 high on {{ $labels.node }}",
         description="p95 over 5m of how far {{ $labels.node }} is behind (its own view, or the topology's "
                     "highest node as the exporter sees it) is {{ $value | printf \"%.1f\" }} blocks.",
         runbook="A follower is not keeping up: look for packet loss, CPU starvation or a slow executor on that node.",
         unit="blocks"),
    Gate(name="consensus_fork_detected", alert="SoakConsensusForkDetected", severity="critical",
         measure="max by (run_id, topology) (soak_consensus_hash_mismatches_total)",
         data="soak_consensus_committed_height", threshold_key=None, for_="0s", exempt=(),
         summary="Fork: two block hashes at one height in {{ $labels.topology }}",
         description="{{ $value }} heights were seen with two different block hashes across nodes. Never exempt.",
         runbook="Compare last_block_hash and peer_heads in the nodes' reports at the first mismatched height.",
         scope="topology"),
    Gate(name="distfs_failure_ratio_high", alert="SoakDistfsFailureRatioHigh", severity="critical",
         measure=f'(sum by ({NODE}) (soak_distfs_checks_total{{result="failed"}}) / {_NODE_CHECKS})'
                 f" and on({NODE}) ({_NODE_CHECKS} >= {_MIN_CHECKS})",
         data=f"{_NODE_CHECKS} >= {_MIN_CHECKS}", threshold_key="max_distfs_failure_ratio", for_="30s", exempt=(),
         summary="DistFS challenge failure ratio high on {{ $labels.node }}",
         description="Run-cumulative DistFS failed/total checks on {{ $labels.node }} is "
                     "{{ $value | humanizePercentage }}.",
         runbook="See soak_distfs_check_failures_total by reason; MISSING_SAMPLE points at the blob store, "
                 "TIMEOUT at load.",
         unit="ratio"),
    Gate(name="distfs_recent_failure_ratio_high", alert="SoakDistfsRecentFailureRatioHigh", severity="critical",
         # The cumulative ratio dilutes a store lost late in a long run; this one sees it.
         measure=f'(sum by ({NODE}) (increase(soak_distfs_checks_total{{result="failed"}}[{WINDOW}]))'
                 f" / {_RECENT_CHECKS}) and on({NODE}) ({_RECENT_CHECKS} >= {_MIN_CHECKS})",
         data=f"{_RECENT_CHECKS} >= {_MIN_CHECKS}", threshold_key="max_distfs_failure_ratio", for_="30s",
         exempt=("challenge_pressure",),
         summary="DistFS challenges failing now on {{ $labels.node }}",
         description="In the last 5m, {{ $value | humanizePercentage }} of the DistFS checks on {{ $labels.node }} "
                     "failed.",
         runbook="Something broke recently: see soak_distfs_check_failures_total by reason around the first "
                 "failure and the node's blob store.",
         unit="ratio"),
    Gate(name="distfs_failure_reason_burst", alert="SoakDistfsFailureReasonBurst", severity="warning",
         measure=f"max by ({NODE}) (increase(soak_distfs_check_failures_total[{WINDOW}]))"
                 f" / on({NODE}) {_RECENT_CHECKS}",
         data=f"{_RECENT_CHECKS} > 0", threshold_key="max_distfs_failure_ratio", for_="30s",
         exempt=("challenge_pressure",),
         summary="One DistFS failure reason dominates on {{ $labels.node }}",
         description="In the last 5m a single failure reason made up {{ $value | humanizePercentage }} of all checks.",
         runbook="A burst of one reason is usually one broken thing (a disk, a clock, a key): look at that reason first.",
         unit="ratio"),
    Gate(name="reward_invariant_violated", alert="SoakRewardInvariantViolated", severity="critical",
         measure="1 - soak_reward_invariant_ok", data="soak_reward_invariant_ok", threshold_key=None, for_="0s",
         exempt=(),
         summary="Reward-asset invariant violated on {{ $labels.node }}",
         description="reward_asset_invariant_status.ok is false on {{ $labels.node }}. Never exempt.",
         runbook="Read reward_asset_invariant_report.violations in the node's newest report."),
    Gate(name="process_crashed", alert="SoakProcessCrashed", severity="critical",
         measure=f'increase(soak_process_restarts_total{{cause="crash"}}[{WINDOW}])',
         data="soak_process_up", threshold_key=None, for_="0s", exempt=(),
         summary="{{ $labels.node }} exited without being told to",
         description="{{ $labels.node }} exited outside chaos (a crash) in the last 5m.",
         runbook="Read the tail of the node's stderr.log in the run directory; the runner noted the exit code."),
    Gate(name="process_down", alert="SoakProcessDown", severity="critical", measure="1 - soak_process_up",
         data="soak_process_up", threshold_key=None, for_="15s", exempt=RELAUNCH,
         summary="{{ $labels.node }} is not running",
         description="The process of {{ $labels.node }} has been down for more than 15s outside a restart.",
         runbook="Was it stopped by the crash policy? Check run_state.json and the node's stderr.log."),
    Gate(name="memory_growth_high", alert="SoakMemoryGrowthHigh", severity="critical",
         measure=after_warmup(f"deriv(soak_process_resident_memory_bytes[{SLOPE_WINDOW}]) * 3600"),
         data=after_warmup("soak_process_resident_memory_bytes"), threshold_key="max_rss_growth_bytes_per_hour",
         for_="30s", exempt=DOWN,
         summary="RSS of {{ $labels.node }} grows too fast",
         description="RSS slope of {{ $labels.node }} after warm-up is {{ $value | humanize1024 }}B/h.",
         runbook="A leak or an unbounded queue: compare rss.csv over time; take a heap profile of the node.",
         unit="bytes/h", warmup=True),
    Gate(name="fd_growth_high", alert="SoakFdGrowthHigh", severity="critical",
         measure=after_warmup(f"deriv(soak_process_open_fds[{SLOPE_WINDOW}]) * 3600"),
         data=after_warmup("soak_process_open_fds"), threshold_key="max_fd_growth_per_hour", for_="30s",
         exempt=DOWN,
         summary="Open fds of {{ $labels.node }} keep growing",
         description="Open file descriptors of {{ $labels.node }} grow by {{ $value | printf \"%.0f\" }} per hour "
                     "after warm-up.",
         runbook="List /proc/<pid>/fd of the node: sockets or files that are never closed.", unit="fds/h",
         warmup=True),
    Gate(name="disk_growth_high", alert="SoakDiskGrowthHigh", severity="critical",
         measure=after_warmup(f"deriv(soak_node_disk_bytes[{SLOPE_WINDOW}]) * 3600"),
         data=after_warmup("soak_node_disk_bytes"), threshold_key="max_disk_growth_bytes_per_hour", for_="30s",
         exempt=RELAUNCH,
         summary="Disk use of {{ $labels.node }} grows too fast",
         description="The working directory of {{ $labels.node }} grows by {{ $value | humanize1024 }}B/h after "
                     "warm-up.",
         runbook="Look for logs or stores that are never compacted under the node's work directory.",
         unit="bytes/h", warmup=True),
    Gate(name="reports_missing", alert="SoakReportsMissing", severity="critical",
         # The exporter's gap clock: since the newest report's arrival on its own clock (a
         # node's clock may be skewed), or the node's start before its first report, so a node
         # that never reports fails too; the node's own down faults pause it, never restart it.
         measure="soak_report_gap_seconds",
         data="soak_report_gap_seconds", threshold_key="max_report_gap_secs", for_="0s",
         exempt=(),
         summary="No new epoch report from {{ $labels.node }}",
         description="{{ $labels.node }} wrote no epoch report for {{ $value | humanizeDuration }} outside fault "
                     "windows.",
         runbook="Is the reward runtime enabled with a short epoch? Is the node stuck (tick_count)?", unit="s",
         threshold_is_duration=True),
    Gate(name="node_critical_alert", alert="SoakNodeCriticalAlert", severity="critical",
         # The node's own verdict (observability.alerts); at HEAD only runtime_last_error is critical.
         measure=f'sum by ({NODE}) (soak_node_alerts{{severity="critical"}})',
         data="soak_node_alerts", threshold_key=None, for_="15s", exempt=DOWN,
         summary="{{ $labels.node }} reports a critical alert of its own",
         description="{{ $labels.node }} ({{ $labels.topology }}) lists {{ $value }} critical alert(s) in its status "
                     "(observability.alerts, e.g. runtime_last_error) for 15s outside its own faults.",
         runbook="Read last_error and observability.alerts in the node's /v1/chain/status, then its stderr.log.",
         applies=_G2_STATUS),
    Gate(name="execution_state_root_diverged", alert="SoakExecutionStateRootDiverged", severity="critical",
         # Two state roots for one executed block (height and execution block hash): the
         # execution is not deterministic. Never exempt: no fault excuses it.
         measure='max by (run_id, topology) (soak_consensus_hash_divergences_total{kind="execution_state_root"})',
         data=_STATE_ROOTS, threshold_key=None, for_="0s", exempt=(),
         summary="Execution state roots diverged in {{ $labels.topology }}",
         description="{{ $value }} executed blocks were seen with two different state roots. Never exempt.",
         runbook="Compare last_execution_state_root for that height across the readings (timeline.csv, status "
                 "polls): replay the block on a fresh node and diff the execution state.",
         scope="topology", applies=_EXECUTES),
    Gate(name="finality_latency_high", alert="SoakFinalityLatencyHigh", severity="warning",
         # Like the lag gate: a fault holding the sequencer delays everyone's finality.
         measure=outside_critical_fault(
             f'max by ({NODE}) (soak_consensus_finality_latency_seconds{{stat="p95"}})'),
         data='soak_consensus_finality_latency_seconds{stat="p95"}', threshold_key="max_finality_p95_secs",
         for_="30s", exempt=DOWN,
         summary="Finality latency p95 high on {{ $labels.node }}",
         description="The node's recent finality latency p95 (consensus.recent_finality_latency) is "
                     "{{ $value | humanizeDuration }}.",
         runbook="Slow attestations: look at pending_proposal (age, approval progress), inbound timing "
                 "rejections and the gossip traffic of the validators.", unit="s", applies=_G2_STATUS),
    Gate(name="replication_no_peers", alert="SoakReplicationNoPeers", severity="warning",
         measure=f'max by ({NODE}) (soak_replication_peers{{state="connected"}} == bool 0)',
         data='soak_replication_peers{state="connected"}', threshold_key=None, for_="30s", exempt=DOWN,
         summary="{{ $labels.node }} has no connected replication peer",
         description="{{ $labels.node }} ({{ $labels.topology }}) has had no connected replication peer for 30s "
                     "outside its own faults; its blobs are not replicated.",
         runbook="Check replication.peer_healths and recent_errors in the node's status, and that its "
                 "--replication-network-listen port is open and its peers' addresses are right.",
         applies=_G2_STATUS),
    Gate(name="exporter_down", alert="SoakExporterDown", severity="critical",
         measure='(1 - max(up{job="soak-exporter"})) or absent(soak_exporter_scrape_duration_seconds)',
         data="soak_exporter_scrape_duration_seconds", threshold_key=None, for_="30s", exempt=(),
         summary="The soak exporter is not being scraped",
         description="Prometheus cannot scrape the soak exporter: every other gate is blind. A dead man's switch.",
         runbook="Is soak-exporter running and listening on the port in prometheus.yml?", scope="run"),
    Gate(name="exporter_scrape_failing", alert="SoakExporterScrapeFailing", severity="critical",
         # Scraped but failing (run-state unreadable, a node's reports unreadable by a bug):
         # its readings may be frozen, so the other gates may pass on stale data.
         measure="max by (run_id, topology) (soak_exporter_scrape_error)",
         data="soak_exporter_scrape_error", threshold_key=None, for_="30s", exempt=(),
         summary="The soak exporter fails while being scraped",
         description="soak_exporter_scrape_error has been 1 for 30s in {{ $labels.topology }}: readings may be stale.",
         runbook="Read <topology>/exporter.log in the run directory: a run-state or report read keeps failing.",
         scope="topology"),
)


# The longest ``for`` of any gate: how long after a window's end a breach that began at the
# end needs to be watched before it can be judged (the runner drains this long).
MAX_FOR_SECS = max(_secs(g.for_) for g in GATES)


def gate_by_name(name: str) -> Gate:
    for gate in GATES:
        if gate.name == name:
            return gate
    raise KeyError(name)
