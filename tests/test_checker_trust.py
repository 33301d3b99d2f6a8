"""soak-check can be trusted: nothing judged is never a pass, warnings warn, re-judging is
read-only, bad answers and bad flags fail cleanly, every topology is kept, alerts count, and
the end of the window is judged. A real Prometheus over backfilled histories (checker.testing).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from xml.etree import ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import checker.cli
from alerts.gates import GATES, Gate
from alerts.profiles import get_profile
from checker.api import GateResult, RunMeta, TopologyVerdict, evaluate, max_for_secs
from checker.cli import main
from checker.promapi import Prom
from checker.report import write_reports
from checker.testing import Fault, History, backfill, backfilled_prometheus
from soakcore.errors import EvaluationError
from soakcore.services import Service, free_port, start_prometheus

START = 1767225600.0          # 2026-01-01T00:00:00Z
DURATION = 900.0
UNTIL = START + DURATION
DRAIN = 60.0                  # data the runner keeps scraping after the window

NOW0 = float(int(time.time()))   # a run that ended just now, for the live wait

# Whatever the gates are: one critical and (if any) one warning-severity gate whose alert fires.
CRITICAL = next(g for g in GATES if g.severity == "critical")
WARNING = next((g for g in GATES if g.severity == "warning"), None)
INSTANT = next(g for g in GATES if g.severity == "critical" and g.for_ == "0s")   # fires without `for`

HISTORIES = [
    History("fine", "triad", ("triad",), START, DURATION),
    History("fine", "triad_distributed", ("sequencer", "storage", "observer"), START, DURATION),
    History("odd_profile", "triad", ("triad",), START, DURATION, profile_label="soak_bespoke"),
    # The process goes down 10 s before the end of the window and stays down through the drain.
    History("late_breach", "triad", ("triad",), START, DURATION + DRAIN, step=5.0,
            faults=(Fault("down", DURATION - 10, DURATION + DRAIN + 5, "triad"),)),
    History("recent", "triad", ("triad",), NOW0 - 1800, 1800.0),
    # An alert of a gate without `for` that fires 5 s, or 25 s, after the window's end.
    History("end_alert", "triad", ("triad",), START, DURATION + DRAIN, step=5.0, rules_evaluated=True,
            faults=(Fault("alert", DURATION + 5, DURATION + DRAIN + 5, INSTANT.alert),)),
    History("late_alert", "triad", ("triad",), START, DURATION + DRAIN, step=5.0, rules_evaluated=True,
            faults=(Fault("alert", DURATION + 25, DURATION + DRAIN + 5, INSTANT.alert),)),
    History("nan_threshold", "triad", ("triad",), START, DURATION,
            thresholds=(("max_lag_p95", math.nan), ("max_stall_secs", math.inf))),
    History("alerted", "triad", ("triad",), START, DURATION, rules_evaluated=True,
            faults=(Fault("alert", 300, 400, CRITICAL.alert),)),
    *([History("alerted_warning", "triad", ("triad",), START, DURATION, rules_evaluated=True,
               faults=(Fault("alert", 300, 400, WARNING.alert),))] if WARNING else []),
]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    base = tmp_path_factory.mktemp("checker-trust-prom")
    with backfilled_prometheus(base, HISTORIES) as prom:
        yield prom


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


# 4. Fails cleanly -----------------------------------------------------------------------

class Answers:
    """A tiny real HTTP server on 127.0.0.1 that answers every request with one body."""

    def __init__(self) -> None:
        self.status, self.body, self.extra_length, self.content_type = 200, b"", 0, "application/json"
        answers = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                self.send_response(answers.status)
                self.send_header("Content-Type", answers.content_type)
                self.send_header("Content-Length", str(len(answers.body) + answers.extra_length))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(answers.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, body: bytes, status: int = 200, extra_length: int = 0, content_type: str = "application/json") -> None:
        self.status, self.body, self.extra_length, self.content_type = status, body, extra_length, content_type


@pytest.fixture(scope="module")
def answers() -> Iterator[Answers]:
    server = Answers()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


RUN_INFO = {"metric": {"run_id": "r", "topology": "triad", "profile": "soak_smoke"}, "value": [UNTIL, "1"]}
NOT_PROMETHEUS = {
    "data without result": (b'{"status":"success","data":{}}', 200, 0),
    "matrix for an instant query": (b'{"status":"success","data":{"resultType":"matrix","result":[]}}', 200, 0),
    "string result type": (b'{"status":"success","data":{"resultType":"string","result":[1,"x"]}}', 200, 0),
    "non-numeric value": (json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {**RUN_INFO, "value": [UNTIL, "lots"]}]}}).encode(), 200, 0),
    "labels not strings": (json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"run_id": 5}, "value": [UNTIL, "1"]}]}}).encode(), 200, 0),
    "html page": (b"<!doctype html><html><body>Sign in</body></html>", 200, 0),
    "truncated body": (b'{"status":"success","data":{"resultType":"vec', 200, 500),
    "http 500 text": (b"internal server error", 500, 0),
    "http 503 json error": (b'{"status":"error","errorType":"unavailable","error":"too busy"}', 503, 0),
    "json list": (b"[]", 200, 0),
    "json null": (b"null", 200, 0),
    "empty body": (b"", 200, 0),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, 200, 0),
}


@pytest.mark.parametrize("case", sorted(NOT_PROMETHEUS))
def test_an_answer_that_is_not_what_prometheus_sends_exits_3_with_one_line(
        case: str, answers: Answers, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body, status, extra = NOT_PROMETHEUS[case]
    answers.serve(body, status, extra)
    code, _, err = cli(capsys, "--prometheus", answers.url, "--since", str(START), "--until", str(UNTIL),
                       "--out", str(tmp_path), "--no-wait")
    line = one_line(err)
    assert code == 3, err
    assert line.startswith("soak-check: error: Prometheus " + answers.url), line
    assert not list(tmp_path.iterdir())


def test_a_valid_run_list_followed_by_bad_answers_still_exits_3(
        answers: Answers, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Discovery succeeds (a run is there), then the same vector comes back for range queries.
    answers.serve(json.dumps({"status": "success", "data": {"resultType": "vector", "result": [RUN_INFO]}}).encode())
    code, _, err = cli(capsys, "--prometheus", answers.url, "--since", str(START), "--until", str(UNTIL),
                       "--out", str(tmp_path), "--no-wait")
    assert code == 3, err
    assert "resultType 'vector' where a range query gives matrix" in one_line(err)


@pytest.mark.parametrize(("flag", "value"), [
    ("--since", "nan"), ("--since", "inf"), ("--since", "-inf"), ("--since", "-5"), ("--since", "1e400"),
    ("--since", "0"), ("--since", "99999999999d"), ("--until", "nan"), ("--until", "infinity"),
    ("--since", "0001-01-01T00:00:00Z"),
])
def test_a_time_that_is_not_a_time_exits_2(flag: str, value: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    args = {"--prometheus": "http://127.0.0.1:1", "--since": str(START), "--until": str(UNTIL), flag: value}
    code, _, err = cli(capsys, *(f"{k}={v}" for k, v in args.items()), "--out", str(tmp_path))
    assert code == 2, err
    assert one_line(err).startswith(f"soak-check: error: {flag} ")


@pytest.mark.parametrize(("url", "hint"), [
    ("127.0.0.1:9090", "http://127.0.0.1:9090"), ("localhost:9090", "http://localhost:9090"),
    ("prometheus", "http://prometheus"), ("ftp://host/", ""), ("http://", ""), ("http://host:port", ""),
])
def test_a_prometheus_url_without_http_exits_2_suggesting_it(url: str, hint: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "--prometheus", url, "--since", "30m", "--out", str(tmp_path))
    assert code == 2, err
    line = one_line(err)
    assert line.startswith("soak-check: error: --prometheus") and hint in line



def _two_block_run(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A run folder whose TSDB holds the run's block and an older, unrelated one."""
    run_dir = tmp_path / "run"
    backfill([History("fine", "triad", ("triad",), START, 300.0),
              History("older", "triad", ("triad",), START - 6 * 3600, 300.0)], run_dir / "prometheus")
    blocks = {json.loads((b / "meta.json").read_text())["minTime"] / 1000: b
              for b in (run_dir / "prometheus").iterdir() if (b / "meta.json").exists()}
    (run_dir / "run_config.json").write_text(json.dumps({"run_id": "fine", "windows": {"triad": [START, START + 300]}}))
    return run_dir, blocks[START], blocks[START - 6 * 3600]


@pytest.mark.parametrize("damage", ["meta", "chunks"])
def test_a_damaged_tsdb_block_is_reported_in_the_verdict_and_on_stderr(
        damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, _, older = _two_block_run(tmp_path)
    if damage == "meta":     # Prometheus would skip this block with a log line only
        (older / "meta.json").write_text("{ not json")
    else:                    # overwritten with something else
        (older / "chunks" / "000001").write_bytes(b"\0" * 64)
    code, _, err = cli(capsys, "--run-dir", str(run_dir), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert f"soak-check: warning: TSDB block {older.name} is damaged" in err
    notes = json.loads((tmp_path / "out" / "summary.json").read_text())["notes"]
    assert any(older.name in n for n in notes)
    assert older.name in (tmp_path / "out" / "summary.md").read_text()


def test_a_tsdb_block_prometheus_rejects_is_dropped_and_reported(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, _, older = _two_block_run(tmp_path)
    index = bytearray((older / "index").read_bytes())
    index[-8] ^= 0xFF          # the table of contents' checksum: only Prometheus sees it
    (older / "index").write_bytes(bytes(index))
    code, _, err = cli(capsys, "--run-dir", str(run_dir), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert f"TSDB block {older.name} rejected by Prometheus" in err


def test_a_damaged_wal_is_reported_from_prometheus_own_log(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # A short run lives in the WAL, not in blocks: let a real Prometheus write one (it scrapes
    # itself for a few seconds), then damage it. Prometheus repairs it and says so in its log.
    run_dir, _, _ = _two_block_run(tmp_path)
    port = free_port()
    (tmp_path / "scrape.yml").write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n"
                                         f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
    prom = start_prometheus(tmp_path / "scrape.yml", run_dir / "prometheus", port=port,
                            extra_args=("--storage.tsdb.retention.time=100y",))
    wal = run_dir / "prometheus" / "wal"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(f.stat().st_size for f in wal.glob("0*")) < 4000:
            time.sleep(0.3)
    finally:
        prom.stop()
    segment = max((run_dir / "prometheus" / "wal").glob("0*"), key=lambda f: f.stat().st_size)
    data = bytearray(segment.read_bytes())
    assert len(data) > 1000
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    segment.write_bytes(bytes(data))
    code, _, err = cli(capsys, "--run-dir", str(run_dir), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert "Prometheus on the saved TSDB" in err and "corrupt" in err.lower()
    notes = json.loads((tmp_path / "out" / "summary.json").read_text())["notes"]
    assert any("corrupt" in n.lower() for n in notes)


def test_a_run_whose_only_block_is_damaged_exits_3_naming_it(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, block, _ = _two_block_run(tmp_path)
    (block / "meta.json").write_text("")
    code, _, err = cli(capsys, "--run-dir", str(run_dir), "--out", str(tmp_path / "out"))
    assert code == 3, err
    assert "nothing to judge" in err and block.name in err and "damaged" in err
    assert not (tmp_path / "out" / "summary.json").exists()


# Any answer at all: a clean EvaluationError (exit 3 from the CLI) or a valid parse --------

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                     max_leaves=12)
_number_text = st.sampled_from(["1", "0", "-2.5", "NaN", "+Inf", "-Inf", "1e308", "x", "", "0x10", " 1 "])
_sample = st.lists(st.one_of(st.floats(), st.integers(), _number_text, _json), min_size=0, max_size=3)
_series = st.fixed_dictionaries({"metric": st.one_of(st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3), _json)},
                                optional={"value": _sample, "values": st.lists(_sample, max_size=3) | _json})
_near_prometheus = st.fixed_dictionaries({
    "status": st.sampled_from(["success", "error", "", None]),
    "data": st.one_of(st.fixed_dictionaries({
        "resultType": st.sampled_from(["vector", "matrix", "scalar", "string", None, 3]),
        "result": st.one_of(st.lists(_series, max_size=3), _sample, _json)}), _json),
}, optional={"errorType": _json, "error": _json, "warnings": _json})
_bodies = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode()),
    _near_prometheus.map(lambda v: json.dumps(v).encode()),
    _near_prometheus.map(lambda v: json.dumps(v).encode()[: len(json.dumps(v)) // 2]),
)
_answers = st.tuples(_bodies, st.sampled_from([200, 200, 200, 204, 400, 404, 422, 500, 503]),
                     st.sampled_from([0, 0, 0, 7]))
FUZZ = settings(max_examples=int(os.environ.get("SOAK_FUZZ_EXAMPLES", "250")), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(answer=_answers)
def test_fuzz_any_http_answer_is_a_clean_evaluation_error_or_a_valid_parse(answers: Answers,
                                                                          answer: tuple[bytes, int, int]) -> None:
    body, status, extra = answer
    answers.serve(body, status, extra)
    prom = Prom(answers.url, timeout=5)
    try:
        rows = prom.instant("up", UNTIL)
        assert all(isinstance(lab, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in lab.items())
                   and isinstance(value, float) for lab, value in rows)
    except EvaluationError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600
    try:
        series = prom.range("up", START, UNTIL, 15)
        assert all(isinstance(lab, dict) and all(isinstance(t, float) and math.isfinite(t) and isinstance(v, float)
                                                 for t, v in points) for lab, points in series)
    except EvaluationError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600
    try:
        assert prom.version() is None or isinstance(prom.version(), str)
    except EvaluationError:
        pass
    assert 0 < prom.evaluation_interval() <= 3600     # a hint only: never raises


@FUZZ
@given(answer=_answers)
def test_fuzz_soak_check_on_any_constant_http_answer_exits_3_with_one_line(
        answers: Answers, tmp_path: Path, capsys: pytest.CaptureFixture[str], answer: tuple[bytes, int, int]) -> None:
    # One answer for every query can never be a whole soak (an instant vector and a range
    # matrix cannot both come back), so the only right outcome is exit 3.
    body, status, extra = answer
    answers.serve(body, status, extra)
    code, _, err = cli(capsys, "--prometheus", answers.url, "--since", str(START), "--until", str(UNTIL),
                       "--out", str(tmp_path / "out"), "--no-wait")
    assert code == 3, err
    assert one_line(err).startswith("soak-check: error:"), err


# 5. Every topology kept, alerts count, strict JSON ------------------------------------------

def _no_nan(token: str) -> float:
    raise AssertionError(f"summary.json holds {token}: not JSON")


def read_strict(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(), parse_constant=_no_nan)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("profile", "code"), [("soak_smoke", 0), ("soak_endurance", 1)])
def test_re_judging_keeps_a_topology_without_data_as_insufficient_data(
        profile: str, code: int, prometheus: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run_dir(prometheus, tmp_path / "run", "fine",
                           {"triad": (START, UNTIL), "triad_distributed": (START - 7200, START - 3600)})
    got, _, err = cli(capsys, "--run-dir", str(run_dir), "--out", str(tmp_path / "out"), "--profile", profile)
    assert got == code, err
    assert "triad_distributed: no data in its window" in err
    doc = read_strict(tmp_path / "out" / "summary.json")
    tops = {t["topology"]: t for t in doc["topologies"]}
    assert list(tops) == ["triad", "triad_distributed"] and doc["totals"]["topology_count"] == 2   # run_config order
    ghost = tops["triad_distributed"]
    assert ghost["metric_gate"]["status"] == "insufficient_data"
    assert {g["status"] for g in ghost["gates"].values()} == {"insufficient_data"}
    assert set(ghost["gates"]) == {g.name for g in GATES}
    assert "## triad_distributed" in (tmp_path / "out" / "summary.md").read_text()


def test_an_alert_that_fired_while_the_gate_passed_is_a_failure_of_that_gate(
        prometheus: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v = evaluate(prometheus.url, START, UNTIL, run_id="alerted", topology="triad", profile=get_profile("soak_smoke"))
    gate = next(g for g in v.gates if g.alert == CRITICAL.alert)
    assert gate.status == "fail" and gate.note and "fired" in gate.note
    assert gate.first_failed_at is not None and START + 300 <= gate.first_failed_at <= START + 400
    assert any(CRITICAL.alert in d and "counted as a failure" in d for d in v.disagreements)
    code, _, err = cli(capsys, *window(prometheus, tmp_path, "--run-id", "alerted"))
    assert code == 1, err
    doc = read_strict(tmp_path / "summary.json")
    assert doc["topologies"][0]["gates"][CRITICAL.name]["outcome"] == "fail"
    assert "fired" in (tmp_path / "failures.md").read_text()


@pytest.mark.skipif(WARNING is None, reason="no warning-severity gate defined")
def test_an_alert_of_a_warning_gate_that_fired_stays_a_warning(
        prometheus: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert WARNING is not None
    code, _, err = cli(capsys, *window(prometheus, tmp_path, "--run-id", "alerted_warning"))
    assert code == 0, err
    gate = read_strict(tmp_path / "summary.json")["topologies"][0]["gates"][WARNING.name]
    assert (gate["status"], gate["outcome"]) == ("fail", "warn") and "fired" in gate["note"]
    assert f"WARN {WARNING.alert}" in err


def test_a_nan_or_infinite_threshold_is_not_judged_and_never_reaches_summary_json_as_nan(
        prometheus: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, *window(prometheus, tmp_path, "--run-id", "nan_threshold"))
    doc = read_strict(tmp_path / "summary.json")        # strict JSON, whatever the numbers
    gates = doc["topologies"][0]["gates"]
    weak = {g.name for g in GATES if g.threshold_key in ("max_lag_p95", "max_stall_secs")}
    assert weak and all(gates[name]["status"] == "insufficient_data" for name in weak)
    assert all("cannot fail" in gates[name]["note"] for name in weak)
    assert doc["thresholds"]["max_lag_p95"] is None
    assert code == 0 and "insufficient data for" in err      # smoke: insufficient data warns


# 6. The whole window is judged --------------------------------------------------------------

def test_a_breach_that_begins_10s_before_the_end_is_judged_when_the_drain_was_scraped(prometheus: Service) -> None:
    profile = get_profile("soak_smoke")
    blind = evaluate(prometheus.url, START, UNTIL, run_id="late_breach", topology="triad", profile=profile)
    seen = evaluate(prometheus.url, START, UNTIL, run_id="late_breach", topology="triad", profile=profile,
                    horizon=UNTIL + DRAIN, scrape_interval=5)
    newly = {g.name for g in seen.gates if g.status == "fail"} - {g.name for g in blind.gates if g.status == "fail"}
    by_name = {g.name: g for g in GATES}
    # The process went down 10 s before the end: gates with a `for` longer than that could
    # not see it last inside the window, and see it now.
    assert newly and all(by_name[n].for_ != "0s" for n in newly), newly
    assert blind.status == "ok" and seen.status == "failed"
    for g in seen.gates:
        if g.name in newly:
            assert g.first_failed_at is not None and UNTIL - 10 < g.first_failed_at <= UNTIL + 30 + 5
            assert g.evaluated_at is not None and UNTIL < g.evaluated_at <= UNTIL + DRAIN
    assert seen.judged_until is not None and UNTIL < seen.judged_until <= UNTIL + DRAIN
    # A breach that begins after the window is not the window's: nothing past the horizon.
    same = evaluate(prometheus.url, START, UNTIL - 20, run_id="late_breach", topology="triad", profile=profile,
                    horizon=UNTIL + DRAIN, scrape_interval=5)
    assert not {g.name for g in same.gates if g.status == "fail"} & newly


def test_past_the_end_only_data_that_exist_are_judged(prometheus: Service) -> None:
    # "fine" ends at UNTIL: a horizon far beyond changes nothing (no values made up past the data).
    profile = get_profile("soak_smoke")
    v = evaluate(prometheus.url, START, UNTIL, run_id="fine", topology="triad", profile=profile, horizon=UNTIL + 3600)
    assert v.judged_until == UNTIL and all(g.evaluated_at == UNTIL for g in v.gates)
    assert v.status == "ok"


def test_soak_check_on_a_live_prometheus_judges_the_drain_after_the_window(
        prometheus: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, *window(prometheus, tmp_path, "--run-id", "late_breach"))
    assert code == 1, err
    assert "SoakProcess" in (tmp_path / "failures.md").read_text() or "fail" in err.lower()


@pytest.mark.parametrize(("horizon", "code"), [(None, 0), (UNTIL + DRAIN, 1)])
def test_re_judging_uses_the_drain_the_run_config_records(
        horizon: float | None, code: int, prometheus: Service, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    span = (START, UNTIL) if horizon is None else (START, UNTIL, horizon)
    run_dir = make_run_dir(prometheus, tmp_path / "run", "late_breach", {"triad": span})  # type: ignore[dict-item]
    got, _, err = cli(capsys, "--run-dir", str(run_dir), "--out", str(tmp_path / "out"))
    assert got == code, err


def test_a_window_ending_now_waits_for_the_longest_for_unless_told_not_to(
        prometheus: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # This Prometheus scrapes and evaluates every 1m (its default): ready at until + max for + 60 s.
    until = time.time() - max_for_secs() - 60 + 6.0
    args = ("--prometheus", prometheus.url, "--since", str(until - 300), "--until", str(until), "--run-id", "recent")
    t0 = time.monotonic()
    code, _, err = cli(capsys, *args, "--out", str(tmp_path / "waited"))
    waited = time.monotonic() - t0
    assert code == 0, err
    assert err.startswith("soak-check: waiting ") and "--no-wait" in err and waited >= 5.0
    # The same judging without the wait: about 6 s quicker, however loaded the machine is.
    t0 = time.monotonic()
    code, _, err = cli(capsys, *args, "--out", str(tmp_path / "at-once"), "--no-wait")
    assert code == 0 and "waiting" not in err and time.monotonic() - t0 < waited - 3.0


def test_any_cli_exits_3_on_an_unexpected_exception_with_the_traceback_in_a_temporary_log() -> None:
    # At process level, in a command that has no folder of its own: the log is a temp file.
    done = subprocess.run([sys.executable, "-c", "from soakcore.errors import run_cli\n"
                           "def body():\n    return {}['missing']\nrun_cli('soak-demo', body)"],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 3
    line = one_line(done.stderr)
    assert line.startswith("soak-demo: internal error: KeyError: 'missing' (traceback in ")
    log = Path(line.rsplit("traceback in ", 1)[1].rstrip(")"))
    try:
        assert "Traceback" in log.read_text() and "in body" in log.read_text()
    finally:
        log.unlink()


@pytest.mark.parametrize(("run_id", "counted"), [("end_alert", True), ("late_alert", False)])
def test_an_alert_counts_only_if_it_fired_within_its_gates_for_of_the_end(
        run_id: str, counted: bool, prometheus: Service) -> None:
    # Scrapes every 5 s: the limit is the end + 0 s `for` + 2 scrapes = 10 s.
    v = evaluate(prometheus.url, START, UNTIL, run_id=run_id, topology="triad", profile=get_profile("soak_smoke"),
                 horizon=UNTIL + DRAIN, scrape_interval=5)
    gate = next(g for g in v.gates if g.alert == INSTANT.alert)
    assert [a["alertname"] for a in v.alerts_fired] == [INSTANT.alert]
    assert (gate.status == "fail") is counted
    if not counted:
        assert any("after the window" in d and "not counted" in d for d in v.disagreements)
