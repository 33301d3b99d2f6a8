"""Per-node state derived from the sequence of observations (reports, status polls).

Everything here is a pure function of the observations in order, so an exporter restarted
mid-run that re-reads the report files arrives at the same counters: no loss, no double count.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from exporter.reports import Report

HASH_WINDOW = 4096  # heights remembered for fork detection; bounded memory


@dataclass
class MonotonicCounter:
    """A run-cumulative counter from a source that resets when the node restarts (G2).

    When the source value goes down, the value before the drop is banked, so the exported
    counter never decreases and no failure is lost (Prometheus sees no reset at all).
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
class NodeView:
    latest: Report | None = None
    committed_height: int | None = None
    last_progress_s: float | None = None
    regressions: int = 0
    reports_total: int = 0
    last_report_s: float | None = None
    last_epoch_index: int | None = None
    errors: dict[str, int] = field(default_factory=dict)
    distfs_total: MonotonicCounter = field(default_factory=MonotonicCounter)
    distfs_failed: MonotonicCounter = field(default_factory=MonotonicCounter)
    distfs_reasons: dict[str, MonotonicCounter] = field(default_factory=dict)

    def observe(self, r: Report, from_report: bool) -> None:
        at = r.observed_at_ms / 1000
        if self.latest is not None and r.observed_at_ms < self.latest.observed_at_ms:
            return  # an older observation (status poll raced a report): nothing new
        self.latest = r
        if r.committed_height is not None:
            if self.committed_height is None or r.committed_height > self.committed_height:
                self.last_progress_s = at
            elif r.committed_height < self.committed_height:
                self.regressions += 1
            self.committed_height = r.committed_height
        if r.distfs_total is not None:
            self.distfs_total.observe(r.distfs_total)
        if r.distfs_failed is not None:
            self.distfs_failed.observe(r.distfs_failed)
        for reason, n in r.distfs_reasons.items():
            self.distfs_reasons.setdefault(reason, MonotonicCounter()).observe(n)
        if from_report:
            self.reports_total += 1
            self.last_report_s = at
            if r.epoch_index is not None:
                self.last_epoch_index = r.epoch_index


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
                self.by_height.popitem(last=False)
        elif known != block_hash and height not in self.mismatched:
            self.mismatched.add(height)
            self.mismatches += 1

    def see_report(self, r: Report) -> None:
        if r.committed_height is not None:
            self.see(r.committed_height, r.last_block_hash)
        for p in r.peer_heads:
            self.see(p.height, p.block_hash)
