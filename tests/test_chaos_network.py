"""The chaos table is the one source (plan fields, docs/chaos.md, implementations), and the
network faults really act on loopback traffic: real sockets, real nftables tables (as root),
each table deleted in finally."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.chaos import ChaosEngine
from runner.plan import load_plan
from runner.topology import TOPOLOGY_NODES
from soakcore.actions import ACTIONS, DOC_PATH, render_doc
from soakcore.errors import UsageError


def _plan(tmp: Path, *events: dict[str, object]) -> Path:
    path = tmp / "plan.json"
    path.write_text(json.dumps({"events": [{"id": f"e{i}", "at_sec": 1, **e} for i, e in enumerate(events)]}))
    return path


def test_docs_chaos_md_is_rendered_from_the_table() -> None:
    assert DOC_PATH.read_text() == render_doc(), "stale: run python3 -m soakcore.actions"
    for name, action in ACTIONS.items():
        assert f"| `{name}` |" in render_doc() and action.chaos_mesh


def test_every_action_in_the_table_is_implemented() -> None:
    for name in ACTIONS:
        assert callable(getattr(ChaosEngine, f"_do_{name}", None)), name


def test_the_plan_validates_timing_from_the_table(tmp_path: Path) -> None:
    for name, action in ACTIONS.items():
        plan = _plan(tmp_path, {"node": "triad", "action": name, "duration_secs": 0})
        if action.needs_duration:
            with pytest.raises(UsageError, match=r"events\[0\]\.duration_secs"):
                load_plan(plan, TOPOLOGY_NODES)
        else:
            assert load_plan(plan, TOPOLOGY_NODES)[0].action == name
