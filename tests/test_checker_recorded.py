"""The checker judges from recorded gate values (soak:gate_value) where the rules ran, and its
verdicts are the raw path's: the same histories judged both ways over a real Prometheus.

The raw histories are backfilled with promtool (checker.testing), then the gates' recording
rules are evaluated over them with ``promtool tsdb create-blocks-from rules`` at the runner's
default evaluation interval (2 s), as a live soak's Prometheus would have recorded them.
"""
from __future__ import annotations

import math
from typing import Iterator

import pytest

from alerts.gates import GATES
from alerts.profiles import get_profile
from checker.api import TopologyVerdict, evaluate, step_for
from checker.promapi import Prom
from checker.recording import move_blocks, record_gate_values
from checker.testing import MiB, Fault, History, backfill
from soakcore.services import Service, start_prometheus

START = 1767225600.0          # 2026-01-01T00:00:00Z
DURATION = 1800.0
UNTIL = START + DURATION
DIST = ("sequencer", "storage", "observer")
EVAL = 2.0                    # soak-run's default scrape and rule evaluation interval
DRAIN = 60.0
LATER = START + 4 * 3600      # histories recorded only in part, or not by promtool at all

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
    History("distfs", "triad_distributed", DIST, START, DURATION, faults=(Fault("distfs", 600, 1800, "storage", 8),)),
    History("invariant", "triad", ("triad",), START, DURATION, faults=(Fault("invariant", 1000, 1100, "triad"),)),
    History("crash", "triad", ("triad",), START, DURATION, faults=(Fault("crash", 1000, 1001, "triad"),)),
    History("memory", "triad_distributed", DIST, START, DURATION,
            faults=(Fault("memory", 300, 1800, "observer", 1024 * MiB),)),
    History("reports_missing", "triad", ("triad",), START, DURATION,
            faults=(Fault("reports_missing", 900, 1300, "triad"),)),
    History("down", "triad", ("triad",), START, DURATION, faults=(Fault("down", 700, 760, "triad"),)),
    History("empty", "triad", ("triad",), START, DURATION, with_data=False),
    # The process goes down 10 s before the window's end and stays down through the drain.
    History("late_breach", "triad", ("triad",), START, 900.0 + DRAIN, step=5.0,
            faults=(Fault("down", 890, 900 + DRAIN + 5, "triad"),)),
    History("healthy", "triad_distributed", DIST, START, 900.0),
    # Nothing committed at all, under a stall threshold far longer than the window.
    History("stuck", "triad_distributed", DIST, START, 900.0, faults=(Fault("stall", 0, 2000),),
            thresholds=(("max_stall_secs", 5000.0),)),
    # Recorded by promtool over its first half only (the rules stopped): judged raw.
    History("half_recorded", "triad", ("triad",), LATER, DURATION, faults=(Fault("stall", 900, 1300),)),
    # Only one gate has recordings (as if the others were added after the run): those raw.
    History("one_gate_recorded", "triad", ("triad",), LATER + 7200, DURATION, rules_evaluated=True,
            faults=(Fault("crash", 1000, 1001, "triad"),)),
]

# (run_id, topology, since, until, horizon, scrape interval, explicit profile)
Case = tuple[str, str, float, float, "float | None", "float | None", bool]
FULL: list[Case] = [(h.run_id, h.topology, START, UNTIL, None, None, True) for h in HISTORIES
                    if h.start == START and h.duration == DURATION]
CASES: list[Case] = FULL + [
    ("late_breach", "triad", START, START + 900, START + 900 + DRAIN, 5.0, True),      # drain horizon
    ("late_breach", "triad", START, START + 900, None, None, True),                   # no horizon: blind
    ("healthy", "triad_distributed", START + 600, START + 800, None, None, False),     # could not have fired
    ("healthy", "triad_distributed", START + 100, START + 800, None, None, False),
    ("stuck", "triad_distributed", START + 300, START + 800, None, None, False),       # whole-window stall
]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    base = tmp_path_factory.mktemp("checker-recorded")
    data = backfill(HISTORIES, base / "data")
    (base / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
    args = ("--storage.tsdb.retention.time=100y",)
    with start_prometheus(base / "prometheus.yml", data, extra_args=args) as raw:
        blocks = record_gate_values(raw.url, START, UNTIL + DRAIN, base / "recorded", EVAL)
        blocks += record_gate_values(raw.url, LATER, LATER + DURATION / 2, base / "recorded", EVAL)
    assert blocks, "promtool wrote no recordings"
    move_blocks(blocks, data)
    prom = start_prometheus(base / "prometheus.yml", data, extra_args=args)
    try:
        yield prom
    finally:
        prom.stop()


_BOTH: dict[tuple[str, Case], tuple[TopologyVerdict, TopologyVerdict]] = {}


def both(prom: Service, case: Case) -> tuple[TopologyVerdict, TopologyVerdict]:
    """(from recordings where they exist, from raw series only); memoised per Prometheus."""
    if (prom.url, case) not in _BOTH:
        run_id, topology, since, until, horizon, scrape, explicit = case
        kw = dict(run_id=run_id, topology=topology, profile=get_profile("soak_smoke"), explicit_profile=explicit,
                  horizon=horizon, scrape_interval=scrape)
        _BOTH[(prom.url, case)] = (evaluate(prom.url, since, until, **kw),  # type: ignore[arg-type]
                                   evaluate(prom.url, since, until, use_recordings=False, **kw))  # type: ignore[arg-type]
    return _BOTH[(prom.url, case)]


# increase() extrapolates its samples to the edges of its window, so its value depends on the
# time it is evaluated at: two evaluation grids (the rules' and the checker's) give values up to
# one sample interval (10 s here) per window (2 m at least) apart. Every other gate's value
# depends only on which samples exist, and must be equal.
EXTRAPOLATED = {g.name for g in GATES if "increase(" in g.measure}
EXTRAPOLATION_TOLERANCE = 10 / 120


def differences(recorded: TopologyVerdict, raw: TopologyVerdict) -> list[str]:
    """Every way the two verdicts differ beyond the query text: status, worst node, note,
    value (float tolerance), first failure (one step of the window's grid, or one evaluation)."""
    slack = max(step_for(raw.since, raw.until), EVAL)
    out = []
    for a, b in zip(recorded.gates, raw.gates):
        assert a.name == b.name
        if (a.status, a.worst_node, a.note, a.evaluated_at) != (b.status, b.worst_node, b.note, b.evaluated_at):
            out.append(f"{a.name}: {(a.status, a.worst_node, a.note)} != {(b.status, b.worst_node, b.note)}")
        tol = EXTRAPOLATION_TOLERANCE if a.name in EXTRAPOLATED else 1e-9
        if (a.value is None) != (b.value is None) or (
                a.value is not None and b.value is not None and not math.isclose(a.value, b.value, rel_tol=tol,
                                                                                 abs_tol=1e-9)):
            out.append(f"{a.name}: value {a.value} != {b.value}")
        if (a.first_failed_at is None) != (b.first_failed_at is None) or (
                a.first_failed_at is not None and b.first_failed_at is not None
                and abs(a.first_failed_at - b.first_failed_at) > slack):
            out.append(f"{a.name}: first failed at {a.first_failed_at} != {b.first_failed_at}")
    if (recorded.status, recorded.alerts_fired, recorded.disagreements) != (raw.status, raw.alerts_fired,
                                                                             raw.disagreements):
        out.append(f"verdict {recorded.status} != {raw.status}")
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{int(c[3] - c[2])}s{'-drain' if c[4] else ''}")
def test_recorded_and_raw_verdicts_are_identical(prometheus: Service, case: Case) -> None:
    recorded, raw = both(prometheus, case)
    assert raw.recorded_gates == ()
    # The rules ran over the whole window: every gate was judged from recordings, those without
    # any value too (soak:gate_coverage says the rules evaluated them, and which had data).
    assert set(recorded.recorded_gates) == {g.name for g in GATES}
    assert all(g.source == "recorded" for g in recorded.gates)
    assert differences(recorded, raw) == []
    assert recorded.queries < raw.queries
    # promtool backfilled the recordings only: no alert rule ran, so none is cross-checked.
    assert not recorded.rules_evaluated and not raw.rules_evaluated


def test_the_recorded_path_finds_the_known_faults(prometheus: Service) -> None:
    # Not only equal to the raw path: right (the raw path's own tests pin the same verdicts).
    expected = {"clean": set(), "paused": set(), "lag_paused": set(), "stall": {"consensus_stalled"},
                "lag": {"consensus_lag_high"}, "regression": {"committed_height_regressed"},
                "fork_paused": {"consensus_fork_detected"}, "invariant": {"reward_invariant_violated"},
                "crash": {"process_crashed"}, "memory": {"memory_growth_high"}, "down": {"process_down"},
                "reports_missing": {"reports_missing"},
                "distfs": {"distfs_failure_ratio_high", "distfs_recent_failure_ratio_high"}}
    for run_id, failing in expected.items():
        v, _ = both(prometheus, next(c for c in FULL if c[0] == run_id))
        assert {g.name for g in v.gates if g.status == "fail"} == failing, run_id
        assert all(g.source == "recorded" for g in v.gates if g.status == "fail"), run_id
    late, _ = both(prometheus, next(c for c in CASES if c[0] == "late_breach" and c[4]))
    down = next(g for g in late.gates if g.name == "process_down")
    assert down.status == "fail" and down.source == "recorded" and down.evaluated_at and down.evaluated_at > START + 900


def test_rules_that_stopped_before_the_end_of_the_window_are_not_trusted(prometheus: Service) -> None:
    kw = dict(run_id="half_recorded", topology="triad", profile=get_profile("soak_smoke"))
    v = evaluate(prometheus.url, LATER, LATER + DURATION, **kw)  # type: ignore[arg-type]
    assert v.recorded_gates == ()
    # Recordings end at minute 15, the stall begins at minute 15: only the raw series see it.
    assert {g.name for g in v.gates if g.status == "fail"} == {"consensus_stalled"}
    raw = evaluate(prometheus.url, LATER, LATER + DURATION, use_recordings=False, **kw)  # type: ignore[arg-type]
    assert differences(v, raw) == []


def test_a_gate_without_recordings_is_judged_from_raw_series(prometheus: Service) -> None:
    since = LATER + 7200
    v = evaluate(prometheus.url, since, since + DURATION, run_id="one_gate_recorded", topology="triad",
                 profile=get_profile("soak_smoke"))
    assert v.recorded_gates == ("consensus_stalled",)
    crash = next(g for g in v.gates if g.name == "process_crashed")
    assert (crash.status, crash.source, crash.worst_node) == ("fail", "raw", "triad")
    assert {g.source for g in v.gates} == {"recorded", "raw"} and len(v.gates) == len(GATES)


def test_recordings_land_on_the_live_evaluation_grid(prometheus: Service) -> None:
    # What the equality rests on: promtool evaluated the gates every EVAL seconds over the span.
    rows = Prom(prometheus.url).instant('count_over_time(soak:gate_value{gate="consensus_stalled",run_id="clean"}'
                                        f'[{int(DURATION)}s])', UNTIL)
    assert rows and abs(rows[0][1] - DURATION / EVAL) <= 2


def test_only_the_live_rules_say_that_the_alert_rules_ran() -> None:
    # Recordings backfilled with promtool have no ALERTS beside them: they must not ask for a
    # cross-check (every failed gate would read "the alert never fired").
    from alerts.generate import GATE_COVERAGE, rules
    from checker.recording import gate_value_rules
    live = next(r for g in rules()["groups"] for r in g["rules"] if r.get("record") == GATE_COVERAGE)
    backfilled = next(r for g in gate_value_rules()["groups"] for r in g["rules"]  # type: ignore[index]
                      if r.get("record") == GATE_COVERAGE)
    assert '"aspect", "alerting"' in live["expr"] and '"alerting"' not in backfilled["expr"]
    assert all(f'"gate", "{g.name}"' in backfilled["expr"] for g in GATES)
