"""The simulator core shared by both generations: one process's nodes, the tick loop (faults,
challenge pressure, node ticks, epoch timing) and the status document it keeps current.

What a generation writes (G1 full reports from one node, G2 slim files from each node) and
how its status looks is an ``Output``; the loop itself is the same for both.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from simulator.faults import Faults
from simulator.node import Node
from simulator.report import chain_status, epoch_report, write_report

ROLES = ("sequencer", "storage", "observer")


class Output(Protocol):
    def tick(self, now_ms: int, elapsed: float) -> None: ...
    def write_epoch(self, now_ms: int, elapsed: float) -> None: ...
    def status(self, now_ms: int, elapsed: float) -> dict[str, Any]: ...


class Sim:
    """The tick loop. ``epoch_s`` None: no reward epochs (no reports)."""

    def __init__(self, work: Path, nodes: list[Node], faults: Faults, tick_s: float, epoch_s: float | None,
                 output: Output) -> None:
        self.work, self.nodes, self.faults = work, nodes, faults
        self.storage = next((n for n in nodes if n.role == "storage"), None)
        self.tick_s, self.epoch_s, self.output = tick_s, epoch_s, output
        self.stop = threading.Event()
        self.status: dict[str, Any] = {}
        self.started = time.monotonic()

    def apply_pressure(self, now_ms: int) -> None:
        """``challenge_pressure.json`` in the working directory raises the storage node's rate."""
        if self.storage is None:
            return
        base = self.storage.base_challenges_per_tick
        try:
            doc = json.loads((self.work / "challenge_pressure.json").read_text())
            active = int(doc["until_unix_ms"]) > now_ms
            self.storage.challenges_per_tick = max(base, int(doc["challenges_per_tick"])) if active else base
        except (OSError, ValueError, KeyError, TypeError):
            self.storage.challenges_per_tick = base

    def run(self) -> int:
        start = self.started = time.monotonic()
        next_epoch = start + self.epoch_s if self.epoch_s else None
        while not self.stop.is_set():
            now_ms, elapsed = int(time.time() * 1000), time.monotonic() - start
            self.faults.tick(elapsed, self.tick_s)
            self.apply_pressure(now_ms)
            for node in self.nodes:
                node.tick(now_ms, elapsed)
            self.output.tick(now_ms, elapsed)
            if next_epoch is not None and self.epoch_s and time.monotonic() >= next_epoch:
                # After a SIGSTOP the node writes one report, not a burst of catch-up reports.
                next_epoch = max(next_epoch + self.epoch_s, time.monotonic())
                self.output.write_epoch(now_ms, elapsed)
            self.status = self.output.status(now_ms, elapsed)
            self.stop.wait(max(0.0, self.tick_s - (time.monotonic() - start - elapsed)))
        for node in self.nodes:
            node.close()
        return 0


class G1Output:
    """world_viewer_live: the reporting node (the sequencer in triad, else the only node) writes
    full G1 reports; in triad they carry the embedded storage node's DistFS state."""

    def __init__(self, nodes: list[Node], faults: Faults, report_dir: Path | None) -> None:
        self.reporter = nodes[0]
        self.storage = next((n for n in nodes if n.role == "storage"), None)
        self.faults, self.report_dir = faults, report_dir
        self.epochs_written = 0

    def tick(self, now_ms: int, elapsed: float) -> None:
        return

    def write_epoch(self, now_ms: int, elapsed: float) -> None:
        if self.report_dir is None:
            return
        self.epochs_written += 1
        ok = not self.faults.invariant_broken(elapsed)
        doc = epoch_report(self.reporter, self.storage, now_ms, ok, self.epochs_written)
        # Bump and persist the index before the slow write: a crash mid-write never reuses N.
        self.reporter.state.epoch_index += 1
        self.reporter.persist()
        write_report(self.report_dir / f"epoch-{doc['settlement_report']['epoch_index']}.json", doc,
                     self.faults.cfg.partial_report, self.faults.cfg.slow_write_ms)

    def status(self, now_ms: int, elapsed: float) -> dict[str, Any]:
        return chain_status(self.reporter, self.storage, now_ms, not self.faults.invariant_broken(elapsed),
                            self.report_dir or Path.cwd())
