"""The Agent World soak dashboards, generated with grafanalib.

``python3 -m grafana`` writes them to ``grafana/dashboards/``; a test fails when the checked-in
JSON is stale. Every expression uses catalog metrics (DESIGN.md) or the gates' own PromQL.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from grafanalib._gen import DashboardEncoder
from grafanalib.core import GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR, Annotations, Dashboard, Template, Templating, Time

from alerts.gates import GATES
from alerts.generate import DEFAULT_RUNBOOK_BASE_URL
from grafana.panels import (ALERTMANAGER_DEFAULT, ALERTMANAGER_VAR, DATASOURCE, RED, RUN_SEL, RUNBOOK_VAR, Cell, Layout, gate_stat, gate_trend, sel, series,
                            target, timeline)

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
# Grafana 9/10 schema: the panels are written in that format (datasource refs, fieldConfig), so
# Grafana must not run its old-schema migrations over them (grafanalib defaults to 12).
SCHEMA_VERSION = 37
ALL = ".*"  # the "All" value of every variable: a regex matching any label value


def _variables() -> Templating:
    def var(name: str, query: str, label: str) -> Template:
        return Template(name=name, label=label, query=query, dataSource=DATASOURCE, includeAll=True,
                        multi=True, allValue=ALL, default="$__all", refresh=2, sort=1)
    return Templating(list=[
        Template(name="datasource", label="Prometheus", query="prometheus", type="datasource", default=""),
        var("run_id", "label_values(soak_run_info, run_id)", "run"),
        var("topology", 'label_values(soak_run_info{run_id=~"$run_id"}, topology)', "topology"),
        var("node", f"label_values(soak_node_info{{{RUN_SEL}}}, node)", "node"),
        # Where the gate panels' "in Alertmanager" links go; edit it in the dashboard's bar.
        Template(name=ALERTMANAGER_VAR, label="Alertmanager URL", query=ALERTMANAGER_DEFAULT, type="textbox",
                 default=ALERTMANAGER_DEFAULT),
        # Where the gate panels' runbook links go (the rules' runbook_url base by default).
        Template(name=RUNBOOK_VAR, label="Runbook URL", query=DEFAULT_RUNBOOK_BASE_URL, type="textbox",
                 default=DEFAULT_RUNBOOK_BASE_URL, hide=2),
    ])


def _chaos_annotation() -> dict[str, Any]:
    """Fault windows drawn over every time series: an injected fault explains most dips."""
    return {"name": "chaos", "datasource": DATASOURCE, "enable": True, "iconColor": RED,
            "expr": f"max by (node, action) ({sel('soak_chaos_active')}) > 0", "step": "5s",
            "titleFormat": "chaos {{action}}", "textFormat": "{{action}} on {{node}}",
            "tagKeys": "node,action", "useValueForTime": False}


def _verdict_cells() -> list[Cell]:
    return [Cell(gate_stat(gate), w=4, h=4) for gate in GATES]


def _consensus_cells() -> list[Cell]:
    lag = f"{sel('soak_consensus_network_committed_height')} - {sel('soak_consensus_committed_height')}"
    return [
        Cell(series("Committed height", [target(sel("soak_consensus_committed_height"), "{{node}}")])),
        Cell(series("Lag (network - committed)", [target(lag, "{{node}}")], "short",
                    "Blocks this node is behind the network's committed height.")),
        Cell(series("Last progress age", [target(
            f"time() - {sel('soak_consensus_last_progress_timestamp_seconds')}", "{{node}}")], "s",
            "Seconds since the committed height last rose.")),
        Cell(timeline("Consensus status", [target(
            f"max by (node, status) ({sel('soak_consensus_status')})", "{{node}} {{status}}")])),
        Cell(series("Height regressions and forks (5m)", [
            target(f"increase({sel('soak_consensus_height_regressions_total')}[5m])", "regressions {{node}}"),
            target(f"max by (topology) ({sel('soak_consensus_hash_mismatches_total', scope='run')})",
                   "hash mismatches {{topology}}", "B")])),
        Cell(series("Peer heights", [target(sel("soak_consensus_peer_height"), "{{node}} sees {{peer}}")])),
    ]


def _distfs_cells() -> list[Cell]:
    checks = sel("soak_distfs_checks_total")
    failed = sel("soak_distfs_checks_total", 'result="failed"')
    return [
        Cell(series("Checks per second", [target(f"sum by (node, result) (rate({checks}[1m]))",
                                                 "{{node}} {{result}}")], "ops")),
        Cell(series("Failure ratio (run-cumulative)", [target(
            f"sum by (node) ({failed}) / sum by (node) ({checks})",
            "{{node}}")], "percentunit", "failed / total of the cumulative challenge counters.")),
        Cell(series("Failures by reason (5m)", [target(
            f"sum by (node, reason) (increase({sel('soak_distfs_check_failures_total')}[5m]))",
            "{{node}} {{reason}}")])),
    ]


def _reward_cells() -> list[Cell]:
    return [
        Cell(timeline("Reward invariant ok", [target(sel("soak_reward_invariant_ok"), "{{node}}")]), w=12),
        Cell(series("Reward invariant violations", [target(sel("soak_reward_invariant_violations"), "{{node}}")]),
             w=12),
    ]


def _process_cells() -> list[Cell]:
    return [
        Cell(series("Resident memory", [target(sel("soak_process_resident_memory_bytes"), "{{node}}")], "bytes")),
        Cell(series("CPU", [target(f"rate({sel('soak_process_cpu_seconds_total')}[1m])", "{{node}}")],
                    "percentunit", "CPU seconds per second (1 = one core).")),
        Cell(series("Open fds", [target(sel("soak_process_open_fds"), "{{node}}")])),
        Cell(series("Threads", [target(sel("soak_process_threads"), "{{node}}")])),
        Cell(series("Restarts by cause (5m)", [target(
            f"sum by (node, cause) (increase({sel('soak_process_restarts_total')}[5m]))", "{{node}} {{cause}}")])),
        Cell(series("Node directory size", [target(sel("soak_node_disk_bytes"), "{{node}}")], "bytes")),
        Cell(timeline("Process up", [target(sel("soak_process_up"), "{{node}}")]), w=24, h=5),
    ]


def _chaos_cells() -> list[Cell]:
    return [
        Cell(timeline("Fault in effect", [target(
            f"max by (node, action) ({sel('soak_chaos_active')})", "{{node}} {{action}}")],
            "1 while an injected fault is in effect (also drawn as annotations on every graph)."), w=16),
        Cell(series("Chaos events (5m)", [target(
            f"sum by (action, phase) (increase({sel('soak_chaos_events_total')}[5m]))", "{{action}} {{phase}}")],
            drawStyle="bars"), w=8),
    ]


def _g2_cells() -> list[Cell]:
    """What a G2 node's status document says (HEAD schema); empty for G1 nodes."""
    rate = "sum by (node, direction) (rate({}[1m]))"
    return [
        Cell(series("Node's own alerts", [target(
            f"max by (node, severity, code) ({sel('soak_node_alerts')}) > 0", "{{node}} {{severity}} {{code}}")],
            description="observability.alerts of each node (SoakNodeCriticalAlert: a critical one).")),
        Cell(series("Replication peers by state", [target(sel("soak_replication_peers"), "{{node}} {{state}}")],
                    description="SoakReplicationNoPeers: no connected peer.")),
        Cell(series("Finality latency", [target(sel("soak_consensus_finality_latency_seconds"), "{{node}} {{stat}}")],
                    "s", "consensus.recent_finality_latency (SoakFinalityLatencyHigh: p95).")),
        Cell(series("Last commit age and network lag", [
            target(sel("soak_consensus_last_commit_age_seconds"), "commit age {{node}}"),
            target(sel("soak_consensus_network_height_lag"), "lag (blocks) {{node}}", "B")], "s")),
        Cell(series("Pending consensus actions / capacity", [target(
            f"{sel('soak_consensus_pending_actions')} / {sel('soak_consensus_pending_actions_capacity')}",
            "{{node}}")], "percentunit")),
        Cell(series("Timing rejections and missed slots (5m)", [
            target(f"sum by (node, kind) (increase({sel('soak_consensus_inbound_timing_rejections_total')}[5m]))",
                   "{{node}} {{kind}}"),
            target(f"increase({sel('soak_consensus_missed_slots_total')}[5m])", "{{node}} missed slots", "B")])),
        Cell(series("Storage by directory", [target(sel("soak_storage_bytes"), "{{node}} {{dir}}")], "bytes")),
        Cell(series("Orphan blobs, GC failed, replication errors", [
            target(sel("soak_storage_orphan_blobs"), "orphans {{node}}"),
            target(sel("soak_storage_last_gc_result", 'result="failed"'), "gc failed {{node}}", "B"),
            target(sel("soak_replication_recent_errors"), "replication errors {{node}}", "C")])),
        Cell(series("Gossip and replication traffic", [
            target(rate.format(sel("soak_gossip_udp_payload_bytes_total")), "udp {{node}} {{direction}}"),
            target(rate.format(sel("soak_replication_libp2p_payload_bytes_total")), "libp2p {{node}} {{direction}}",
                   "B")], "Bps")),
        Cell(series("Hash divergences by kind", [target(
            f"max by (topology, kind) ({sel('soak_consensus_hash_divergences_total', scope='run')})",
            "{{topology}} {{kind}}")],
            description="Heights with two values (execution_state_root: SoakExecutionStateRootDiverged)."), w=16),
    ]


def _health_cells() -> list[Cell]:
    return [
        Cell(series("Exporter scrape", [
            target(f"max({sel('soak_exporter_scrape_duration_seconds', scope='run')})", "duration"),
            target(f"max({sel('soak_exporter_scrape_error', scope='run')})", "error", "B"),
            target('min(up{job="soak-exporter"})', "up", "C")], "s")),
        Cell(series("Reports ingested (5m)", [
            target(f"increase({sel('soak_reports_total')}[5m])", "{{node}}"),
            target(f"sum by (node, reason) (increase({sel('soak_report_errors_total')}[5m]))",
                   "errors {{node}} {{reason}}", "B")])),
        Cell(series("Newest report age", [target(
            f"time() - {sel('soak_report_last_observed_timestamp_seconds')}", "{{node}}")], "s")),
        Cell(timeline("Firing alerts", [target(
            f'max by (alertname, node) (ALERTS{{alertstate="firing", {RUN_SEL}}})', "{{alertname}} {{node}}")],
            "Prometheus ALERTS series of the Soak* rules (alerts/rules.yml)."), w=24, h=6),
    ]


def overview() -> Dashboard:
    layout = Layout()
    layout.row("Verdict: gates (red = above the active profile's threshold)", _verdict_cells())
    layout.row("Consensus", _consensus_cells())
    layout.row("DistFS storage challenges", _distfs_cells())
    layout.row("Reward invariant", _reward_cells())
    layout.row("Processes", _process_cells())
    layout.row("Chaos", _chaos_cells())
    layout.row("G2 nodes: their status endpoint (empty for G1)", _g2_cells())
    layout.row("Exporter health and alerts", _health_cells())
    layout.row("Gate values over time", [Cell(gate_trend(gate)) for gate in GATES], collapsed=True)
    return Dashboard(title="Agent World soak", uid="agent-world-soak", tags=["agent-world", "soak"],
                     panels=layout.panels, templating=_variables(),
                     annotations=Annotations(list=[_chaos_annotation()]), refresh="10s",
                     time=Time("now-1h", "now"), timezone="utc", schemaVersion=SCHEMA_VERSION,
                     graphTooltip=GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR).auto_panel_ids()


# File name -> builder. The file name is the dashboard's identity in provisioning.
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {"agent-world-soak.json": overview}


def render(dashboard: Dashboard) -> str:
    return json.dumps(dashboard.to_json_data(), cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


def write_all(out_dir: Path = OUT_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in DASHBOARDS.items():
        path = out_dir / name
        path.write_text(render(build()))
        written.append(path)
    return written
