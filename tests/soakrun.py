"""Helpers to run real soaks (``python3 -m runner``) from tests, several at once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import ROOT
from simulator.testing import port_block, release_block

FAST = ["--profile", "soak_smoke", "--epoch-secs", "2", "--tick-ms", "100", "--poll-interval-secs", "1",
        "--startup-timeout-secs", "40", "--seed", "7"]


SOAK_BLOCK = 200   # a soak of both G2 topologies uses base+1 .. base+143


def soak_ports() -> int:
    """A base port for a soak: a block that no other test process holds (pytest-xdist workers
    run side by side), given back when the soak has ended (``SoakRun.wait``)."""
    return port_block(SOAK_BLOCK, 16000, 22999)


@dataclass
class SoakRun:
    name: str
    out_dir: Path
    proc: subprocess.Popen[bytes]

    base_port: int

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            if self.proc.returncode is not None:
                release_block(self.base_port)

    @property
    def run_dir(self) -> Path:
        dirs = sorted(p for p in self.out_dir.iterdir() if p.is_dir())
        assert dirs, f"{self.name}: no run directory under {self.out_dir}"
        return dirs[-1]

    def summary(self) -> dict[str, Any]:
        path = self.run_dir / "summary.json"
        assert path.exists(), f"{self.name}: no summary.json; log:\n{(self.out_dir / 'runner.log').read_text()[-3000:]}"
        return json.loads(path.read_text())

    def gates(self, topology_index: int = 0) -> dict[str, Any]:
        return self.summary()["topologies"][topology_index]["gates"]


def start_soak(name: str, tmp: Path, base_port: int, args: list[str]) -> SoakRun:
    out = tmp / name
    out.mkdir(parents=True)
    log = open(out / "runner.log", "wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "runner", *FAST, "--out-dir", str(out),
                             "--base-port", str(base_port), *args],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    log.close()
    return SoakRun(name, out, proc, base_port)
