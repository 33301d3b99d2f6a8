"""The chaos actions as data: one row per action, read by the plan validator, continuous
chaos, the run-state file, the exporter's chaos metrics, the gates' exemptions and the docs
(``docs/chaos.md`` is rendered from this table: ``python3 -m soakcore.actions``).

What a fault's window excuses is decided here, once:
- ``takes_node_away``: the node (its process or all of its traffic) is gone on purpose, so
  the node-scoped consensus and process gates exempt *that node* for the window + grace.
- ``stops_commits``: on a consensus-critical node (data per topology, default the
  sequencer) the fault can stop the whole topology committing, so the stall clock pauses
  for the window + grace. On any other node it does not pause the clock: with stakes
  50/30/20 the other two nodes keep a two-thirds quorum.
- ``grace_secs``: how long after the fault ends its effect may still show. It is the time
  the node needs to be back (relaunch, first report, catch-up), never a blanket minute.

Each action also names its plan fields (beyond the common ``id``, ``at_sec``, ``topology``,
``node``, ``down_secs``, ``duration_secs``) with their validation, and its Chaos Mesh
counterpart, so a later multi-host runner can emit the same plan for Kubernetes.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Mapping

FieldKind = Literal["number", "integer", "choice", "nodes"]
Timing = Literal["down", "duration", "none"]


@dataclass(frozen=True)
class Field:
    """One plan field of an action. ``number``/``integer``: within ``low``..``high``;
    ``choice``: one of ``choices``; ``nodes``: a list of other nodes of the event's topology
    (default, ``None``: every other node)."""
    name: str
    kind: FieldKind
    doc: str
    default: Any = None
    required: bool = False
    low: float = 0
    high: float = 0
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        rng = {"number": f"number {self.low:g}..{self.high:g}", "integer": f"integer {self.low:g}..{self.high:g}",
               "choice": " / ".join(self.choices), "nodes": "list of node labels"}[self.kind]
        default = "required" if self.required else (
            "default: every other node" if self.kind == "nodes" else f"default {self.default!r}")
        return f"`{self.name}` ({rng}; {default}): {self.doc}"


@dataclass(frozen=True)
class Action:
    name: str
    takes_node_away: bool
    stops_commits: bool
    grace_secs: float
    replaces_process: bool = False  # the node runs as a new process afterwards (restart/kill)
    timing: Timing = "duration"     # down: down_secs (then relaunch); duration: duration_secs > 0; none: not healed
    summary: str = ""
    fields: tuple[Field, ...] = ()
    chaos_mesh: str = "none"        # the Kubernetes counterpart (Chaos Mesh kind and action)
    how: str = ""                   # how it is made, verified and healed (docs/chaos.md)

    @property
    def needs_duration(self) -> bool:  # duration_secs must be positive
        return self.timing == "duration"

    def defaults(self) -> dict[str, Any]:
        return {f.name: f.default for f in self.fields}


ACTIONS: Mapping[str, Action] = MappingProxyType({a.name: a for a in (
    # Relaunch, first status/report, catch-up of a few blocks: 15 s at the default 10 s epoch.
    Action("restart", takes_node_away=True, stops_commits=True, grace_secs=15, replaces_process=True,
           timing="down", summary="SIGTERM, down for down_secs, relaunch",
           how="SIGTERM; the old pid must be gone within 2 s; relaunched after down_secs and seen running.",
           chaos_mesh="PodChaos pod-kill (gracePeriod > 0)"),
    Action("kill", takes_node_away=True, stops_commits=True, grace_secs=15, replaces_process=True,
           timing="down", summary="SIGKILL, down for down_secs, relaunch",
           how="SIGKILL; the old pid must be gone within 2 s; relaunched after down_secs and seen running.",
           chaos_mesh="PodChaos container-kill"),
    # A continued process resumes at once; 10 s covers its first report after the pause.
    Action("pause", takes_node_away=True, stops_commits=True, grace_secs=10,
           summary="SIGSTOP for duration_secs, then SIGCONT",
           how="SIGSTOP, the process must be seen stopped; SIGCONT at the end and on any interrupt.", chaos_mesh="none (no SIGSTOP in Chaos Mesh)"),
    # After a cut heals the node must hear from its peers again and catch up.
    Action("disconnect", takes_node_away=True, stops_commits=True, grace_secs=15,
           summary="every link of the node cut (gossip UDP, replication TCP)",
           how="nftables drops UDP to and from the node's gossip ports and TCP to and from its replication "
               "listen ports; a UDP probe must get EPERM and a TCP connect must time out; the table is deleted "
               "and the UDP probe must pass again.",
           chaos_mesh="NetworkChaos partition (direction both, target: every other pod)"),
    # More storage challenges per tick: only the DistFS gates exempt it, and their windowed
    # figures (5 m) still hold pressure-time checks for 5 m after it ends, hence 330 s.
    Action("challenge_pressure", takes_node_away=False, stops_commits=False, grace_secs=330,
           summary="more storage challenges per tick",
           how="writes <work>/challenge_pressure.json (read back); removed at the end (simulator only).", chaos_mesh="none (application-level)"),
    # Conservative: a partition from every other node is a disconnect, and even a partial one
    # can leave the node (or, on the sequencer, the topology) without a quorum of links, so it
    # excuses what a disconnect excuses, with the same catch-up grace.
    Action("partition", takes_node_away=True, stops_commits=True, grace_secs=15,
           summary="only the links between node and peers cut (gossip UDP; replication TCP per peer where the "
                   "nodes run in cgroups, else only when peers is every other node)",
           fields=(Field("peers", "nodes", "the nodes cut off from `node`", default=None),
                   Field("direction", "choice", "both; to: node -> peers only; from: peers -> node only",
                         default="both", choices=("both", "to", "from"))),
           chaos_mesh="NetworkChaos partition (direction both/to/from, target: peers)",
           how="nftables drops UDP whose source is one of the node's gossip ports and destination one of "
               "a peer's (`to`), the reverse (`from`), or both: exactly those links. TCP: on a host with a "
               "writable cgroup v2 hierarchy under /sys/fs/cgroup every node is launched in its own cgroup "
               "`soak_<runner pid>_<topology>/<node>`, and for each cut direction A -> B the table drops what "
               "A's sockets send to B's replication listen ports (output hook, `socket cgroupv2`) and what A's "
               "listeners send to B's sockets (input hook, socket lookup): exactly that pair's TCP, and TCP "
               "needs both directions, so a one-way partition breaks the pair's connections both ways, as on "
               "a real network. Without cgroups TCP is cut (the node's listen ports, as disconnect) only when "
               "`peers` is every other node and the direction both. Raw-socket probes carrying the real "
               "ports must show the cut pair refused and another link (the node to a node outside peers, two "
               "peers, or the other direction) delivering; with cgroups a TCP connect from the node's cgroup "
               "to a peer's listener must time out and one to a node outside peers (or between two peers) "
               "must connect. After the table is deleted the cut pair must deliver (and connect) again, else "
               "a heal error."),
    # Lost packets are retried, so the node stays: nothing is taken away and commits go on.
    # Its height may still trail while loss is high; the lag gate reads takes_node_away, so a
    # loss heavy enough to lag is a real finding. Grace 10 s: one report after the loss ends.
    Action("loss", takes_node_away=False, stops_commits=False, grace_secs=10,
           summary="that share of the node's packets (both directions) dropped at random",
           fields=(Field("percent", "number", "share of packets dropped", default=10, low=0, high=100),),
           chaos_mesh="NetworkChaos loss",
           how="nftables `numgen random mod 1000 < percent*10` drops on the node's UDP gossip and TCP "
               "replication ports, both directions. Verified by 2,000 raw-socket datagrams from the node's "
               "port to a probe socket: the refused share must be within 5 points of `percent`; the table is "
               "deleted and checked gone."),
    # Late packets still arrive: the node stays, commits go on (grace 10 s, as loss). A delay
    # long against the epoch can make the node trail; the lag gate then reports it (a finding).
    Action("delay", takes_node_away=False, stops_commits=False, grace_secs=10,
           summary="what the node sends (gossip UDP, replication TCP) held back delay_ms +/- jitter_ms",
           fields=(Field("delay_ms", "number", "added one-way latency of each packet the node sends",
                         default=100, low=1, high=10_000),
                   Field("jitter_ms", "number", "each packet's delay is uniform in delay_ms +/- jitter_ms "
                         "(at least 0; packets may overtake each other, as with netem)", default=0, low=0,
                         high=10_000)),
           chaos_mesh="NetworkChaos delay (latency, jitter)",
           how="the kernel has no netem, so the node's egress (UDP from its gossip ports, TCP from its "
               "replication listen ports) jumps to a chain whose one rule queues it to an NFQUEUE with "
               "`bypass` (xt NFQUEUE through nft_compat: no nft `queue` expression here). A runner-owned "
               "reader (`python3 -m runner.nfqueue`, pure-Python nfnetlink_queue, copy mode META, fail-open) "
               "accepts each packet delay_ms +/- jitter_ms after it was queued. 20 raw-socket probes from "
               "the node's port: their median must rise by delay_ms within jitter_ms + 25 ms over the "
               "baseline measured before; after the table is deleted the median must be within 25 ms of the "
               "baseline again, else a heal error. The reader exits when the runner closes its stdin or dies "
               "(the reaper also ends it; with no reader `bypass` lets packets through undelayed). Any nft "
               "table deleted on the machine flushes every queue (the packets in flight then are lost, "
               "not late), and one added meanwhile can make them pass the delay twice; a probe batch hit by "
               "either is measured again (three batches at most). Measured here: 100 +/- 10 ms rose 96..110 ms, "
               "200 ms 200..203 ms. Reader throughput (1 ms delay, bursts sent at once, a shared 2-core "
               "machine): 20,000 datagrams passed whole at 26,000..30,000 packets/s at load average 40; at load "
               "average 90..100, 800..3,400 packets/s, and one burst of 5,000 lost three quarters (not "
               "investigated; a node's gossip is far below that). The queue is set to fail open (past 20,000 "
               "packets, or a notification that cannot be delivered: no delay, no loss)."),
    # The same reasoning as loss: a slow link is not a missing node. A rate below what the
    # node's gossip needs would look like a cut; plans that want that use disconnect.
    Action("bandwidth", takes_node_away=False, stops_commits=False, grace_secs=10,
           summary="the node's traffic limited to rate_kbit each way (over it: dropped)",
           fields=(Field("rate_kbit", "integer", "the rate in kbit/s, each direction", default=1024,
                         low=8, high=10_000_000),),
           chaos_mesh="NetworkChaos bandwidth",
           how="nftables named limits `rate over rate_kbit*125 bytes/second` drop what exceeds the rate: "
               "one limit for what the node's ports send (UDP and TCP together), one for what they receive. "
               "The bucket starts full (one second of rate), so a raw-socket probe from the node's port sends "
               "as fast as it can for 1 s, then measures 1 s: it must pass 0.5..1.5 times the rate."),
    # Not healed, and nothing is excused: a damaged store is exactly what the DistFS gates
    # exist to see, so its challenges fail and the gates fail. grace 0: no window to extend.
    Action("corrupt_store", takes_node_away=False, stops_commits=False, grace_secs=0, timing="none",
           summary="bytes of that many blobs of the storage node's store flipped, or the blobs removed "
                   "(not healed)",
           fields=(Field("blobs", "integer", "how many blobs are damaged", default=1, low=1, high=1_000_000),
                   Field("mode", "choice", "flip: bytes flipped in place; delete: the blob removed",
                         default="flip", choices=("flip", "delete"))),
           chaos_mesh="IOChaos mistake (flip) / fault ENOENT (delete)",
           how="picks `blobs` files of the store (`<work>/output/*/*/store/`, every file but `index.json`; "
               "G1 `node-distfs/<node_id>`, G2 `chain-runtime/<node_id>`), seeded by the event id, and flips "
               "every 64th byte or deletes them; the files must have changed. Then it watches the node's own "
               "reports for up to 60 s and logs its cumulative failed DistFS checks rising (HASH_MISMATCH, "
               "MISSING_SAMPLE). Never healed: the DistFS gates must fail."),
    # Two relaunches (into the skew and out of it): what a restart excuses, with its grace. A
    # skew within the DistFS probes' 5,000 ms allowance must not fail them; beyond it, it may.
    Action("clock_skew", takes_node_away=True, stops_commits=True, grace_secs=15, replaces_process=True,
           summary="the node relaunched with its clock shifted by offset_ms for duration_secs, then "
                   "relaunched with the true clock",
           fields=(Field("offset_ms", "number", "the shift of the node's wall clock (negative: behind)",
                         default=2000, low=-86_400_000, high=86_400_000),),
           chaos_mesh="TimeChaos (timeOffset)",
           how="SIGTERM, then the node is relaunched with `LD_PRELOAD` libfaketime (Debian `faketime`) and "
               "`FAKETIME=+/-seconds` (monotonic clock left true); its `observed_at_unix_ms` (status endpoint, "
               "else a new report against the file's mtime) must be off by `offset_ms` within 1,000 ms. At the "
               "end it is relaunched without libfaketime and must be off by less than 1,000 ms."),
)})
CHAOS_ACTIONS: tuple[str, ...] = tuple(ACTIONS)
# Actions that take a node away: node-scoped consensus/process gates exempt their windows.
DOWN: tuple[str, ...] = tuple(a.name for a in ACTIONS.values() if a.takes_node_away)
# Actions after which the node is a new process (its restarts and counters start again).
RELAUNCH: tuple[str, ...] = tuple(a.name for a in ACTIONS.values() if a.replaces_process)
# Actions that can stop a topology committing when they hit a consensus-critical node.
STOPS_COMMITS: tuple[str, ...] = tuple(a.name for a in ACTIONS.values() if a.stops_commits)
# Every action-specific plan field name (the common ones are runner.plan's ChaosEvent).
ACTION_FIELDS: frozenset[str] = frozenset(f.name for a in ACTIONS.values() for f in a.fields)
# The actions of issue 11 ("Chaos a P2P network really meets"); those not in ACTIONS are not built.
PLANNED: tuple[str, ...] = ("partition", "loss", "delay", "bandwidth", "clock_skew", "corrupt_store")
DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "chaos.md"


def grace(action: str) -> float:
    return ACTIONS[action].grace_secs


def render_doc() -> str:
    """``docs/chaos.md``: the actions, their fields, what their windows excuse, Chaos Mesh."""
    timing = {"down": "`down_secs` (then relaunched)", "duration": "`duration_secs` > 0, then healed",
              "none": "none: not healed"}
    lines = ["# Chaos actions", "",
             "Generated from `soakcore/actions.py` by `python3 -m soakcore.actions` (a test fails when it is "
             "stale). Every event has `id`, `at_sec`, `topology` (`all` or a name), `node`, `action`, "
             "`down_secs` and `duration_secs`; the fields below are the action's own.", "",
             "| action | effect | time | fields | takes the node away | pauses the stall clock (critical node) "
             "| grace | Chaos Mesh |", "|---|---|---|---|---|---|---|---|"]
    for a in ACTIONS.values():
        fields = "<br>".join(f.describe() for f in a.fields) or "-"
        lines.append(f"| `{a.name}` | {a.summary} | {timing[a.timing]} | {fields} | "
                     f"{'yes' if a.takes_node_away else 'no'} | {'yes' if a.stops_commits else 'no'} | "
                     f"{a.grace_secs:g} s | {a.chaos_mesh} |")
    lines += ["", "## How each action is made, verified and healed", ""]
    lines += [f"- `{a.name}`: {a.how}" for a in ACTIONS.values() if a.how]
    lines += ["", "Network faults need root and nftables: each is a table `inet soak_<runner pid>_...` with an "
              "output-hook chain on `lo` (no netem needed; `partition` adds an input-hook chain, `delay` runs "
              "its chain after the others so what they drop is refused at once); deleting the table heals it. "
              "The run deletes its tables and node cgroups at its end; after a SIGKILLed runner its reaper does "
              "(it also ends the delay readers, which carry the run's marker), and failing that the next run "
              "deletes what a runner that no longer exists left, and says so. Without root there is no relay "
              "fallback yet: network faults are logged as skipped, never turned into a pause.", ""]
    planned = [f"`{n}`" for n in PLANNED if n not in ACTIONS]
    if planned:
        lines += [f"Planned, not built yet (issue 11): {', '.join(planned)}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if DOC_PATH.is_file() and DOC_PATH.read_text() == render_doc() else f"{DOC_PATH} is stale")
    DOC_PATH.write_text(render_doc())
    print(DOC_PATH)
