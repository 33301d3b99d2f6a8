"""The verdict files people act on (issue 13): units from the gate definitions, failures.md
with evidence from a run directory, junit.xml for a CI test view, timeline.csv and plots.

Judged by a real Prometheus over backfilled histories (checker.testing)."""
from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Iterator
from xml.etree import ElementTree as ET

import pytest

from alerts.gates import gate_by_name
from alerts.profiles import get_profile
from alerts.units import human
from checker.api import RunMeta, TopologyMeta, TopologyVerdict, evaluate
from checker.failures import with_run_labels
from checker.promapi import Prom
from checker.report import write_reports
from checker.testing import MiB, Fault, History, backfill
from soakcore.services import Service, start_prometheus

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_REPORT = ROOT / "tests" / "fixtures" / "agent_world" / "g1-storage-epoch-3.json"
START = 1767225600.0          # 2026-01-01T00:00:00Z
DURATION = 1800.0
UNTIL = START + DURATION
EPOCH = 20.0
HISTORIES = [
    History("invariant", "triad", ("triad",), START, DURATION, epoch_secs=EPOCH,
            faults=(Fault("invariant", 1000, 1100, "triad"), Fault("pause", 930, 960, "triad"))),
    History("memory", "triad_distributed", ("sequencer", "storage", "observer"), START, DURATION,
            faults=(Fault("memory", 300, 1800, "storage", 1024 * MiB),)),
]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    base = tmp_path_factory.mktemp("report-prom")
    backfill(HISTORIES, base / "data")
    (base / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
    prom = start_prometheus(base / "prometheus.yml", base / "data", extra_args=("--storage.tsdb.retention.time=100y",))
    try:
        yield prom
    finally:
        prom.stop()


_CACHE: dict[tuple[str, str, float, str], TopologyVerdict] = {}


def verdict(prom: Service, run_id: str, until: float = UNTIL, profile: str = "soak_smoke") -> TopologyVerdict:
    key = (prom.url, run_id, until, profile)
    if key not in _CACHE:
        topology = next(h.topology for h in HISTORIES if h.run_id == run_id)
        _CACHE[key] = evaluate(prom.url, START, until, run_id=run_id, topology=topology,
                               profile=get_profile(profile))
    return _CACHE[key]


def with_warning(v: TopologyVerdict) -> TopologyVerdict:
    """``v`` with its warning-severity gate failed on ``storage`` (no history makes it fail alone)."""
    gates = tuple(replace(g, status="fail", value=0.5, worst_node="storage", first_failed_at=START + 700)
                  if g.severity == "warning" else g for g in v.gates)
    return replace(v, gates=gates)


def make_run_dir(root: Path) -> Path:
    """A run directory as the runner leaves it: epoch reports (violations in the fault's
    epochs), chaos_events.log, stderr.log, alerts.log."""
    run = root / "20260101-000000"
    reports = run / "triad" / "nodes" / "triad" / "report"
    reports.mkdir(parents=True)
    base = json.loads(FIXTURE_REPORT.read_text())
    for epoch in range(int(DURATION // EPOCH)):
        at = START + epoch * EPOCH
        doc = json.loads(json.dumps(base))
        doc["observed_at_unix_ms"] = int(at * 1000)
        doc["settlement_report"]["epoch_index"] = epoch
        bad = 1000 <= epoch * EPOCH < 1100
        doc["reward_asset_invariant_status"] = {"ok": not bad, "violation_count": int(bad)}
        doc["reward_asset_invariant_report"]["violations"] = (
            [{"kind": "minted_exceeds_pool", "epoch": epoch, "detail": "minted 1013 > pool 1000"}] if bad else [])
        (reports / f"epoch-{epoch}.json").write_text(json.dumps(doc))
    (run / "triad" / "nodes" / "triad" / "stderr.log").write_text(
        "INFO tick 1\nWARN settlement: minted 1013 exceeds pool 1000 at epoch 50\n")
    (run / "chaos_events.log").write_text(
        "timestamp|topology|event_id|phase|action|node|detail\n"
        "2026-01-01T00:15:30Z|triad|ev-1|start|pause|triad|down_secs=0 duration_secs=30\n"
        "2026-01-01T00:16:00Z|triad|ev-1|completed|pause|triad|resumed\n"
        "2026-01-01T01:30:00Z|triad|ev-2|start|restart|triad|far away\n"
        "2026-01-01T00:16:00Z|triad_distributed|ev-3|start|kill|storage|another topology\n")
    (run / "alerts.log").write_text(json.dumps({
        "received_at": START + 1010, "status": "firing",
        "labels": {"alertname": "SoakRewardInvariantViolated", "run_id": "invariant", "topology": "triad",
                   "node": "triad"}, "annotations": {"summary": "Reward-asset invariant violated on triad"}}) + "\n")
    return run


def meta(run_dir: Path | None, profile: str = "soak_smoke", until: float = UNTIL) -> RunMeta:
    return RunMeta(run_dir=run_dir, profile=get_profile(profile), scenario="triad_p2p", seed=42,
                   topologies=(TopologyMeta("triad", START, until, "ok"),))


def test_values_are_written_in_the_unit_their_gate_declares() -> None:
    assert human(134217728, gate_by_name("memory_growth_high").unit) == "128 MiB/h"
    assert human(1073741824, "bytes/h") == "1 GiB/h"
    assert human(61440, "bytes") == "60 KiB"
    assert human(490, gate_by_name("consensus_stalled").unit) == "8m 10s"
    assert human(3725, "s") == "1h 2m 5s"
    assert human(0.4726, gate_by_name("distfs_failure_ratio_high").unit) == "47.3 %"
    assert human(29.86, gate_by_name("consensus_lag_high").unit) == "29.9 blocks"
    assert human(1.0, gate_by_name("process_crashed").unit) == "1"
    assert human(None, "s") == "-" and human(float("nan"), "ratio") == "-"
    # The same number means different things: the unit comes from the gate, never the number.
    assert human(300, "s") != human(300, "bytes/h")


def test_summary_md_has_units_warn_and_the_not_judged_gates_apart_with_their_reason(
        prometheus: Service, tmp_path: Path) -> None:
    long = with_warning(verdict(prometheus, "invariant"))
    write_reports(tmp_path / "long", [long], meta(None))
    md = (tmp_path / "long" / "summary.md").read_text()
    assert "| gate | unit | severity | result | value | threshold | worst node | first failure |" in md
    row = next(line for line in md.splitlines() if line.startswith("| SoakMemoryGrowthHigh"))
    assert "| bytes/h |" in row and "| 128 MiB/h |" in row, row
    row = next(line for line in md.splitlines() if line.startswith("| SoakConsensusStalled"))
    assert "| 5m |" in row, row
    warn = next(line for line in md.splitlines() if line.startswith("| SoakDistfsFailureReasonBurst"))
    assert "| WARN |" in warn and "| 50 % |" in warn and "FAIL" not in warn
    assert not re.search(r"\b(134217728|1073741824)\b|\de[+-]\d", md), "raw or exponent numbers"
    # A 90 s window cannot judge the warm-up (120 s) gates: listed apart, with the reason.
    short = verdict(prometheus, "invariant", START + 90)
    write_reports(tmp_path / "short", [short], meta(None, until=START + 90))
    md = (tmp_path / "short" / "summary.md").read_text()
    table, _, rest = md.partition("Not judged")
    assert "| SoakMemoryGrowthHigh" not in table
    for alert in ("SoakMemoryGrowthHigh", "SoakConsensusStalled"):
        reason = next(line for line in rest.splitlines() if line.startswith(f"- {alert}"))
        assert "90s window" in reason and "is shorter than" in reason, reason
    # Without a note from the checker the reason comes from the gate's data requirement.
    bare = replace(short, gates=tuple(replace(g, status="insufficient_data", note=None) for g in short.gates))
    write_reports(tmp_path / "bare", [bare], meta(None, until=START + 90))
    rest = (tmp_path / "bare" / "summary.md").read_text().partition("Not judged")[2]
    reasons = {line.split(":")[0][2:]: line for line in rest.splitlines() if line.startswith("- Soak")}
    assert "past the 2m warm-up" in reasons["SoakMemoryGrowthHigh"]
    assert "20 DistFS checks" in reasons["SoakDistfsFailureRatioHigh"]
    assert "no `soak_reward_invariant_ok` series" in reasons["SoakRewardInvariantViolated"]


def test_failures_md_names_node_time_value_runbook_evidence_chaos_and_how_to_reopen(
        prometheus: Service, tmp_path: Path) -> None:
    run = make_run_dir(tmp_path)
    v = with_warning(verdict(prometheus, "invariant", profile="soak_endurance"))
    code = write_reports(tmp_path / "out", [v], meta(run, "soak_endurance"))
    assert code == 1
    page = (tmp_path / "out" / "failures.md").read_text()
    section = page.split("## triad: SoakRewardInvariantViolated FAILED")[1].split("\n## ")[0]
    first = next(g for g in v.gates if g.name == "reward_invariant_violated").first_failed_at
    assert first is not None and 1000 <= first - START <= 1100
    assert f"T+{first - START:.0f}s" in section and "2026-01-01T00:1" in section
    assert "- **node**: triad" in section
    assert "- **value**: 1 against threshold 0" in section
    assert gate_by_name("reward_invariant_violated").runbook in section
    assert "RUNBOOK.md#soakrewardinvariantviolated" in section
    # Evidence: the report file whose field holds the violation, the alert delivered, the log line.
    assert "`triad/nodes/triad/report/epoch-50.json`" in section
    assert "reward_asset_invariant_report.violations" in section and "minted_exceeds_pool" in section
    assert "epoch-49.json" not in section
    assert "alerts.log: 2026-01-01T00:16:50Z firing triad" in section
    assert "minted 1013 exceeds pool 1000" in section
    # Chaos around it with action and node; not the far one, not another topology's.
    assert "| 2026-01-01T00:15:30Z (T+930s) | pause | triad | start |" in section
    assert "far away" not in section and "another topology" not in section
    # The reproduce query has the run's labels in every catalog selector.
    assert 'soak_reward_invariant_ok{run_id="invariant",topology="triad"}' in section
    assert f"python3 -m checker --run-dir {run}" in page
    # Not-judged gates and warnings are not among the failures.
    assert re.findall(r"^## .* FAILED$", page, re.M) == ["## triad: SoakRewardInvariantViolated FAILED"]
    assert "SoakDistfsFailureReasonBurst FAILED" not in page
    assert "## Warnings" in page and "SoakDistfsFailureReasonBurst on storage: 50 % > 15 %" in page


def test_the_reproduce_query_with_run_labels_answers_like_the_gate_on_prometheus(prometheus: Service) -> None:
    prom = Prom(prometheus.url)
    for run_id, gate in (("invariant", "reward_invariant_violated"), ("memory", "memory_growth_high")):
        v = verdict(prometheus, run_id)
        g = next(r for r in v.gates if r.name == gate)
        labelled = with_run_labels(g.query, run_id, v.topology)
        assert labelled != g.query and "run_id=" in labelled
        ours = [(lab, val) for lab, val in prom.instant(g.query, g.evaluated_at) if lab.get("run_id") == run_id]
        assert sorted(prom.instant(labelled, g.evaluated_at), key=str) == sorted(ours, key=str)
        assert max(val for _, val in ours) == g.value
        other = with_run_labels(g.query, "no_such_run", v.topology)
        assert prom.instant(other, g.evaluated_at) == []
    # Strings, label lists, ranges and non-catalog metrics are left alone.
    assert (with_run_labels('sum by (node) (soak_x{result="failed"}[5m]) / up{job="soak_y"} or ALERTS', "r", "t")
            == 'sum by (node) (soak_x{run_id="r",topology="t",result="failed"}[5m]) / up{job="soak_y"} or ALERTS')


def test_junit_xml_has_times_properties_and_messages_in_units_and_warnings_are_not_failures(
        prometheus: Service, tmp_path: Path) -> None:
    v = with_warning(verdict(prometheus, "memory"))
    write_reports(tmp_path, [v], RunMeta(run_dir=None, profile=get_profile("soak_smoke"), seed=7,
                                         topologies=(TopologyMeta("triad_distributed", START, UNTIL, "ok"),)))
    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert root.tag == "testsuites" and float(root.get("time")) == DURATION
    (suite,) = root.findall("testsuite")
    assert suite.get("timestamp") == "2026-01-01T00:00:00" and float(suite.get("time")) == DURATION
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["run_id"] == "memory" and props["profile"] == "soak_smoke" and props["seed"] == "7"
    assert props["topology"] == "triad_distributed"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", props["commit"])
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert all(c.get("time") and c.get("timestamp") for c in cases.values())
    failure = cases["memory_growth_high"].find("failure")
    assert failure is not None
    message = failure.get("message")
    assert message.startswith("SoakMemoryGrowthHigh on storage at 2026-01-01T00:"), message
    assert "into the run" in message and re.search(r"\d+(\.\d+)? (MiB|GiB)/h > threshold 128 MiB/h$", message), message
    warned = cases["distfs_failure_reason_burst"]
    assert warned.find("failure") is None and "WARN" in warned.find("system-out").text
    assert suite.get("failures") == "1"


def test_timeline_csv_has_utc_times_and_seconds_since_the_start(prometheus: Service, tmp_path: Path) -> None:
    write_reports(tmp_path, [verdict(prometheus, "invariant")], meta(None))
    with open(tmp_path / "timeline.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    for row in rows:
        ms = int(row["observed_at_unix_ms"])
        assert row["observed_at_utc"] == __import__("datetime").datetime.fromtimestamp(
            ms / 1000, __import__("datetime").timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        assert float(row["secs_since_start"]) == pytest.approx(ms / 1000 - START)


def test_plots_label_chaos_mark_first_failures_and_start_resource_panels_at_zero(prometheus: Service) -> None:
    import matplotlib.pyplot as plt
    from checker.plots import PANELS, build_figure
    fig = build_figure(verdict(prometheus, "invariant"))
    try:
        axes = dict(zip((p.key for p in PANELS), fig.axes))
        texts = [(t.get_gid(), t.get_text()) for ax in fig.axes for t in ax.texts]
        assert ("chaos-label", "pause triad") in texts
        assert ("first-failure", "SoakRewardInvariantViolated first fails (triad)") in texts
        assert not any(gid == "first-failure" and "Memory" in text for gid, text in texts)
        for key, floor in (("rss", 256.0), ("fds", 64.0), ("disk", 64.0)):
            bottom, top = axes[key].get_ylim()
            assert bottom == 0 and top >= floor, (key, bottom, top)
            assert axes[key].lines, f"no {key} lines"
    finally:
        plt.close(fig)
    fig = build_figure(verdict(prometheus, "memory"))
    try:
        rss = dict(zip((p.key for p in PANELS), fig.axes))["rss"]
        assert rss.get_ylim()[1] > 400                       # a real leak still fills the axis
        assert any("SoakMemoryGrowthHigh first fails (storage)" == t.get_text() for t in rss.texts)
    finally:
        plt.close(fig)
