"""Fault switches: each one produces the real misbehaviour, not a fake number.

Times are seconds since this process started; a restarted process starts its clock again.
"""
from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True)
class FaultConfig:
    leak_bytes_per_sec: int = 0
    fd_leak_per_sec: float = 0.0
    disk_bytes_per_sec: int = 0
    stall_at_sec: float | None = None
    regress_at_sec: float | None = None
    regress_by: int = 100
    fork_at_sec: float | None = None
    invariant_at_sec: float | None = None
    distfs_fail_ratio: float = 0.0
    distfs_fail_reason: str = "MISSING_SAMPLE"
    crash_at_sec: float | None = None
    crash_code: int = 3
    partial_report: bool = False
    slow_write_ms: int = 0
    last_error_at_sec: float | None = None
    replication_down_at_sec: float | None = None
    finality_delay_ms: int = 0
    state_root_diverge_at_sec: float | None = None

    @classmethod
    def from_opts(cls, o: dict[str, Any]) -> "FaultConfig":
        """From parsed flags (``simulator.flags.SIM_FLAGS`` dests): ``fault_<field>``."""
        return cls(**{f.name: o[f"fault_{f.name}"] for f in fields(cls)})


def _due(at: float | None, elapsed: float) -> bool:
    return at is not None and elapsed >= at


@dataclass
class Faults:
    """Applies resource faults each tick and answers the consensus/report fault questions."""

    cfg: FaultConfig
    work_dir: Path
    rng: random.Random
    _leak: list[bytearray] = field(default_factory=list)
    _fds: list[IO[bytes]] = field(default_factory=list)
    _owed: dict[str, float] = field(default_factory=dict)

    def tick(self, elapsed: float, dt: float) -> None:
        if _due(self.cfg.crash_at_sec, elapsed):
            print(f"soak-sim: fault: crashing with exit code {self.cfg.crash_code}", file=sys.stderr, flush=True)
            os._exit(self.cfg.crash_code)
        if self.cfg.leak_bytes_per_sec:
            n = self._take("leak", self.cfg.leak_bytes_per_sec * dt)
            if n:
                self._leak.append(bytearray(b"\x01" * n))  # touched, so it counts in RSS
        for _ in range(self._take("fds", self.cfg.fd_leak_per_sec * dt)):
            self._fds.append(open(os.devnull, "rb"))
        n = self._take("disk", self.cfg.disk_bytes_per_sec * dt)
        if n:
            with open(self.work_dir / "output" / "leaked-disk.bin", "ab") as fh:
                fh.write(b"\0" * n)

    def _take(self, key: str, amount: float) -> int:
        """Accumulate fractional amounts so low rates still happen at the right pace."""
        owed = self._owed.get(key, 0.0) + amount
        whole = int(owed)
        self._owed[key] = owed - whole
        return whole

    def stalled(self, elapsed: float) -> bool:
        return _due(self.cfg.stall_at_sec, elapsed)

    def regressed(self, elapsed: float) -> bool:
        return _due(self.cfg.regress_at_sec, elapsed)

    def forked(self, elapsed: float) -> bool:
        return _due(self.cfg.fork_at_sec, elapsed)

    def invariant_broken(self, elapsed: float) -> bool:
        return _due(self.cfg.invariant_at_sec, elapsed)

    def last_error(self, elapsed: float) -> str | None:
        return "fault: injected runtime error" if _due(self.cfg.last_error_at_sec, elapsed) else None

    def replication_down(self, elapsed: float) -> bool:
        return _due(self.cfg.replication_down_at_sec, elapsed)

    def state_root_diverged(self, elapsed: float) -> bool:
        return _due(self.cfg.state_root_diverge_at_sec, elapsed)

    def distfs_failure(self) -> str | None:
        if self.cfg.distfs_fail_ratio and self.rng.random() < self.cfg.distfs_fail_ratio:
            return self.cfg.distfs_fail_reason
        return None
