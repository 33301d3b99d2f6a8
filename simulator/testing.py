"""Start and stop real soak-sim processes for tests (no mocks): free ports, own working dirs,
status polling, report reading, and a teardown that always stops what was started."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

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
    """A port P in [lo, hi] with P..P+n-1 free for both UDP and TCP right now and claimed until
    ``release_block(P)`` or the process's exit (tests pick from fixed ranges below the ephemeral
    one, so a free_port() user elsewhere cannot take them). Claims are flock'ed files in
    CLAIM_DIR, so test processes running side by side (pytest-xdist workers) never get
    overlapping blocks; candidates are aligned to n so that blocks of one size pack the range."""
    count = (hi - lo + 1) // n
    first = (os.getpid() * 37) % max(1, count)
    for k in range(count):
        base = lo + ((first + k) % count) * n
        if any(base + i in _HANDED_OUT for i in range(n)):
            continue   # given to an earlier caller that may not have bound it yet
        claims = _claim(range(base, base + n))
        if claims is None:
            continue   # claimed by another test process
        socks = []
        try:
            for i in range(n):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind(("127.0.0.1", base + i))
            _HANDED_OUT.update(range(base, base + n))
            _CLAIMS[base] = (n, claims)
            return base
        except OSError:
            for fd in claims:
                os.close(fd)
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {n} free ports in {lo}-{hi}")


def release_block(base: int) -> None:
    """Give back a block from port_block (its user is done with the ports)."""
    n, fds = _CLAIMS.pop(base, (0, []))
    for fd in fds:
        os.close(fd)
    _HANDED_OUT.difference_update(range(base, base + n))


def _claim(ports: range) -> list[int] | None:
    """Exclusive locks on every port's claim file, or None (and nothing held) if any is taken."""
    CLAIM_DIR.mkdir(parents=True, exist_ok=True)
    fds: list[int] = []
    for port in ports:
        fd = os.open(CLAIM_DIR / f"{port}.claim", os.O_RDWR | os.O_CREAT, 0o666)
        fds.append(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            for held in fds:
                os.close(held)
            return None
    return fds


CLAIM_DIR = Path(tempfile.gettempdir()) / "soak-test-ports"
_HANDED_OUT: set[int] = set()
_CLAIMS: dict[int, tuple[int, list[int]]] = {}   # base -> (n, claim fds), held until released


# --- G2: oasis7_chain_runtime processes, launched with the upstream script's argv ---

G2_STAKES = {"sequencer": 50, "storage": 30, "observer": 20}


def g2_script_argv(case_base: int, role: str, topology: str = "triad", ts: str = "20260521-101500",
                   host: str = "127.0.0.1", epoch_secs: int = 60, tick_ms: int = 200) -> list[str]:
    """The argv scripts/p2p-longrun-soak.sh builds for node ``role`` (G2.md section 1), without
    the program name: gossip case_base+i+1, status +i+21, replication /ip4/h/tcp/+i+41."""
    ids = {r: f"soak-{topology}-{ts}-{r}" for r in ROLES}
    i = ROLES.index(role)
    gossip = {r: f"{host}:{case_base + j + 1}" for j, r in enumerate(ROLES)}
    repl = {r: f"/ip4/{host}/tcp/{case_base + j + 41}" for j, r in enumerate(ROLES)}
    argv = ["--node-id", ids[role], "--world-id", f"p2p-{topology}-{ts}", "--status-bind",
            f"{host}:{case_base + i + 21}", "--node-role", role, "--node-tick-ms", str(tick_ms),
            "--pos-slot-duration-ms", "12000", "--pos-ticks-per-slot", "10", "--pos-proposal-tick-phase", "9",
            "--pos-max-past-slot-lag", "256", "--reward-runtime-epoch-duration-secs", str(epoch_secs),
            "--reward-points-per-credit", "100", "--node-gossip-bind", gossip[role],
            "--replication-network-listen", repl[role], "--pos-no-adaptive-tick-scheduler",
            "--node-auto-attest-all" if role == "sequencer" else "--node-no-auto-attest-all"]
    for r in ROLES:
        argv += ["--node-validator", f"{ids[r]}:{G2_STAKES[r]}"]
    for r in ROLES:
        if r != role:
            argv += ["--node-gossip-peer", gossip[r], "--replication-network-peer", repl[r]]
    return argv


@dataclass
class G2Process(SimProcess):
    """One soak-sim-g2 process; status on its --status-bind, slim reports at the fixed path."""

    node_id: str = ""

    @property
    def report_dir(self) -> Path:
        return self.work / "output" / "chain-runtime" / self.node_id / "reward-runtime-report"

    def start(self) -> "G2Process":
        self.work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        with open(self.root / self.name / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "simulator.g2", *self.argv], cwd=self.work, env=env,
                                         stdout=subprocess.DEVNULL, stderr=err)
        return self

    def get(self, path: str) -> dict[str, Any]:
        return http_get_json(f"http://127.0.0.1:{self.status_port}{path}", timeout=2)

    def reports(self) -> list[dict[str, Any]]:
        docs = []
        for path in self.report_dir.glob("epoch-*.json"):
            try:
                docs.append(json.loads(path.read_text()))
            except ValueError:
                continue
        return sorted(docs, key=lambda d: d["settlement_report"]["epoch_index"])


@contextmanager
def running(procs: dict[str, G2Process]) -> Iterator[dict[str, G2Process]]:
    """Start every process, wait until each is ready, and stop them all at the end."""
    try:
        for p in procs.values():
            p.start()
        for p in procs.values():
            p.wait_ready()
        yield procs
    finally:
        for p in procs.values():
            p.stop()


def g2_triad(root: Path, case_base: int, extra: dict[str, list[str]] | None = None, epoch_secs: int = 1,
             tick_ms: int = 100, shared_key: bool = True) -> dict[str, G2Process]:
    """Three G2 processes as the upstream script launches them, each in its own working
    directory holding a copy of one config.toml (so they derive the same validator keys)."""
    key = os.urandom(32).hex()
    procs = {}
    for i, role in enumerate(ROLES):
        argv = g2_script_argv(case_base, role, epoch_secs=epoch_secs, tick_ms=tick_ms)
        proc = G2Process(role, root, [*argv, *(extra or {}).get(role, [])], case_base + i + 1,
                         status_port=case_base + i + 21, node_id=argv[1])
        proc.work.mkdir(parents=True, exist_ok=True)
        node_key = key if shared_key else os.urandom(32).hex()
        (proc.work / "config.toml").write_text(f'[node]\nprivate_key = "{node_key}"\npublic_key = ""\n')
        procs[role] = proc
    return procs
