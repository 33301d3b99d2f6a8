"""The chaos actions as data: one row per action, read by the plan validator, continuous
chaos, the run-state file, the exporter's chaos metrics, the gates' exemptions and the docs.

What a fault's window excuses is decided here, once:
- ``takes_node_away``: the node (its process or all of its traffic) is gone on purpose, so
  the node-scoped consensus and process gates exempt *that node* for the window + grace.
- ``stops_commits``: on a consensus-critical node (data per topology, default the
  sequencer) the fault can stop the whole topology committing, so the stall clock pauses
  for the window + grace. On any other node it does not pause the clock: with stakes
  50/30/20 the other two nodes keep a two-thirds quorum.
- ``grace_secs``: how long after the fault ends its effect may still show. It is the time
  the node needs to be back (relaunch, first report, catch-up), never a blanket minute.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class Action:
    name: str
    takes_node_away: bool
    stops_commits: bool
    grace_secs: float
    replaces_process: bool = False  # the node runs as a new process afterwards (restart/kill)
    needs_duration: bool = True     # duration_secs must be positive
    summary: str = ""


ACTIONS: Mapping[str, Action] = MappingProxyType({a.name: a for a in (
    # Relaunch, first status/report, catch-up of a few blocks: 15 s at the default 10 s epoch.
    Action("restart", takes_node_away=True, stops_commits=True, grace_secs=15, replaces_process=True,
           needs_duration=False, summary="SIGTERM, down for down_secs, relaunch"),
    Action("kill", takes_node_away=True, stops_commits=True, grace_secs=15, replaces_process=True,
           needs_duration=False, summary="SIGKILL, down for down_secs, relaunch"),
    # A continued process resumes at once; 10 s covers its first report after the pause.
    Action("pause", takes_node_away=True, stops_commits=True, grace_secs=10,
           summary="SIGSTOP for duration_secs, then SIGCONT"),
    # After a cut heals the node must hear from its peers again and catch up.
    Action("disconnect", takes_node_away=True, stops_commits=True, grace_secs=15,
           summary="every link of the node cut (gossip UDP, replication TCP)"),
    # More storage challenges per tick: only the DistFS gates exempt it, and their windowed
    # figures (5 m) still hold pressure-time checks for 5 m after it ends, hence 330 s.
    Action("challenge_pressure", takes_node_away=False, stops_commits=False, grace_secs=330,
           summary="more storage challenges per tick"),
)})
CHAOS_ACTIONS: tuple[str, ...] = tuple(ACTIONS)
# Actions that take a node away: node-scoped consensus/process gates exempt their windows.
DOWN: tuple[str, ...] = tuple(a.name for a in ACTIONS.values() if a.takes_node_away)
# Actions after which the node is a new process (its restarts and counters start again).
RELAUNCH: tuple[str, ...] = tuple(a.name for a in ACTIONS.values() if a.replaces_process)
# Actions that can stop a topology committing when they hit a consensus-critical node.
STOPS_COMMITS: tuple[str, ...] = tuple(a.name for a in ACTIONS.values() if a.stops_commits)


def grace(action: str) -> float:
    return ACTIONS[action].grace_secs
