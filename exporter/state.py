"""Per-node state derived from the sequence of observations.

Two streams feed a node: its epoch report files and its status endpoint. Counters are a
pure function of the report files taken in epoch order, so an exporter restarted mid-run
re-reads the files and arrives at exactly the counters it had: no loss, no double count
(a counter that went down would look like a reset to Prometheus and be counted again).
Status polls only make the gauges fresher (heights, status, progress time) and feed the
fork detector, whose evidence is the block hashes themselves.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from exporter.reports import PeerHead, Report

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


@dataclass
class DistfsCounters:
    total: MonotonicCounter = field(default_factory=MonotonicCounter)
    passed: MonotonicCounter = field(default_factory=MonotonicCounter)
    failed: MonotonicCounter = field(default_factory=MonotonicCounter)
    reasons: dict[str, MonotonicCounter] = field(default_factory=dict)
    seen: bool = False

    def observe(self, r: Report) -> None:
        if r.distfs_total is None:
            return
        self.seen = True
        self.total.observe(r.distfs_total)
        failed = r.distfs_failed or 0
        self.failed.observe(failed)
        # G2 has no passed field; a document with failed > total is clamped, never negative.
        self.passed.observe(r.distfs_passed if r.distfs_passed is not None else max(r.distfs_total - failed, 0))
        for reason, n in r.distfs_reasons.items():
            self.reasons.setdefault(reason, MonotonicCounter()).observe(n)


@dataclass
class NodeView:
    latest: Report | None = None          # newest observation of either stream (gauges)
    latest_report: Report | None = None   # newest report file (report gauges)
    peers: tuple[PeerHead, ...] = ()
    progress_height: int | None = None
    last_progress_s: float | None = None
    report_height: int | None = None
    regressions: int = 0
    reports_total: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    distfs: DistfsCounters = field(default_factory=DistfsCounters)

    def observe_report(self, r: Report) -> None:
        """A report file, in epoch order: every counter moves here and only here."""
        self.reports_total += 1
        self.latest_report = r
        if r.committed_height is not None:
            if self.report_height is not None and r.committed_height < self.report_height:
                self.regressions += 1
            self.report_height = r.committed_height
        self.distfs.observe(r)
        self._observe_gauges(r)

    def observe_status(self, r: Report) -> None:
        self._observe_gauges(r)

    def count_error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def _observe_gauges(self, r: Report) -> None:
        if self.latest is not None and r.observed_at_ms < self.latest.observed_at_ms:
            return  # older than what the other stream already showed
        self.latest = r
        if r.peer_heads:
            self.peers = r.peer_heads
        h = r.committed_height
        if h is not None and (self.progress_height is None or h > self.progress_height):
            self.last_progress_s = r.observed_at_ms / 1000
        if h is not None:
            self.progress_height = h


class HashBook:
    """Block hashes seen per height across all nodes; a second hash at a height is a fork."""

    def __init__(self) -> None:
        self.by_height: OrderedDict[int, str] = OrderedDict()
        self.mismatched: set[int] = set()
        self.mismatches = 0

    def see(self, height: int, block_hash: str | None) -> None:
        if not block_hash or height <= 0:
            return
        known = self.by_height.get(height)
        if known is None:
            self.by_height[height] = block_hash
            while len(self.by_height) > HASH_WINDOW:
                old, _ = self.by_height.popitem(last=False)
                self.mismatched.discard(old)
        elif known != block_hash and height not in self.mismatched:
            self.mismatched.add(height)
            self.mismatches += 1

    def see_report(self, r: Report) -> None:
        if r.committed_height is not None:
            self.see(r.committed_height, r.last_block_hash)
        for p in r.peer_heads:
            self.see(p.height, p.block_hash)
