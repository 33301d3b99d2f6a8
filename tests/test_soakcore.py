"""The shared core: ids, run-state contract, real services."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from soakcore.errors import InputError, UsageError
from soakcore.ids import validate_name
from soakcore.runstate import (ChaosCount, ChaosWindow, NodeState, RunState, read_run_state,
                               write_run_state)
from soakcore.services import AlertWebhook, read_alerts_log


@pytest.mark.parametrize("bad", ["", "../x", ".hidden", "-flag", "a/b", "a b", "x" * 65, None, 3])
def test_unsafe_names_are_refused_before_they_become_paths(bad: object) -> None:
    with pytest.raises(UsageError):
        validate_name("node", bad)


def test_safe_names_pass_unchanged() -> None:
    assert validate_name("node", "storage-1.a_b") == "storage-1.a_b"


def _state(tmp_path: Path) -> RunState:
    return RunState(
        run_id="20261127-010000", topology="triad_distributed", profile="soak_smoke",
        scenario="triad_p2p_bootstrap", thresholds={"max_stall_secs": 300.0},
        nodes=(NodeState("sequencer", "sequencer", "x-sequencer", str(tmp_path / "r"),
                         str(tmp_path / "w"), pid=123, restarts={"chaos": 1, "crash": 0},
                         started_at=1795000000.5, critical=True),),
        chaos_windows=(ChaosWindow("sequencer", "pause", "ev-1", 1795000010.0),
                       ChaosWindow("sequencer", "restart", "ev-0", 1795000001.0, 1795000003.5)),
        chaos_events=(ChaosCount("sequencer", "restart", "completed", 1),))


def test_run_state_round_trips_through_the_atomic_file(tmp_path: Path) -> None:
    path = tmp_path / "run_state.json"
    write_run_state(path, _state(tmp_path))
    assert read_run_state(path) == _state(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["run_state.json"]  # no temp file left


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("nodes"), "nodes"),
    (lambda d: d["nodes"][0].update(pid="12"), "nodes[0].pid"),
    (lambda d: d["nodes"][0].update(node="../etc"), "node"),
    (lambda d: d["thresholds"].update(max_stall_secs="x"), "thresholds.max_stall_secs"),
    (lambda d: d["chaos_windows"][0].update(action="explode"), "chaos_windows[0].action"),
    (lambda d: d["chaos_windows"][1].update(end=1.0), "chaos_windows[1].end"),
    (lambda d: d["chaos_windows"][0].update(start=float("nan")), "chaos_windows[0].start"),
    (lambda d: d.update(version=99), "version"),
])
def test_bad_run_state_names_the_field(tmp_path: Path, mutate, field: str) -> None:
    path = tmp_path / "run_state.json"
    write_run_state(path, _state(tmp_path))
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(UsageError) as err:
        read_run_state(path)
    assert field in str(err.value)
    if isinstance(err.value, InputError):
        assert str(path) in str(err.value)


def test_webhook_appends_each_delivered_alert_to_alerts_log(tmp_path: Path) -> None:
    log = tmp_path / "alerts.log"
    body = {"status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "SoakConsensusStalled", "severity": "critical"},
         "annotations": {"summary": "s"}, "startsAt": "2026-11-27T00:00:00Z"},
        {"status": "resolved", "labels": {"alertname": "SoakProcessDown"}}]}
    with AlertWebhook(log) as hook:
        req = urllib.request.Request(hook.url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
    entries = read_alerts_log(log)
    assert [e["labels"].get("alertname") for e in entries] == ["SoakConsensusStalled", "SoakProcessDown"]
    assert entries[0]["status"] == "firing" and entries[1]["status"] == "resolved"
