"""soak-run refuses bad flags and bad plans with exit 2 before anything starts, and its
continuous chaos replays the old script's seeded MINSTD sequence."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from runner.cli import build_parser, main, resolve
from runner.plan import Continuous, continuous_events, load_plan
from runner.topology import TOPOLOGY_NODES
from soakcore.errors import UsageError

EVERY_ACTION_PLAN = ROOT / "examples" / "chaos-every-action.json"


def _soak_run(tmp: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[object, str]:
    """soak-run's main in this process (bad input fails before anything starts): exit code, stderr."""
    with pytest.raises(SystemExit) as exc:
        main(["--out-dir", str(tmp / "out"), *args])
    return exc.value.code, capsys.readouterr().err


def _plan(tmp: Path, events: list[dict[str, object]], suffix: str = ".json") -> Path:
    path = tmp / f"plan{suffix}"
    path.write_text(json.dumps({"meta": {"name": "t"}, "events": events}))
    return path


GOOD = {"id": "a", "at_sec": 5, "topology": "all", "node": "triad", "action": "restart", "down_secs": 1}


@pytest.mark.parametrize("args, message", [
    (["--max-distfs-failure-ratio", "1.5"], "within 0..1"),
    (["--duration-secs", "-3"], "--duration-secs: must be positive"),
    (["--poll-interval-secs", "0"], "--poll-interval-secs: must be positive"),
    (["--topologies", "triad,mesh"], "unknown topology 'mesh'"),
    (["--chaos-plan", "/nonexistent/plan.json"], "/nonexistent/plan.json: <file>: cannot read"),
    (["--chaos-continuous-enable", "--chaos-continuous-actions", "restart,explode"], "unknown action 'explode'"),
    (["--profile", "soak_forever"], "invalid choice"),
    (["--chaos-continuous-start-sec", "-1"], "--chaos-continuous-start-sec: must not be negative"),
    (["--prometheus-url", "localhost:9090"], "expected an http:// or https:// URL"),
    (["--threshold", "max_lag_p95=x"], "expected KEY=NUMBER"),
])
def test_bad_flags_exit_2_with_one_clear_line_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                    args: list[str], message: str) -> None:
    code, err = _soak_run(tmp_path, capsys, *args)
    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists(), "nothing may start (not even the run directory) on bad input"


@pytest.mark.parametrize("bad, field", [
    ({"action": "explode"}, "events[1].action"),
    ({"node": "storage"}, "events[1].node"),            # triad has no storage node
    ({"at_sec": -1}, "events[1].at_sec"),
    ({"topology": "ring"}, "events[1].topology"),
    ({"action": "pause", "duration_secs": 0}, "events[1].duration_secs"),
    ({"bogus": 1}, "events[1].bogus"),
    ({"id": "../escape"}, "events[1].id"),
])
def test_a_plan_with_a_bad_field_is_refused_whole_with_the_field_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: dict[str, object], field: str) -> None:
    plan = _plan(tmp_path, [GOOD, {**GOOD, "id": "b", "topology": "triad", **bad}])
    code, err = _soak_run(tmp_path, capsys, "--chaos-plan", str(plan))
    assert code == 2, err
    assert f"{plan}: {field}:" in err
    assert not (tmp_path / "out").exists()


def test_a_yaml_plan_is_read_like_the_json_one(tmp_path: Path) -> None:
    yaml_plan = tmp_path / "plan.yaml"
    yaml_plan.write_text("events:\n  - {id: a, at_sec: 5, topology: all, node: triad, action: restart, down_secs: 1}\n"
                         "  - {id: b, at_sec: 2, topology: triad, node: triad, action: disconnect, duration_secs: 3}\n")
    events = load_plan(yaml_plan, TOPOLOGY_NODES)
    assert [(e.id, e.at_sec, e.action) for e in events] == [("b", 2.0, "disconnect"), ("a", 5.0, "restart")]


def test_the_example_plan_uses_every_action_on_both_topologies() -> None:
    events = load_plan(EVERY_ACTION_PLAN, TOPOLOGY_NODES)
    for topology in TOPOLOGY_NODES:
        actions = {e.action for e in events if e.applies_to(topology)}
        assert actions == {"restart", "kill", "pause", "disconnect", "challenge_pressure"}, topology


def _old_script_sequence(seed: int, index: int, nodes: list[str], actions: list[str], n: int) -> list[tuple[str, str]]:
    """The old script's algorithm, written out independently: MINSTD, node first, then action."""
    state = (seed + (index + 1) * 104729) % 2147483647 or 1
    picks = []
    for _ in range(n):
        state = state * 48271 % 2147483647
        node = nodes[state % len(nodes)]
        state = state * 48271 % 2147483647
        picks.append((node, actions[state % len(actions)]))
    return picks


@pytest.mark.parametrize("seed", [0, 1, 7, 424242, 2**31])
def test_continuous_chaos_picks_the_same_nodes_and_actions_as_the_old_script(seed: int) -> None:
    cfg = Continuous(interval_secs=30, start_sec=30, actions=("restart", "pause", "kill"), seed=seed)
    for index, topology in enumerate(TOPOLOGY_NODES):
        nodes = TOPOLOGY_NODES[topology]
        events = continuous_events(cfg, topology, index, nodes, duration_secs=30 + 30 * 20)
        assert [(e.node, e.action) for e in events] == _old_script_sequence(seed, index, list(nodes),
                                                                             list(cfg.actions), 20)
        assert [e.at_sec for e in events] == [30.0 + 30 * i for i in range(20)]
        assert events == continuous_events(cfg, topology, index, nodes, duration_secs=30 + 30 * 20)


def test_continuous_chaos_respects_max_events_and_per_action_durations() -> None:
    cfg = Continuous(interval_secs=5, start_sec=1, max_events=3, actions=("restart", "pause"), seed=11,
                     restart_down_secs=1.5, pause_duration_secs=2.5)
    events = continuous_events(cfg, "triad_distributed", 1, TOPOLOGY_NODES["triad_distributed"], 1000)
    assert len(events) == 3
    for e in events:
        assert (e.down_secs, e.duration_secs) == ((1.5, 0.0) if e.action == "restart" else (0.0, 2.5))


def test_run_config_holds_every_resolved_setting_and_the_seed(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--out-dir", str(tmp_path), "--seed", "99", "--max-lag-p95", "4",
                                      "--chaos-continuous-enable", "--duration-secs", "90",
                                      "--chaos-plan", str(EVERY_ACTION_PLAN)])
    cfg = resolve(args, now=1_800_000_000)
    cfg.run_dir.mkdir(parents=True)
    cfg.save()
    doc = json.loads((cfg.run_dir / "run_config.json").read_text())
    assert doc["seed"] == 99 and doc["continuous"]["seed"] == 99
    assert doc["thresholds"]["max_lag_p95"] == 4.0
    assert doc["topologies"] == ["triad", "triad_distributed"] and doc["duration_secs"] == 90
    assert len(doc["plan_events"]) == len(load_plan(EVERY_ACTION_PLAN, TOPOLOGY_NODES))
    assert doc["run_id"] == cfg.run_dir.name


def test_the_wrapper_script_takes_the_old_flags_and_exits_2_on_a_bad_plan(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": ""}
    script = str(ROOT / "scripts" / "p2p-longrun-soak.sh")
    res = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30, cwd="/", env=env)
    assert res.returncode == 0 and "--chaos-continuous-seed" in res.stdout and "--enable-chaos" in res.stdout
    plan = _plan(tmp_path, [{**GOOD, "action": "explode"}])
    res = subprocess.run([script, "--chaos-plan", str(plan), "--out-dir", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=30, cwd="/", env=env)
    assert res.returncode == 2 and f"{plan}: events[0].action:" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_a_second_run_in_the_same_second_gets_its_own_directory(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--out-dir", str(tmp_path)])
    first = resolve(args, now=1_800_000_000)
    first.run_dir.mkdir(parents=True)
    second = resolve(args, now=1_800_000_000)
    assert second.run_dir != first.run_dir and second.run_id == second.run_dir.name


def _file(tmp: Path) -> Path:
    path = tmp / "a-file"
    path.write_text("x")
    return path


@pytest.mark.parametrize("args, message", [
    (["--duration-secs", "nan"], "argument --duration-secs: expected a finite number, got 'nan'"),
    (["--poll-interval-secs", "inf"], "argument --poll-interval-secs: expected a finite number, got 'inf'"),
    (["--epoch-secs=-Infinity"], "argument --epoch-secs: expected a finite number"),
    (["--chaos-continuous-interval-secs", "NaN"], "argument --chaos-continuous-interval-secs: expected a finite"),
    (["--max-lag-p95", "nan"], "argument --max-lag-p95: expected a finite number"),
    (["--threshold", "max_lag_p95=nan"], "--threshold max_lag_p95=nan: expected KEY=NUMBER (a finite number)"),
    (["--threshold", "warmup_secs=inf"], "--threshold warmup_secs=inf: expected KEY=NUMBER (a finite number)"),
    (["--chaos-continuous-restart-down-secs", "-1"], "must not be negative"),
    (["--out-dir", "{file}"], "is not a directory"),
    (["--out-dir", "{file}/sub"], "is not a directory"),
    (["--out-dir", "/sys/soak-out"], "cannot create a directory in /sys"),
    (["--bind-host", "localhost"], "--bind-host 'localhost': expected an IPv4 address"),
    (["--node-bin", "{file}"], "not an executable file"),
    (["--node-arg", "nobody=--fault-stall-at-sec=5"],
     "--node-arg 'nobody=--fault-stall-at-sec=5': no node 'nobody' in triad, triad_distributed; "
     "valid nodes: observer, sequencer, storage, triad"),
    (["--topology", "triad", "--node-arg", "storage=--x"], "no node 'storage' in triad; valid nodes: triad"),
])
def test_bad_values_are_exit_2_with_one_line_and_nothing_created(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    args = [a.replace("{file}", str(_file(tmp_path))) for a in args]
    code, err = _soak_run(tmp_path, capsys, *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
    assert not list(Path("/sys").glob("soak-out*")) and not (tmp_path / "a-file").is_dir()


@pytest.mark.parametrize("text, suffix, field, reason", [
    ('{"events": [{"id": "a", "at_sec": NaN, "node": "triad", "action": "restart"}]}', ".json",
     "events[0].at_sec", "NaN and infinity are not numbers here"),
    ('{"events": [{"id": "a", "at_sec": 1, "node": "triad", "action": "pause", "duration_secs": Infinity}]}', ".json",
     "events[0].duration_secs", "NaN and infinity"),
    ('{"events": [{"id": "a", "at_sec": 1e999, "node": "triad", "action": "restart"}]}', ".json",
     "events[0].at_sec", "NaN and infinity"),
    ("events:\n  - {id: a, at_sec: .nan, node: triad, action: restart}\n", ".yaml", "events[0].at_sec", "NaN"),
    ("events:\n  - {id: a, at_sec: 1, node: triad, action: pause, duration_secs: -.inf}\n", ".yaml",
     "events[0].duration_secs", "NaN"),
    ('{"events": [{"id": "late", "at_sec": 90, "node": "triad", "action": "restart"}]}', ".json",
     "events[0].at_sec", "event 'late' at 90s never happens: the run lasts 90s per topology"),
    ('{"events": [{"id": "x1", "at_sec": 1, "node": "nobody", "action": "restart"}]}', ".json",
     "events[0].node", "event 'x1': unknown node 'nobody'; expected one of observer, sequencer, storage, triad"),
    ('{"events": [{"id": "x2", "at_sec": 1, "topology": "ring", "node": "triad", "action": "restart"}]}', ".json",
     "events[0].topology", "event 'x2': unknown topology 'ring'"),
    ('{"events": [{"id": "x3", "at_sec": 1, "node": ["triad"], "action": "restart"}]}', ".json",
     "events[0].node", "event 'x3': unknown node ['triad']"),
    ('{"events": [{"id": "d", "at_sec": 1, "node": "triad", "action": "restart"}, '
     '{"id": "d", "at_sec": 2, "node": "triad", "action": "kill"}]}', ".json", "events[1].id", "duplicate id 'd'"),
    ('{"events": [{"id": "a", "at_sec": 1, "node": "triad", "action": "pause", "duration_secs": 1e9}]}', ".json",
     "events[0].duration_secs", "expected a number of seconds within 0..1e+07"),
])
def test_a_plan_with_non_numbers_late_events_or_typos_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                text: str, suffix: str, field: str, reason: str) -> None:
    plan = tmp_path / f"plan{suffix}"
    plan.write_text(text)
    code, err = _soak_run(tmp_path, capsys, "--chaos-plan", str(plan), "--duration-secs", "90")
    assert code == 2, err
    assert f"{plan}: {field}: " in err and reason in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_plan_that_is_not_utf8_too_big_or_a_fifo_is_refused_at_once(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cases = {"latin1.json": b'{"events": [{"id": "caf\xe9"}]}', "big.json": b" " * (1 << 20) + b"{}"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    os.mkfifo(tmp_path / "fifo.json")  # opening it for reading would block for ever
    for name, reason in (("latin1.json", "not UTF-8 (byte 23)"), ("big.json", "1048578 bytes, more than the limit"),
                         ("fifo.json", "not a regular file")):
        code, err = _soak_run(tmp_path, capsys, "--chaos-plan", str(tmp_path / name))
        assert code == 2 and f"{tmp_path / name}: <file>: {reason}" in err, err
    assert not (tmp_path / "out").exists()


def test_plan_validation_takes_linear_time(tmp_path: Path) -> None:
    def seconds(n: int) -> float:
        events = [{"id": f"e{i}", "at_sec": i % 80, "node": "triad", "action": "restart"} for i in range(n)]
        path = _plan(tmp_path, events)
        best = float("inf")
        for _ in range(3):  # CPU time, the best of three: other processes on the machine add none
            started = time.process_time()
            assert len(load_plan(path, TOPOLOGY_NODES, 90)) == n
            best = min(best, time.process_time() - started)
        return best
    small, large = seconds(2500), seconds(10000)  # 10000 events: about 0.8 MB, below the size limit
    assert large / small < 8, (small, large)  # linear is ~4x, quadratic would be ~16x


@pytest.mark.parametrize("present, missing", [(["prometheus-alertmanager"], "prometheus"),
                                              (["prometheus"], "prometheus-alertmanager")])
def test_a_server_missing_from_path_is_exit_2_before_the_run_dir_or_any_process(
        tmp_path: Path, present: list[str], missing: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in present:
        (bin_dir / name).symlink_to(shutil.which(name) or "/nonexistent")
    env = {**os.environ, "PATH": str(bin_dir), "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "runner", "--out-dir", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert res.returncode == 2 and res.stderr.startswith(f"soak-run: error: {missing} not found on PATH"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("override", ["max_distfs_failure_ratio=1", "min_distfs_checks=1e12", "warmup_secs=100000",
                                      "max_stall_secs=60"])
def test_an_override_that_switches_a_gate_off_is_refused_unless_allowed_and_then_listed(
        tmp_path: Path, override: str) -> None:
    argv = ["--out-dir", str(tmp_path), "--duration-secs", "60", "--threshold", override]
    with pytest.raises(UsageError, match="--allow-weak-gates"):
        resolve(build_parser().parse_args(argv), now=1_800_000_000)
    cfg = resolve(build_parser().parse_args([*argv, "--allow-weak-gates"]), now=1_800_000_000)
    assert len(cfg.weak_gates) == 1 and override.split("=")[0] in cfg.weak_gates[0]


def test_an_override_that_keeps_a_gate_able_to_fail_needs_no_permission(tmp_path: Path) -> None:
    argv = ["--out-dir", str(tmp_path), "--duration-secs", "600", "--threshold", "max_stall_secs=60"]
    assert resolve(build_parser().parse_args(argv), now=1_800_000_000).weak_gates == ()


@pytest.mark.parametrize("args, message", [
    (["--duration-secs", "1e300"], "--duration-secs: expected 0..1e+07, got 1e+300"),
    (["--poll-interval-secs", "0.001"], "--poll-interval-secs: expected 0.1..1e+07"),
    (["--chaos-continuous-enable", "--chaos-continuous-interval-secs", "0.1", "--duration-secs", "1e6"],
     "9999700 events in 1e+06s, more than 100000"),
])
def test_numbers_that_would_hang_or_flood_the_run_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               args: list[str], message: str) -> None:
    code, err = _soak_run(tmp_path, capsys, *args)
    assert code == 2 and message in err, err
    assert not (tmp_path / "out").exists()


def test_exporter_listen_binds_where_a_compose_prometheus_can_scrape_and_bad_values_are_refused(
        tmp_path: Path) -> None:
    from runner.stack import Stack
    base = ["--out-dir", str(tmp_path)]
    cfg = resolve(build_parser().parse_args([*base, "--exporter-listen", "0.0.0.0:29464"]), now=1_800_000_000)
    assert (cfg.exporter_host, cfg.exporter_port) == ("0.0.0.0", 29464)
    stack = Stack(tmp_path, 1.0, exporter_port=29464, exporter_host="0.0.0.0")
    assert stack.exporter_target == "127.0.0.1:29464"  # the run's own Prometheus scrapes it locally
    for bad in (["--exporter-listen", "localhost:9464"], ["--exporter-listen", "0.0.0.0:80"],
                ["--exporter-listen", "0.0.0.0"], ["--exporter-listen", "0.0.0.0:9464", "--exporter-port", "9465"]):
        with pytest.raises(UsageError, match="--exporter-listen"):
            resolve(build_parser().parse_args([*base, *bad]), now=1_800_000_000)


def test_a_drain_too_short_to_judge_the_windows_end_is_a_weak_gate(tmp_path: Path) -> None:
    argv = ["--out-dir", str(tmp_path), "--duration-secs", "60", "--drain-secs", "5"]
    with pytest.raises(UsageError, match="drain_secs=5"):
        resolve(build_parser().parse_args(argv), now=1_800_000_000)
    cfg = resolve(build_parser().parse_args([*argv, "--allow-weak-gates"]), now=1_800_000_000)
    assert cfg.drain_secs == 5 and any("drain_secs" in w for w in cfg.weak_gates)
    long = resolve(build_parser().parse_args([*argv[:-1], "1m"]), now=1_800_000_000)
    assert long.weak_gates == () and long.drain_secs == 60
