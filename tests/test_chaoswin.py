"""Fault windows, exemptions and the stall clock (exporter/chaoswin.py), and the run-state
windows the runner writes: faults excuse only what they can explain."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from exporter import chaoswin
from exporter.collector import SoakCollector, Setup, Source
from runner.chaos import ChaosEngine, ChaosLog
from runner.plan import ChaosEvent
from soakcore.actions import ACTIONS, DOWN, STOPS_COMMITS
from soakcore.runstate import ChaosWindow as W

T0 = 1_795_000_000.0


def test_overlapping_faults_are_counted_the_first_to_end_keeps_the_other_active() -> None:
    windows = [W("storage", "pause", "a", T0, T0 + 5), W("storage", "pause", "b", T0 + 2)]
    assert chaoswin.active(windows) == {("storage", "pause")}
    assert chaoswin.active(windows[:1]) == set()


def test_a_fault_shorter_than_a_scrape_still_exempts_its_node_for_the_actions_grace() -> None:
    # A 1 s restart between two scrapes: the next scrape still carries its end + grace.
    windows = [W("storage", "restart", "r", T0 + 0.2, T0 + 1.2)]
    until = chaoswin.exempt_until(windows)
    assert until == {("storage", "restart"): pytest.approx(T0 + 1.2 + ACTIONS["restart"].grace_secs)}


def test_an_open_window_exempts_its_own_node_whatever_the_scrape_interval() -> None:
    # +Inf while in effect: the exemption cannot lapse between two scrapes.
    until = chaoswin.exempt_until([W("observer", "pause", "p", T0)])
    assert until == {("observer", "pause"): math.inf}


def test_the_report_gap_clock_pauses_for_the_nodes_own_down_faults_only() -> None:
    windows = [W("storage", "pause", "p", T0 + 10, T0 + 310), W("observer", "kill", "k", T0, T0 + 500)]
    gap = chaoswin.report_gap_seconds(T0, "storage", windows, now=T0 + 400)
    assert gap == pytest.approx(400 - 300 - ACTIONS["pause"].grace_secs)
    assert chaoswin.report_gap_seconds(None, "storage", windows, now=T0) is None


def test_graces_are_short_and_stated_per_action() -> None:
    for name in DOWN:
        assert 0 < ACTIONS[name].grace_secs <= 30, name


def test_the_stall_clock_pauses_for_a_critical_fault_and_does_not_restart() -> None:
    # Progress at T0; the sequencer paused from +30 to +34 (grace 10): 14 s do not count.
    windows = [W("sequencer", "pause", "p", T0 + 30, T0 + 34)]
    stall = chaoswin.stall_seconds(T0, T0 - 60, windows, {"sequencer"}, now=T0 + 100)
    assert stall == pytest.approx(100 - 4 - ACTIONS["pause"].grace_secs)


def test_frequent_short_faults_cannot_hide_a_stall() -> None:
    # The case: a 4 s pause every 20 s for four minutes, sequencer stuck all along.
    windows = [W("sequencer", "pause", f"p{i}", T0 + 20 * i, T0 + 20 * i + 4) for i in range(12)]
    stall = chaoswin.stall_seconds(T0, T0, windows, {"sequencer"}, now=T0 + 240)
    assert stall > 60


def test_a_fault_on_a_node_that_cannot_stop_commits_does_not_pause_the_stall_clock() -> None:
    windows = [W("observer", "pause", "p", T0 + 10, T0 + 200)]
    assert chaoswin.stall_seconds(T0, T0, windows, {"sequencer"}, now=T0 + 240) == pytest.approx(240)


def test_challenge_pressure_never_pauses_the_stall_clock() -> None:
    assert "challenge_pressure" not in STOPS_COMMITS
    windows = [W("sequencer", "challenge_pressure", "c", T0, T0 + 100)]
    assert chaoswin.stall_seconds(T0, T0, windows, {"sequencer"}, now=T0 + 100) == pytest.approx(100)


def test_a_topology_that_never_commits_stalls_from_its_start() -> None:
    assert chaoswin.stall_seconds(None, T0, (), {"sequencer"}, now=T0 + 50) == pytest.approx(50)
    assert chaoswin.stall_seconds(None, None, (), {"sequencer"}, now=T0 + 50) is None


def test_a_height_drop_is_excused_only_when_first_seen_inside_its_nodes_restart_window() -> None:
    ex = chaoswin.Excuser()
    assert ex.observe("storage", 1, exempt=True) == 1      # seen during the restart: excused
    assert ex.observe("storage", 1, exempt=False) == 1     # the same drop is not judged twice
    assert ex.observe("storage", 2, exempt=False) == 1     # a new drop after the grace is real


def test_the_runner_keeps_every_window_and_the_exporter_publishes_them(tmp_path: Path) -> None:
    published: list[int] = []
    engine = ChaosEngine("t", {}, ChaosLog(tmp_path / "chaos.log"), lambda: published.append(1), "tag")
    first = engine._open_window(ChaosEvent("a", 0, "all", "storage", "pause"))
    engine._open_window(ChaosEvent("b", 0, "all", "storage", "pause"))
    engine._close_window(first)
    assert engine.active == {("storage", "pause")}
    assert [w.end is None for w in engine.windows] == [False, True]
    collector = SoakCollector(Setup(sources=(Source("storage"),), chaos_windows=tuple(engine.windows)))
    text = {(m.name, tuple(sorted(s.labels.items()))): s.value for m in collector.collect() for s in m.samples}
    key = ("soak_chaos_active", (("action", "pause"), ("node", "storage"), ("run_id", "adhoc"),
                                 ("topology", "unknown")))
    assert text[key] == 1.0
    until = [v for (name, labels), v in text.items() if name == "soak_chaos_exempt_until_timestamp_seconds"]
    assert until and until[0] > time.time()


def test_a_node_cut_off_from_everyone_lags_from_outside_though_its_own_view_is_in_step() -> None:
    from exporter.topolag import behind
    trails = {"sequencer": [(T0 + i, 100 + 10 * i) for i in range(30)],
              "observer": [(T0 + i + 0.5, 100 + 10 * i) for i in range(30)],
              "storage": [(T0 + i + 0.7, 192) for i in range(30)]}       # stuck at 192
    lag = behind(trails)
    assert lag["storage"] == 100 + 10 * 29 - 192
    assert lag["sequencer"] == 0 and lag["observer"] == 0


def test_reading_phases_never_turn_into_a_false_outside_lag() -> None:
    from exporter.topolag import behind
    # Both in step; the observer reads 0.9 s after the sequencer: it is compared with the
    # sequencer's reading that had arrived by then, never with a later one.
    trails = {"sequencer": [(T0 + 2 * i, 10 * i) for i in range(10)],
              "observer": [(T0 + 2 * i + 0.9, 10 * i) for i in range(10)]}
    assert behind(trails) == {"sequencer": 0, "observer": 0}
