"""Start and stop real soak-sim processes for tests (no mocks): free ports, own working dirs,
status polling, report reading, and a teardown that always stops what was started."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from soakcore.errors import SoakError
from soakcore.services import free_port, http_get_json

ROLES = ("sequencer", "storage", "observer")
COMMON = ["triad_p2p_bootstrap", "--no-llm", "--reward-runtime-enable", "--node-tick-ms", "100",
          "--reward-runtime-epoch-duration-secs", "1"]


@dataclass
class SimProcess:
    """One soak-sim process with its own working and report directories."""

    name: str
    root: Path
    argv: list[str]
    gossip_port: int
    status_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def work(self) -> Path:
        return self.root / self.name / "work"

    @property
    def report_dir(self) -> Path:
        return self.root / self.name / "report"

    def start(self) -> "SimProcess":
        self.work.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "simulator", *self.argv, "--reward-runtime-report-dir", str(self.report_dir),
                "--status-listen", f"127.0.0.1:{self.status_port}"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        with open(self.root / self.name / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(argv, cwd=self.work, env=env, stdout=subprocess.DEVNULL, stderr=err)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def status(self) -> dict[str, Any]:
        return http_get_json(f"http://127.0.0.1:{self.status_port}/v1/chain/status", timeout=2)

    def height(self) -> int:
        return int(self.status()["consensus"]["committed_height"])

    def wait_ready(self, timeout: float = 15) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:  # fail at once, with the reason, not after the timeout
                err = (self.root / self.name / "stderr.log").read_text()[-2000:]
                raise AssertionError(f"{self.name} exited {self.proc.returncode}: {err}")
            return self.status().get("tick_count", 0) > 0
        wait_until(ready, timeout, f"{self.name} status")

    def reports(self) -> list[dict[str, Any]]:
        """Complete reports by epoch index (a file mid-write is skipped, as a careful reader would)."""
        docs = []
        for path in self.report_dir.glob("epoch-*.json"):
            try:
                docs.append(json.loads(path.read_text()))
            except ValueError:
                continue
        return sorted(docs, key=lambda d: d["settlement_report"]["epoch_index"])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        """Stop (resuming it first if paused); SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def triad_distributed(root: Path, node_id: str, extra: dict[str, list[str]] | None = None) -> dict[str, SimProcess]:
    """Three processes, one per role, gossiping over UDP on free loopback ports (not started)."""
    ports = {role: free_port() for role in ROLES}
    peers = [a for role in ROLES for a in (f"--triad-{role}-gossip", f"127.0.0.1:{ports[role]}")]
    # Each process binds its own role's gossip address; --bind is the viewer's TCP port.
    return {role: SimProcess(role, root, [*COMMON, "--topology", "triad_distributed", "--node-role", role,
                                          "--node-id", node_id, "--bind", f"127.0.0.1:{free_port()}", *peers,
                                          *(extra or {}).get(role, [])], ports[role])
            for role in ROLES}


def triad(root: Path, name: str, extra: list[str]) -> SimProcess:
    """One process with three embedded nodes on gossip ports P, P+1, P+2 (not started)."""
    port = free_udp_block(3)
    return SimProcess(name, root, [*COMMON, "--topology", "triad", "--node-id", name, "--bind",
                                   f"127.0.0.1:{free_port()}", "--triad-gossip-base-port", str(port), *extra], port)


def free_udp_block(n: int) -> int:
    """A port P with P..P+n-1 all free for UDP right now."""
    for _ in range(100):
        base = free_port()
        socks = []
        try:
            for i in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free UDP ports")


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (SoakError, OSError, ValueError, KeyError) as exc:  # not up yet / file mid-write
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


def port_block(n: int, lo: int = 23000, hi: int = 23999) -> int:
    """A port P in [lo, hi] with P..P+n-1 free for both UDP and TCP right now (tests pick from a
    fixed range below the ephemeral one, so a free_port() user elsewhere cannot take them)."""
    start = lo + (os.getpid() * 37) % max(1, hi - lo - n)
    for offset in range(0, hi - lo - n + 1):
        base = lo + (start - lo + offset) % (hi - lo - n + 1)
        if any(base + i in _HANDED_OUT for i in range(n)):
            continue   # given to an earlier caller that may not have bound it yet
        socks = []
        try:
            for i in range(n):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind(("127.0.0.1", base + i))
            _HANDED_OUT.update(range(base, base + n))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {n} free ports in {lo}-{hi}")


_HANDED_OUT: set[int] = set()
