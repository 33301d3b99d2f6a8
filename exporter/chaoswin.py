"""Chaos windows and the stall clock: what the exporter derives from the run's fault windows.

The runner writes every fault window into the run-state file (start, end or None while in
effect). From them, at each scrape:
- ``soak_chaos_active{node, action}``: 1 while at least one window of that action is open
  on the node (windows are counted: the first of two overlapping faults to end does not
  end the other).
- ``soak_chaos_exempt_until_timestamp_seconds{node, action}``: the latest window's end plus
  the action's grace (``soakcore.actions``); +Inf while a window is open (so the exemption
  cannot lapse between two scrapes, whatever the interval). A gate exempts a node while
  this lies in the future, so a fault shorter than a scrape interval is still seen: its end
  time survives in the value, whether or not a scrape fell inside it.
- ``soak_consensus_stall_seconds``: time since the topology's committed height last rose,
  not counting time in which a fault that can stop commits held a consensus-critical node
  (window + grace). The clock pauses for such faults and never restarts for them, and a
  fault on any other node does not pause it.
"""
from __future__ import annotations

import math
from typing import Iterable

from soakcore.actions import ACTIONS, DOWN, STOPS_COMMITS
from soakcore.runstate import ChaosWindow


def _end(w: ChaosWindow, now: float) -> float:
    return now if w.end is None else w.end


def active(windows: Iterable[ChaosWindow]) -> set[tuple[str, str]]:
    return {(w.node, w.action) for w in windows if w.end is None}


def exempt_until(windows: Iterable[ChaosWindow]) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for w in windows:
        until = math.inf if w.end is None else w.end + ACTIONS[w.action].grace_secs
        key = (w.node, w.action)
        out[key] = max(out.get(key, until), until)
    return out


def paused_seconds(windows: Iterable[ChaosWindow], nodes: set[str], actions: tuple[str, ...], since: float,
                   now: float) -> float:
    """Length of the union of the intervals (window + grace) of ``actions`` on ``nodes``
    within [since, now]: the time a clock does not count."""
    spans = sorted((max(w.start, since), min(_end(w, now) + ACTIONS[w.action].grace_secs, now))
                   for w in windows if w.node in nodes and w.action in actions)
    total, reach = 0.0, since
    for a, b in spans:
        a = max(a, reach)
        if b > a:
            total, reach = total + b - a, b
    return total


def stall_seconds(last_progress: float | None, started: float | None, windows: Iterable[ChaosWindow],
                  critical: set[str], now: float) -> float | None:
    """Seconds without committed-height progress outside critical faults; None before any
    node has started (nothing to judge). Before the first progress the clock runs from the
    topology's start: a topology that never commits stalls."""
    since = last_progress if last_progress is not None else started
    if since is None:
        return None
    return max(0.0, now - since - paused_seconds(windows, critical, STOPS_COMMITS, since, now))


def report_gap_seconds(last_arrival: float | None, node: str, windows: Iterable[ChaosWindow],
                       now: float) -> float | None:
    """Seconds since the node's newest report (or its start) arrived, not counting the time
    its own down faults (window + grace) held it: a node paused for minutes resumes its
    clock where it stopped, and a node that never reports counts from its start."""
    if last_arrival is None:
        return None
    return max(0.0, now - last_arrival - paused_seconds(windows, {node}, DOWN, last_arrival, now))


class Excuser:
    """Splits a node's height regressions into excused and not: a drop first seen while the
    node was exempt from a restart or kill (window + grace) is excused, any other is real.

    Judged at the scrape that first sees it (the exporter's clock); an exporter restarted
    mid-run judges the drops it re-reads at its first scrape.
    """

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.excused: dict[str, int] = {}

    def observe(self, node: str, total: int, exempt: bool) -> int:
        new = total - self.seen.get(node, 0)
        if new > 0 and exempt:
            self.excused[node] = self.excused.get(node, 0) + new
        self.seen[node] = max(total, self.seen.get(node, 0))
        return self.excused.get(node, 0)
