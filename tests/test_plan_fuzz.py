"""Fuzz of the chaos-plan parser: whatever the bytes or the document, the answer is a plan or a
UsageError (exit 2, one line naming the file), never another exception."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.plan import ChaosEvent, load_plan
from runner.topology import TOPOLOGY_NODES
from soakcore.actions import ACTION_FIELDS
from soakcore.errors import UsageError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIR = Path(tempfile.mkdtemp(prefix="plan-fuzz-"))

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["triad", "storage", "all", "pause", "restart", "disconnect", "partition", "delay",
                                     "both", "flip", "x" * 70, ""]))
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                         max_leaves=20)
FIELDS = ("id", "at_sec", "topology", "node", "action", "down_secs", "duration_secs", *sorted(ACTION_FIELDS))
events = st.dictionaries(st.sampled_from(FIELDS + ("bogus",)), st.one_of(scalars, documents), max_size=8)
plans = st.one_of(documents, st.fixed_dictionaries({"events": st.lists(events, max_size=6)},
                                                    optional={"meta": documents}))


def _judge(path: Path, duration: float | None = 60.0) -> None:
    try:
        plan = load_plan(path, TOPOLOGY_NODES, duration)
    except UsageError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    ids = [e.id for e in plan]
    assert len(ids) == len(set(ids)) and all(isinstance(e, ChaosEvent) for e in plan)
    for e in plan:
        assert all(math.isfinite(x) and x >= 0 for x in (e.at_sec, e.down_secs, e.duration_secs))
        assert duration is None or e.at_sec < duration


@SETTINGS
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".json", ".yaml"]))
def test_arbitrary_bytes_give_a_plan_or_a_usage_error(data: bytes, suffix: str) -> None:
    path = DIR / f"bytes{suffix}"
    path.write_bytes(data)
    _judge(path)


@SETTINGS
@given(doc=plans, suffix=st.sampled_from([".json", ".yaml"]), duration=st.sampled_from([None, 5.0, 60.0]))
def test_arbitrary_documents_give_a_plan_or_a_usage_error(doc: object, suffix: str, duration: float | None) -> None:
    path = DIR / f"doc{suffix}"
    path.write_text(json.dumps(doc) if suffix == ".json" else yaml.safe_dump(doc))
    _judge(path, duration)


def test_hostile_yaml_aliases_and_nesting_are_refused_or_read_without_blowing_up() -> None:
    cases = {"cycle.yaml": "events: &a [*a]\n",
             "laughs.yaml": "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
                 f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
             + "events: []\n",
             "deep.json": "[" * 100000 + "]" * 100000,
             "deep.yaml": "[" * 50000 + "]" * 50000}
    for name, text in cases.items():
        path = DIR / name
        path.write_text(text)
        _judge(path)
