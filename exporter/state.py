"""Per-node state derived from the sequence of observations.

Two streams feed a node: its epoch report files and its status endpoint. Counters are a
pure function of the report files taken in epoch order (a late report is placed where its
epoch belongs, see ``OrderedSeries``), so an exporter restarted mid-run re-reads the files
and arrives at exactly the counters it had: no loss, no double count (a counter that went
down would look like a reset to Prometheus and be counted again). Status polls only make
the gauges fresher (heights, status, progress time) and feed the fork detector, whose
evidence is the block hashes themselves.
"""
from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from exporter.g2status import G2Status
from exporter.ingest import Arrival
from exporter.reports import PeerHead, Report
from soakcore.catalog import HASH_KINDS

HASH_WINDOW = 4096  # heights remembered for fork detection: bounded memory, ~70 min at 1 block/s


@dataclass
class MonotonicCounter:
    """A run-cumulative counter from a source that resets when the node restarts (G2).

    When the source value goes down, the value before the drop is banked, so the exported
    counter never decreases and no failure counted before the restart is lost.
    """

    banked: int = 0
    last: int = 0

    def observe(self, value: int) -> None:
        if value < self.last:
            self.banked += self.last
        self.last = value

    @property
    def value(self) -> int:
        return self.banked + self.last


Key = tuple[int, int]  # (sequence, epoch): a node's report order; a restarted numbering sorts after


class OrderedSeries:
    """One field's values in report order, with ``MonotonicCounter``'s rule over adjacent pairs.

    Every adjacent pair (a, b) in key order with b < a is a drop: ``drops`` counts them and
    ``banked`` sums their a. A value that arrives late is inserted in its place: the pair
    (pred, succ) it splits is replaced by (pred, late) and (late, succ). Both sums only grow
    (if succ < pred, then late < pred or succ < late), and both are a pure function of the
    set of values, whatever their arrival order: an exporter restarted mid-run re-reads the
    files and arrives at the same counters. ``value`` = banked + the newest value is the
    run-cumulative counter of a source that resets on restart.

    Memory is bounded: only the newest ``WINDOW`` values are kept; a value older than all
    of them arrives too late to be placed and is ignored here (it is still counted as read).
    """

    WINDOW = 1024

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.values: dict[Key, int] = {}
        self.drops = 0
        self.banked = 0
        self._trimmed = False

    def insert(self, key: Key, value: int) -> bool:
        """False when the key is known already or too old to place."""
        keys = self.keys
        if keys and key > keys[-1]:  # the newest report (the usual case): only the pair (last, value)
            last = self.values[keys[-1]]
            if value < last:
                self.drops += 1
                self.banked += last
            keys.append(key)
            self.values[key] = value
            if len(keys) > self.WINDOW:
                del self.values[keys.pop(0)]
                self._trimmed = True
            return True
        if key in self.values or (self._trimmed and key < self.keys[0]):
            return False
        i = bisect.bisect(self.keys, key)
        pred = self.values[self.keys[i - 1]] if i > 0 else None
        succ = self.values[self.keys[i]] if i < len(self.keys) else None
        if pred is not None and succ is not None:
            self._pair(pred, succ, -1)
        if pred is not None:
            self._pair(pred, value, 1)
        if succ is not None:
            self._pair(value, succ, 1)
        self.keys.insert(i, key)
        self.values[key] = value
        if len(self.keys) > self.WINDOW:
            del self.values[self.keys.pop(0)]
            self._trimmed = True
        return True

    def _pair(self, a: int, b: int, sign: int) -> None:
        if b < a:
            self.drops += sign
            self.banked += sign * a

    @property
    def value(self) -> int:
        return self.banked + (self.values[self.keys[-1]] if self.keys else 0)


@dataclass
class DistfsCounters:
    total: OrderedSeries = field(default_factory=OrderedSeries)
    passed: OrderedSeries = field(default_factory=OrderedSeries)
    failed: OrderedSeries = field(default_factory=OrderedSeries)
    reasons: dict[str, OrderedSeries] = field(default_factory=dict)
    seen: bool = False

    def observe(self, key: Key, r: Report) -> None:
        if r.distfs_total is None:
            return
        self.seen = True
        self.total.insert(key, r.distfs_total)
        failed = r.distfs_failed or 0
        self.failed.insert(key, failed)
        # G2 has no passed field; a document with failed > total is clamped, never negative.
        self.passed.insert(key, r.distfs_passed if r.distfs_passed is not None else max(r.distfs_total - failed, 0))
        for reason, n in r.distfs_reasons.items():
            self.reasons.setdefault(reason, OrderedSeries()).insert(key, n)


# Readings kept per node for the topology lag: minutes of history at one reading per second.
TRAIL_LEN = 512
# A jump of the clock offset (node clock minus this machine's, at arrival) larger than this
# is a clock step. The offset of a healthy node moves by the write or poll latency (well
# under the few seconds a report may take to settle, status polls time out at 1.5 s) and by
# NTP slewing (milliseconds); a minute is far outside both, and far inside the steps that
# matter (an hour: a report that would have frozen the node's gauges).
CLOCK_STEP_S = 60.0


@dataclass
class NodeView:
    """Gauges follow report order (epoch) and arrival order (status polls), never the node's
    clock: a report stamped an hour ahead is recorded as a clock step and does not hide the
    reports after it. Times derived here (progress, arrival) are on this machine's clock."""

    latest: Report | None = None          # newest observation by arrival (gauges)
    latest_report: Report | None = None   # newest report file in report order (report gauges)
    latest_key: Key | None = None
    peers: tuple[PeerHead, ...] = ()
    progress_height: int | None = None
    last_progress_s: float | None = None  # arrival time at which committed height last rose
    heights: OrderedSeries = field(default_factory=OrderedSeries)
    reports_total: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    distfs: DistfsCounters = field(default_factory=DistfsCounters)
    last_arrival_s: float | None = None   # arrival of the most recent report file
    status_arrival_s: float | None = None  # time of the last status poll that answered
    clock_offset_s: float | None = None    # observed_at minus arrival, last observation
    clock_steps: int = 0
    sequence_restarts: int = 0             # the node's report numbering started over
    ingest_failures: int = 0               # polls of the report folder that failed as a whole
    notes: list[str] = field(default_factory=list)  # for the log, taken by the collector
    version: int = 0                       # +1 at every reading or error: exposition caches key on it
    # (arrival, committed height) of the latest readings: other nodes' lag is measured
    # against this node's height at the same moment (exporter/topolag.py).
    trail: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=TRAIL_LEN))
    # G2 status (HEAD schema): the latest good reading of its extra fields (None after a bad
    # one: no stale gauges), and its process-cumulative counters banked across restarts.
    head_schema: bool = False
    g2: G2Status | None = None
    g2_counters: dict[str, MonotonicCounter] = field(default_factory=dict)

    @property
    def regressions(self) -> int:
        return self.heights.drops

    @property
    def report_height(self) -> int | None:
        return self.heights.values[self.heights.keys[-1]] if self.heights.keys else None

    def observe_report(self, a: Arrival) -> None:
        """A report file: every counter moves here and only here, in report order."""
        r, key = a.report, (a.sequence, a.epoch)
        self.version += 1
        self.reports_total += 1
        if self.latest_key is not None and a.sequence > self.latest_key[0]:
            self.sequence_restarts += 1
        self.last_arrival_s = a.arrived_s if self.last_arrival_s is None else max(self.last_arrival_s, a.arrived_s)
        self._observe_clock(r, a.arrived_s)
        if r.committed_height is not None:
            self.heights.insert(key, r.committed_height)
        self.distfs.observe(key, r)
        if self.latest_key is not None and key < self.latest_key:
            return  # a late report of an older epoch: its place in the counters, not the gauges
        self.latest_key, self.latest_report = key, r
        # A status poll answered after this file was written is fresher: keep its readings.
        if self.status_arrival_s is None or a.arrived_s >= self.status_arrival_s:
            self._observe_gauges(r, a.arrived_s)

    def observe_status(self, r: Report, arrived_s: float) -> None:
        self.version += 1
        self.status_arrival_s = arrived_s
        self._observe_clock(r, arrived_s)
        self._observe_gauges(r, arrived_s)

    def observe_g2(self, g: G2Status | None) -> None:
        """A HEAD status document's G2 fields (None: the document had a bad one)."""
        self.version += 1
        self.head_schema, self.g2 = True, g
        if g is None:
            return
        for key, value in g2_counter_values(g):
            counter = self.g2_counters.get(key)
            if counter is None:
                counter = self.g2_counters[key] = MonotonicCounter()
            counter.observe(value)

    def count_error(self, reason: str) -> None:
        self.version += 1
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def _observe_clock(self, r: Report, arrived_s: float) -> None:
        offset = r.observed_at_ms / 1000 - arrived_s
        if self.clock_offset_s is not None and abs(offset - self.clock_offset_s) > CLOCK_STEP_S:
            self.clock_steps += 1
            self.notes.append(f"clock step: the node's time is {offset:+.1f}s from the reading's arrival here "
                              f"(was {self.clock_offset_s:+.1f}s)")
        self.clock_offset_s = offset

    def _observe_gauges(self, r: Report, arrived_s: float) -> None:
        self.latest = r
        if r.peer_heads:
            self.peers = r.peer_heads
        h = r.committed_height
        if h is not None and (self.progress_height is None or h > self.progress_height):
            self.last_progress_s = arrived_s
        if h is not None:
            self.progress_height = h
            if not self.trail or arrived_s >= self.trail[-1][0]:
                self.trail.append((arrived_s, h))


def g2_counter_values(g: G2Status) -> list[tuple[str, int]]:
    """The G2 counters that reset when the node restarts, keyed for banking: ``timing/<kind>``,
    ``missed_slots``, ``udp/<i>`` and ``libp2p/<i>`` (i: the index in ``G2Status.udp``)."""
    out = [(f"timing/{i}", v) for i, v in enumerate(g.timing_rejections)]
    out.append(("missed_slots", g.missed_slots))
    for name, totals in (("udp", g.udp), ("libp2p", g.libp2p)):
        if totals is not None:
            out += [(f"{name}/{i}", v) for i, v in enumerate(totals)]
    return out


class _Values:
    """One kind of hash per key (a height): the first value seen, and the keys seen with another."""

    def __init__(self) -> None:
        self.first: OrderedDict[object, str] = OrderedDict()
        self.mismatched: set[object] = set()
        self.mismatches = 0
        self.keys = 0

    def see(self, key: object, value: str) -> None:
        known = self.first.get(key)
        if known is None:
            self.keys += 1
            self.first[key] = value
            while len(self.first) > HASH_WINDOW:
                old, _ = self.first.popitem(last=False)
                self.mismatched.discard(old)
        elif known != value and key not in self.mismatched:
            self.mismatched.add(key)
            self.mismatches += 1


class HashBook:
    """Hashes seen per height across all nodes (``soakcore.catalog.HASH_KINDS``): a second
    block hash at a height is a fork; a second execution block hash at an executed height, or a
    second state root for one executed block (height and execution block hash), a divergence."""

    def __init__(self) -> None:
        self.kinds = {kind: _Values() for kind in HASH_KINDS}

    @property
    def mismatches(self) -> int:
        """Heights with two block hashes (``soak_consensus_hash_mismatches_total``)."""
        return self.kinds["block_hash"].mismatches

    def see(self, height: int, block_hash: str | None, kind: str = "block_hash", key: object = None) -> None:
        if block_hash and height > 0:
            self.kinds[kind].see(height if key is None else key, block_hash)

    def see_report(self, r: Report) -> None:
        if r.committed_height is not None:
            self.see(r.committed_height, r.last_block_hash)
        for p in r.peer_heads:
            self.see(p.height, p.block_hash)
        h = r.last_execution_height
        if h:
            self.see(h, r.last_execution_block_hash, "execution_block_hash")
            self.see(h, r.last_execution_state_root, "execution_state_root", (h, r.last_execution_block_hash))
