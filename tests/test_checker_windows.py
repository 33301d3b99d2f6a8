"""A gate that could not have fired in the window is not a pass, and a topology that commits
nothing over a whole window fails the stall gate whatever its threshold. A real Prometheus
over backfilled histories (checker.testing)."""
from __future__ import annotations

from typing import Iterator

import pytest

from alerts.profiles import get_profile
from checker.api import TopologyVerdict, evaluate
from checker.testing import Fault, History, backfilled_prometheus
from soakcore.services import Service

START = 1767225600.0  # 2026-01-01T00:00:00Z
NODES = ("sequencer", "storage", "observer")
HISTORIES = [
    History("healthy", "triad_distributed", NODES, START, 900.0),
    # Nothing committed from the first second on; the stall threshold (5000 s) is far longer
    # than the window, so the value alone could never cross it.
    History("stuck", "triad_distributed", NODES, START, 900.0, faults=(Fault("stall", 0, 2000),),
            thresholds=(("max_stall_secs", 5000.0),)),
]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    base = tmp_path_factory.mktemp("checker-windows")
    with backfilled_prometheus(base, HISTORIES) as prom:
        yield prom


def _judge(prom: Service, run_id: str, since: float, until: float) -> TopologyVerdict:
    return evaluate(prom.url, since, until, run_id=run_id, topology="triad_distributed",
                    profile=get_profile("soak_smoke"), explicit_profile=False)


def _gate(v: TopologyVerdict, name: str):  # noqa: ANN202 - GateResult
    return next(g for g in v.gates if g.name == name)


def test_a_window_shorter_than_a_gate_needs_is_insufficient_data_with_the_reason(prometheus: Service) -> None:
    # 200 s of a healthy run: the stall gate (300 s threshold + 15 s for) could not have fired.
    v = _judge(prometheus, "healthy", START + 600, START + 800)
    stall = _gate(v, "consensus_stalled")
    assert stall.status == "insufficient_data", stall
    assert stall.note and "shorter than the 315s" in stall.note
    # The report gap (120 s threshold) fits in 200 s: judged, and passes.
    assert _gate(v, "reports_missing").status == "pass"


def test_the_same_gate_passes_over_a_window_long_enough_to_fail(prometheus: Service) -> None:
    assert _gate(_judge(prometheus, "healthy", START + 100, START + 800), "consensus_stalled").status == "pass"


def test_nothing_committed_over_the_whole_window_fails_the_stall_gate_whatever_its_threshold(
        prometheus: Service) -> None:
    v = _judge(prometheus, "stuck", START + 300, START + 800)
    stall = _gate(v, "consensus_stalled")
    assert v.thresholds["max_stall_secs"] == 5000.0
    assert stall.status == "fail", stall
    assert stall.note and "nothing was committed over the whole 500s window" in stall.note
    assert v.status == "failed"


def test_a_healthy_window_is_not_mistaken_for_a_whole_window_stall(prometheus: Service) -> None:
    stall = _gate(_judge(prometheus, "healthy", START + 300, START + 800), "consensus_stalled")
    assert stall.status == "pass" and stall.note is None
