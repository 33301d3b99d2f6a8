"""soak-check can be trusted: nothing judged is never a pass, warnings warn, re-judging is
read-only, bad answers and bad flags fail cleanly, every topology is kept, alerts count, and
the end of the window is judged. A real Prometheus over backfilled histories (checker.testing).
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Iterator
from xml.etree import ElementTree as ET

import pytest

import checker.cli
from alerts.gates import GATES, Gate
from alerts.profiles import get_profile
from checker.api import GateResult, RunMeta, TopologyVerdict
from checker.cli import main
from checker.report import write_reports
from checker.testing import Fault, History, backfill
from soakcore.services import Service, start_prometheus

START = 1767225600.0          # 2026-01-01T00:00:00Z
DURATION = 900.0
UNTIL = START + DURATION
DRAIN = 60.0                  # data the runner keeps scraping after the window

HISTORIES = [
    History("fine", "triad", ("triad",), START, DURATION),
    History("fine", "triad_distributed", ("sequencer", "storage", "observer"), START, DURATION),
    History("odd_profile", "triad", ("triad",), START, DURATION, profile_label="soak_bespoke"),
    # The process goes down 10 s before the end of the window and stays down through the drain.
    History("late_breach", "triad", ("triad",), START, DURATION + DRAIN, step=5.0,
            faults=(Fault("down", DURATION - 10, DURATION + DRAIN + 5, "triad"),)),
    History("nan_threshold", "triad", ("triad",), START, DURATION,
            thresholds=(("max_lag_p95", math.nan), ("max_stall_secs", math.inf))),
    History("alerted", "triad", ("triad",), START, DURATION, rules_evaluated=True,
            faults=(Fault("alert", 300, 400, "SoakConsensusStalled"),)),
]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    base = tmp_path_factory.mktemp("checker-trust-prom")
    backfill(HISTORIES, base / "data")
    (base / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
    prom = start_prometheus(base / "prometheus.yml", base / "data",
                            extra_args=("--storage.tsdb.retention.time=100y",))
    try:
        yield prom
    finally:
        prom.stop()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """soak-check in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def window(prom: Service, out: Path, *extra: str, since: float = START, until: float = UNTIL) -> list[str]:
    return ["--prometheus", prom.url, "--since", str(since), "--until", str(until), "--out", str(out),
            "--no-wait", *extra]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# 1. Nothing judged is never a pass ------------------------------------------------------

def test_an_unknown_run_id_exits_3_naming_what_it_looked_for_and_the_runs_it_found(
        prometheus: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, *window(prometheus, tmp_path, "--run-id", "no_such_run", "--profile", "soak_smoke"))
    line = one_line(err)
    assert code == 3, err
    assert "no_such_run" in line and "found run ids" in line and "fine (triad, triad_distributed)" in line
    assert not (tmp_path / "summary.json").exists()


def test_a_window_that_misses_the_run_exits_3_saying_nothing_is_there(
        prometheus: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, *window(prometheus, tmp_path, "--run-id", "fine",
                                       since=START - 7200, until=START - 3600))
    assert code == 3, err
    assert "found no soak_run_info" in one_line(err)


def test_an_unknown_profile_label_exits_3_instead_of_judging_under_smoke(
        prometheus: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, *window(prometheus, tmp_path / "own", "--run-id", "odd_profile"))
    assert code == 3, err
    assert "soak_bespoke" in one_line(err) and "--profile" in err
    # Told which profile to use, the run is judged.
    code, _, err = cli(capsys, *window(prometheus, tmp_path / "told", "--run-id", "odd_profile",
                                       "--profile", "soak_smoke"))
    assert code == 0, err


def test_an_unexpected_exception_exits_3_with_one_line_naming_the_traceback_log(
        prometheus: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise ZeroDivisionError("a bug deep inside")

    monkeypatch.setattr(checker.cli, "evaluate_window", broken)
    code, _, err = cli(capsys, *window(prometheus, tmp_path, "--run-id", "fine"))
    line = one_line(err)
    assert code == 3
    assert line.startswith("soak-check: internal error: ZeroDivisionError: a bug deep inside (traceback in ")
    log = Path(line.rsplit("traceback in ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path and "Traceback" in log.read_text() and "def broken" not in line
    assert "ZeroDivisionError" in log.read_text()


# 2. Warnings warn -----------------------------------------------------------------------

def _verdict_with(*gates: GateResult, profile: str = "soak_release") -> TopologyVerdict:
    return TopologyVerdict("synthetic", "triad", START, UNTIL, get_profile(profile), gates, {}, (), ())


def _result(gate: Gate, status: str, severity: str, value: float | None = 1.0) -> GateResult:
    return GateResult(gate.name, gate.alert, severity, status, value, 0.5, gate.value, "triad",  # type: ignore[arg-type]
                      START + 100 if status == "fail" else None)


def test_a_failed_warning_gate_warns_in_every_output_and_never_changes_the_exit_code(tmp_path: Path) -> None:
    # Whatever the gates are, one of them failing at warning severity beside passing critical ones.
    warned, *others = GATES
    v = _verdict_with(_result(warned, "fail", "warning"), *(_result(g, "pass", "critical", 0.0) for g in others))
    code = write_reports(tmp_path, [v], RunMeta(run_dir=None, profile=v.profile))
    assert code == 0
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["overall_status"] == "ok" and not (tmp_path / "failures.md").exists()
    assert doc["topologies"][0]["gates"][warned.name]["outcome"] == "warn"
    row = next(line for line in (tmp_path / "summary.md").read_text().splitlines() if f"| {warned.alert} |" in line)
    assert "| WARN |" in row and "FAIL" not in (tmp_path / "summary.md").read_text()
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    case = suite.find(f"testcase[@name='{warned.name}']")
    assert case is not None and case.find("failure") is None
    assert (case.findtext("system-out") or "").startswith("WARN")
    assert {p.get("name"): p.get("value") for p in case.iter("property")}["outcome"] == "warn"
    # The same result at critical severity is a failure everywhere.
    v = _verdict_with(_result(warned, "fail", "critical"), *(_result(g, "pass", "critical", 0.0) for g in others))
    assert write_reports(tmp_path / "critical", [v], RunMeta(run_dir=None, profile=v.profile)) == 1
    assert (tmp_path / "critical" / "junit.xml").read_text().count("<failure") == 1


# 3. Re-judging is read-only -------------------------------------------------------------

def make_run_dir(prom: Service, path: Path, run_id: str, windows: dict[str, tuple[float, float]]) -> Path:
    """A finished run's folder: the saved TSDB, run_config.json and the run's own verdict files."""
    data = Path(prom.log_path).parent / "data"
    shutil.copytree(data, path / "prometheus", ignore=shutil.ignore_patterns("lock", "wal", "chunks_head"))
    (path / "run_config.json").write_text(json.dumps({"run_id": run_id, "profile": "soak_smoke",
                                                      "windows": {k: list(v) for k, v in windows.items()}}))
    for name in OWN_VERDICT_FILES:
        (path / name).write_text(f"the run's own {name}\n")
    return path


OWN_VERDICT_FILES = ("summary.json", "summary.md", "failures.md", "timeline.csv", "junit.xml")


def test_re_judging_writes_a_new_folder_and_never_touches_the_runs_own_verdict_files(
        prometheus: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run_dir(prometheus, tmp_path / "20260101-000000", "fine", {"triad": (START, UNTIL)})
    code, out, err = cli(capsys, "--run-dir", str(run_dir))
    assert code == 0, err
    for name in OWN_VERDICT_FILES:
        assert (run_dir / name).read_text() == f"the run's own {name}\n"
    (rejudged,) = run_dir.glob("rejudge-*")
    assert rejudged.name.endswith("Z") and str(rejudged / "summary.md") in out
    assert json.loads((rejudged / "summary.json").read_text())["topologies"][0]["topology"] == "triad"
    # A second re-judging in the same second gets its own folder; --out is honoured.
    assert cli(capsys, "--run-dir", str(run_dir))[0] == 0
    assert len(list(run_dir.glob("rejudge-*"))) == 2
    assert cli(capsys, "--run-dir", str(run_dir), "--out", str(tmp_path / "elsewhere"))[0] == 0
    assert (tmp_path / "elsewhere" / "summary.json").exists()


@pytest.mark.parametrize("extra", [
    ["--prometheus", "http://127.0.0.1:9090"],
    ["--since", "30m"],
    ["--until", "5m"],
    ["--run-id", "fine"],
    ["--no-wait"],
    ["--out", "{run_dir}"],
    ["--topology", "nope"],
])
def test_re_judging_refuses_flags_it_would_ignore_or_that_would_overwrite_the_run(
        extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "prometheus").mkdir(parents=True)
    (run_dir / "run_config.json").write_text(json.dumps({"run_id": "fine", "windows": {"triad": [START, UNTIL]}}))
    code, _, err = cli(capsys, "--run-dir", str(run_dir), *(e.format(run_dir=run_dir) for e in extra))
    assert code == 2, err
    assert one_line(err).startswith("soak-check: error:") and extra[0] in err
    assert sorted(p.name for p in run_dir.iterdir()) == ["prometheus", "run_config.json"]
