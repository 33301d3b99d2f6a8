"""soak-check against a real Prometheus over backfilled histories with known faults.

One Prometheus per module holds every history (one run_id each); the checker judges each
run's window as it would an archived soak.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from alerts.profiles import get_profile
from conftest import assert_golden
from checker.api import TopologyVerdict, evaluate
from checker.cli import main
from checker.failures import with_run_labels
from checker.promapi import Prom
from checker.testing import MiB, Fault, History, backfilled_prometheus
from soakcore.errors import EvaluationError
from soakcore.services import Service, free_port

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "checker"
START = 1767225600.0          # 2026-01-01T00:00:00Z: fixed, so outputs are golden-testable
DURATION = 1800.0
UNTIL = START + DURATION
DIST = ("sequencer", "storage", "observer")

HISTORIES = [
    History("clean", "triad_distributed", DIST, START, DURATION),
    History("stall", "triad", ("triad",), START, DURATION, faults=(Fault("stall", 900, 1300),)),
    History("stall_near_pause", "triad", ("triad",), START, DURATION,
            faults=(Fault("pause", 450, 500, "triad"), Fault("stall", 600, 1100))),
    History("paused", "triad_distributed", DIST, START, DURATION, faults=(Fault("pause", 900, 1300, "sequencer"),)),
    History("lag", "triad_distributed", DIST, START, DURATION, faults=(Fault("lag", 600, 1200, "storage", 20),)),
    History("lag_paused", "triad_distributed", DIST, START, DURATION,
            faults=(Fault("lag", 600, 1200, "storage", 20), Fault("pause", 600, 1200, "storage"))),
    History("fork_paused", "triad", ("triad",), START, DURATION,
            faults=(Fault("fork", 1000, 1001), Fault("pause", 900, 1200, "triad"))),
    History("regression", "triad", ("triad",), START, DURATION, faults=(Fault("regression", 1000, 1001, "triad"),)),
    History("fork", "triad", ("triad",), START, DURATION, faults=(Fault("fork", 1000, 1001),)),
    History("distfs", "triad", ("triad",), START, DURATION, faults=(Fault("distfs", 600, 1800, "triad", 8),)),
    History("invariant", "triad", ("triad",), START, DURATION, faults=(Fault("invariant", 1000, 1100, "triad"),)),
    History("crash", "triad", ("triad",), START, DURATION, faults=(Fault("crash", 1000, 1001, "triad"),)),
    History("memory", "triad", ("triad",), START, DURATION,
            faults=(Fault("memory", 300, 1800, "triad", 1024 * MiB),)),
    History("reports_missing", "triad", ("triad",), START, DURATION,
            faults=(Fault("reports_missing", 900, 1300, "triad"),)),
    History("empty", "triad", ("triad",), START, DURATION, with_data=False),
    History("alerted", "triad", ("triad",), START, DURATION, rules_evaluated=True,
            faults=(Fault("alert", 900, 1000, "SoakConsensusStalled"),)),
]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    base = tmp_path_factory.mktemp("checker-prom")
    with backfilled_prometheus(base, HISTORIES) as prom:
        yield prom


_VERDICTS: dict[tuple[str, str, str], TopologyVerdict] = {}


def judge(prom: Service, run_id: str, profile: str = "soak_smoke") -> TopologyVerdict:
    """The verdict on one history; memoised per Prometheus, as several tests look at one run."""
    key = (prom.url, run_id, profile)
    if key not in _VERDICTS:
        topology = next(h.topology for h in HISTORIES if h.run_id == run_id)
        _VERDICTS[key] = evaluate(prom.url, START, UNTIL, run_id=run_id, topology=topology,
                                  profile=get_profile(profile))
    return _VERDICTS[key]


def failing(v: TopologyVerdict) -> set[str]:
    return {g.name for g in v.gates if g.status == "fail"}


def check_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The CLI's exit code and stderr, run in this process (no interpreter start-up)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return int(exited.value.code or 0), capsys.readouterr().err


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "checker", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def window(prom: Service, run_id: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return check("--prometheus", prom.url, "--since", str(START), "--until", str(UNTIL),
                 "--run-id", run_id, "--out", str(out), *extra)


@pytest.mark.parametrize("run_id", ["clean", "paused", "lag_paused"])
def test_a_healthy_history_passes_every_gate_even_with_faults_inside_chaos_windows(
        prometheus: Service, run_id: str) -> None:
    v = judge(prometheus, run_id)
    assert {g.name: g.status for g in v.gates if g.status != "pass" and g.applicable} == {}
    assert v.status == "ok"


@pytest.mark.parametrize(("run_id", "gate", "node"), [
    ("stall", "consensus_stalled", None),
    ("lag", "consensus_lag_high", "storage"),
    ("regression", "committed_height_regressed", "triad"),
    ("fork", "consensus_fork_detected", None),
    ("fork_paused", "consensus_fork_detected", None),     # never exempt, not even in a pause
    ("distfs", "distfs_failure_ratio_high", "triad"),
    ("invariant", "reward_invariant_violated", "triad"),
    ("crash", "process_crashed", "triad"),
    ("memory", "memory_growth_high", "triad"),
    ("reports_missing", "reports_missing", "triad"),
])
def test_a_known_fault_fails_exactly_its_gate_with_node_and_time(
        prometheus: Service, run_id: str, gate: str, node: str | None) -> None:
    v = judge(prometheus, run_id)
    # A store failing from minute 10 to the end fails the recent (windowed) ratio too.
    assert failing(v) == {gate} | ({"distfs_recent_failure_ratio_high"} if gate.startswith("distfs") else set())
    result = next(g for g in v.gates if g.name == gate)
    assert result.value is not None and result.value > result.threshold
    assert result.worst_node == node
    fault = next(h.faults[0] for h in HISTORIES if h.run_id == run_id)
    assert result.first_failed_at is not None
    assert START + fault.start <= result.first_failed_at <= START + fault.end + 600
    assert v.status == "failed"


def test_old_script_figures_exempt_fault_windows_and_use_nearest_rank(prometheus: Service) -> None:
    stalled, paused, lag = judge(prometheus, "stall"), judge(prometheus, "paused"), judge(prometheus, "lag")
    assert stalled.figures["max_stall_secs_observed"] >= 300
    assert paused.figures["max_stall_secs_observed"] < 60
    # storage lagged 20 blocks for 600 of 1800 s on one of three nodes: 1/9 of all samples,
    # above the 5 % tail, so the nearest-rank p95 over all nodes' samples is exactly 20.
    assert lag.figures["lag_p95"] == 20
    distfs = judge(prometheus, "distfs").figures
    assert distfs["distfs_failure_ratio"] == pytest.approx(distfs["distfs_failed_checks"] / distfs["distfs_total_checks"])
    assert distfs["distfs_failure_ratio"] > 0.25
    assert judge(prometheus, "invariant").figures["invariant_all_ok"] is False


def test_empty_data_is_insufficient_not_pass(prometheus: Service) -> None:
    smoke, endurance = judge(prometheus, "empty"), judge(prometheus, "empty", "soak_endurance")
    assert {g.status for g in smoke.gates} == {"insufficient_data"}
    assert (smoke.metric_gate_status, smoke.status) == ("insufficient_data", "ok")
    assert endurance.status == "failed"


def test_alerts_fired_are_listed_and_a_disagreement_with_the_gates_is_reported(prometheus: Service) -> None:
    v = judge(prometheus, "alerted")
    assert [a["alertname"] for a in v.alerts_fired] == ["SoakConsensusStalled"]
    # Prometheus saw the breach live: the gate fails, and says why.
    assert v.disagreements == ("SoakConsensusStalled: alert SoakConsensusStalled fired in the window while the "
                               "window's query passed: counted as a failure of the gate",)
    assert failing(v) == {"consensus_stalled"}
    # Backfilled history without rule evaluations: no alerts to compare, so no disagreement.
    assert judge(prometheus, "stall").disagreements == ()


OLD_KEYS = {"generated_at_utc", "run_dir", "profile", "scenario", "chaos_plan", "chaos_continuous",
            "duration_secs_per_topology", "thresholds", "artifacts", "totals", "gate_failures", "topologies",
            "overall_status"}
OLD_TOPOLOGY_KEYS = {"topology", "status", "process_status", "started_at", "ended_at", "notes", "report_samples",
                     "chaos_events", "metric_gate", "metrics"}
OLD_METRICS = {"max_stall_secs_observed", "lag_p95", "distfs_failure_ratio", "distfs_total_checks",
               "distfs_failed_checks", "invariant_all_ok"}


def _assert_old_summary_keys(doc: dict[str, object]) -> None:
    """Every key of the old script's summary is still there (existing playbooks read them)."""
    assert OLD_KEYS <= doc.keys()
    assert {"max_stall_secs", "max_lag_p95", "max_distfs_failure_ratio"} <= doc["thresholds"].keys()  # type: ignore[attr-defined]
    assert {"topology_count", "topology_ok_count", "topology_failed_count", "report_samples_total",
            "chaos_events_total"} <= doc["totals"].keys()  # type: ignore[attr-defined]
    for t in doc["topologies"]:  # type: ignore[attr-defined]
        assert OLD_TOPOLOGY_KEYS <= t.keys() and OLD_METRICS <= t["metrics"].keys()
        assert t["metric_gate"]["status"] in ("pass", "fail", "insufficient_data")


def _normalised(path: Path) -> str:
    doc = json.loads(path.read_text())
    doc["generated_at_utc"] = doc["run_dir"] = None
    doc["provenance"].update(versions=None, prometheus_url=None)
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _golden(name: str, text: str) -> None:
    assert_golden(GOLDEN / name, text)


def test_a_passing_window_exits_0_and_writes_golden_outputs(prometheus: Service, tmp_path: Path) -> None:
    done = window(prometheus, "clean", tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "failures.md").exists()
    assert (tmp_path / "plots" / "triad_distributed.png").stat().st_size > 10_000
    assert "<testsuite" in (tmp_path / "junit.xml").read_text()
    _assert_old_summary_keys(json.loads((tmp_path / "summary.json").read_text()))
    _golden("clean.summary.json", _normalised(tmp_path / "summary.json"))
    _golden("clean.timeline.csv", (tmp_path / "timeline.csv").read_text())


def test_a_failing_window_exits_1_with_a_reproducible_failure_report(prometheus: Service, tmp_path: Path) -> None:
    done = window(prometheus, "stall_near_pause", tmp_path)
    assert done.returncode == 1, done.stderr
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["overall_status"] == "failed"
    _assert_old_summary_keys(doc)
    assert doc["gate_failures"][0]["topology"] == "triad"
    failures = (tmp_path / "failures.md").read_text()
    query = doc["topologies"][0]["gates"]["consensus_stalled"]["query"]
    assert "SoakConsensusStalled" in failures and 'soak_consensus_stall_seconds{run_id="stall_near_pause",' \
        'topology="triad"}' in failures and with_run_labels(query, "stall_near_pause", "triad") in failures
    assert "| pause | triad |" in failures        # the chaos window shortly before the stall
    junit = (tmp_path / "junit.xml").read_text()
    assert junit.count("<failure") == 1
    # The end of the output: each gate's result in its unit, then the paths, summary.md first.
    tail = done.stdout.splitlines()
    assert tail[0].startswith("triad: FAILED (1 failed,"), done.stdout
    assert tail[1].split() [:2] == ["FAIL", "SoakConsensusStalled"] and "8m 10s (threshold 5m)" in tail[1]
    assert any(line.split()[:1] == ["pass"] for line in tail)
    assert tail.index("soak-check: FAILED") < len(tail) - 6
    paths = [line.strip() for line in tail[tail.index("soak-check: FAILED") + 1:]]
    assert paths[:3] == [str(tmp_path / n) for n in ("summary.md", "failures.md", "summary.json")]
    _golden("stall_near_pause.failures.md", failures.replace(prometheus.url, "http://PROMETHEUS")
            .replace(ROOT.as_uri(), "file:///CHECKOUT"))


def test_missing_data_warns_under_smoke_and_fails_under_endurance(prometheus: Service, tmp_path: Path) -> None:
    smoke = window(prometheus, "empty", tmp_path / "smoke", "--profile", "soak_smoke")
    assert smoke.returncode == 0 and "warning" in smoke.stderr and "insufficient data" in smoke.stderr
    endurance = window(prometheus, "empty", tmp_path / "endurance", "--profile", "soak_endurance")
    assert endurance.returncode == 1, endurance.stderr
    unknown = window(prometheus, "no_such_run", tmp_path / "none", "--profile", "soak_endurance")
    assert unknown.returncode == 3 and "no soak run" in unknown.stderr   # nothing judged: could not evaluate


def test_a_query_prometheus_rejects_is_an_evaluation_error_not_an_empty_result(prometheus: Service) -> None:
    with pytest.raises(EvaluationError, match="bad_data"):
        Prom(prometheus.url).instant("max_over_time(soak_process_up[", UNTIL)


def test_an_unreachable_prometheus_exits_3_with_the_reason(tmp_path: Path) -> None:
    done = check("--prometheus", f"http://127.0.0.1:{free_port()}", "--since", "30m", "--out", str(tmp_path))
    assert done.returncode == 3
    assert "unreachable" in done.stderr


@pytest.mark.parametrize("args", [
    ["--since", "30m"],
    ["--prometheus", "http://127.0.0.1:1", "--since", "yesterday-ish"],
    ["--prometheus", "http://127.0.0.1:1", "--since", "10m", "--until", "20m"],
    ["--prometheus", "http://127.0.0.1:1", "--since", "10m", "--profile", "soak_nope"],
])
def test_bad_arguments_exit_2_before_anything_is_queried(args: list[str], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check_in_process(capsys, *args, "--out", str(tmp_path))
    assert code == 2, err
    assert err.startswith("soak-check: error:")


def test_help_names_every_flag_with_its_default_examples_and_exit_codes(
        capsys: pytest.CaptureFixture[str]) -> None:
    from checker.cli import build_parser
    for action in build_parser()._actions:
        assert action.help, action.option_strings
        if action.option_strings != ["-h", "--help"]:
            assert "default" in action.help or "required" in action.help, action.option_strings
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for needle in ("examples:", "soak-check --run-dir", "exit codes: 0 pass, 1", "3 could not evaluate",
                   "90, 90s, 10m, 1h"):
        assert needle in text, needle


@pytest.mark.parametrize(("text", "ago"), [("90", 90), ("90s", 90), ("10m", 600), ("1h", 3600), ("1.5h", 5400),
                                          ("2d", 172800)])
def test_durations_are_accepted_in_every_form(text: str, ago: float) -> None:
    from checker.cli import parse_time
    assert parse_time(text, 2e9, "--since") == 2e9 - ago
    assert parse_time(str(START), 2e9, "--since") == START       # ten digits: unix seconds
    assert parse_time("2026-01-01T00:00:00Z", 2e9, "--since") == START


def test_a_bare_host_port_is_a_usage_error_that_suggests_http(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check_in_process(capsys, "--prometheus", "localhost:9090", "--since", "30m", "--out", str(tmp_path))
    assert code == 2 and "did you mean http://localhost:9090" in err


def test_a_finished_run_directory_is_judged_again_from_its_saved_tsdb(prometheus: Service, tmp_path: Path) -> None:
    run_dir = tmp_path / "20260101-000000"
    data = Path(prometheus.log_path).parent / "data"
    shutil.copytree(data, run_dir / "prometheus", ignore=shutil.ignore_patterns("lock", "wal", "chunks_head"))
    (run_dir / "run_config.json").write_text(json.dumps({
        "run_id": "stall", "profile": "soak_smoke", "topologies": [
            {"name": "triad", "started_at": START, "ended_at": UNTIL}]}))
    done = check("--run-dir", str(run_dir))
    assert done.returncode == 1, done.stderr
    (out,) = run_dir.glob("rejudge-*")      # a new folder: the run's own verdict files stay as they were
    doc = json.loads((out / "summary.json").read_text())
    assert doc["topologies"][0]["gates"]["consensus_stalled"]["status"] == "fail"
    assert (out / "failures.md").exists() and not (run_dir / "failures.md").exists()


@pytest.mark.parametrize("config", ['{"run_id": "stall"}', '{"topologies": [{"name": "triad"}]}', "not json"])
def test_a_run_directory_with_a_bad_run_config_exits_2_naming_the_file(
        config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "run_config.json").write_text(config)
    code, err = check_in_process(capsys, "--run-dir", str(tmp_path))
    assert code == 2, err
    assert err.startswith("soak-check: error:") and "run_config.json" in err
