"""Every fixed port a run will use, checked free and reserved before anything starts.

Node ports (gossip UDP, replication TCP, status TCP; G1 and G2 alike) and a fixed ``--exporter-port`` are fixed by the
flags; Prometheus, Alertmanager, the webhook and a default exporter take free ports when they
start. Two checks, both before the run directory exists:

- a reservation: one ``flock``ed file per port in a machine-wide folder. A second soak-run
  wanting any of these ports is refused (exit 2) even while the first is still starting and
  its nodes have not bound yet, so two runs never talk to each other's nodes. The locks are
  held by the runner and by its reaper (runner/reaper.py), so they end with the last of them,
  whatever kills it; nothing stale is left to clean.
- a bind test of each port on the node's host, so a port held by any other program is exit 2
  naming the port and, where psutil can tell, the pid and name of the process holding it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import psutil

from runner.config import RunConfig
from runner.topology import node_specs
from soakcore.errors import UsageError

LOCK_DIR = Path(tempfile.gettempdir()) / "soak-run-ports"
REAPER_WAIT_S = 15.0


@dataclass(frozen=True)
class PortUse:
    port: int
    proto: str   # "udp" or "tcp"
    host: str
    what: str    # "triad_distributed/storage node"
    flag: str = "--base-port"  # the flag that moves it


def planned(cfg: RunConfig) -> list[PortUse]:
    """Every fixed port of the run, from the same node specs the run launches."""
    uses: list[PortUse] = []
    for index, name in enumerate(cfg.topologies):
        for spec in node_specs(name, index, cfg.run_id, cfg.run_dir / name, cfg.launch, cfg.custom_topologies):
            host = cfg.launch.bind_host
            # Gossip is UDP, replication TCP (G1 gossip + 100, G2 its own block); both protocols
            # are checked on every node port, so a node that also listens on the other protocol
            # (or a real one with other habits) cannot collide either.
            uses += [PortUse(p, proto, host, f"{name}/{spec.node} {what}") for ports, what in
                     ((spec.gossip_ports, "node"), (spec.replication_ports, "replication"))
                     for p in ports for proto in ("udp", "tcp")]
            status = urllib.parse.urlparse(spec.status_url) if spec.status_url else None
            if status is not None and status.port and status.hostname in ("127.0.0.1", "localhost", host):
                uses.append(PortUse(status.port, "tcp", host, f"{name}/{spec.node} status"))
    if cfg.exporter_port:
        uses.append(PortUse(cfg.exporter_port, "tcp", cfg.exporter_host, "exporter", "--exporter-port/--exporter-listen"))
    for u in uses:
        if not 0 < u.port < 65536:
            raise UsageError(f"port {u.port} ({u.what}) is out of range: choose a lower --base-port")
    seen: dict[tuple[int, str], PortUse] = {}
    for u in uses:
        other = seen.setdefault((u.port, u.proto), u)
        if other.what != u.what:
            raise UsageError(f"port {u.port}/{u.proto} is used twice: {other.what} and {u.what}")
    return list(seen.values())


def holder(port: int, proto: str) -> str:
    """'pid N (name)' of a process bound to the port, when psutil can tell."""
    try:
        conns = psutil.net_connections(kind=proto)
    except (psutil.Error, OSError):
        return "a process psutil cannot see"
    for c in conns:
        if c.laddr and c.laddr.port == port and c.pid and (proto == "udp" or c.status == psutil.CONN_LISTEN):
            try:
                return f"pid {c.pid} ({psutil.Process(c.pid).name()})"
            except psutil.Error:
                return f"pid {c.pid}"
    return "a process psutil cannot see (another user's, or a socket in TIME_WAIT)"


def _busy(u: PortUse) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if u.proto == "udp" else socket.SOCK_STREAM) as s:
        if u.proto == "tcp":  # as the servers do: TIME_WAIT leftovers do not make a port busy
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((u.host, u.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise UsageError(f"port {u.port}/{u.proto} ({u.what}): cannot bind {u.host}: {exc.strerror}") from None
    return False


class Reservation:
    """Held port locks; ``fds`` are passed on to the reaper so they outlive a killed runner."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _lock(fd: int) -> bool:
    """Take the port's lock. Held on behalf of a runner that is gone, it is its reaper still
    cleaning up (it holds the locks until it is done): wait for that, a few seconds at most."""
    deadline = time.monotonic() + REAPER_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            words = os.pread(fd, 4096, 0).decode(errors="replace").split()
            pid = int(words[2].rstrip(",")) if len(words) > 2 and words[2].rstrip(",").isdigit() else None
            if pid is None or psutil.pid_exists(pid) or time.monotonic() > deadline:
                return False
            time.sleep(0.1)


def _share(path: Path, mode: int) -> None:
    try:
        if path.stat().st_uid == os.geteuid():
            path.chmod(mode)
    except OSError:
        pass


def _open_lock(port: int) -> int:
    path = LOCK_DIR / f"{port}.lock"
    try:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        _share(LOCK_DIR, 0o1777)  # every user's runs lock here (sticky, like /tmp)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            _share(path, 0o666)
        except PermissionError:  # another user's lock file: lock it read-only, write nothing
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise UsageError(f"port lock {path}: {exc.strerror}; the port reservation of soak-runs needs it") from None
    return fd


def reserve(uses: list[PortUse], owner: str) -> Reservation:
    """Lock every port against other soak-runs, then check that no program holds any; UsageError
    (naming the port and its holder) otherwise. ``owner`` is written into each lock file."""
    fds: list[int] = []
    try:
        for port in sorted({u.port for u in uses}):
            fd = _open_lock(port)
            if not _lock(fd):
                who = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                what = next(u for u in uses if u.port == port)
                raise UsageError(f"port {port} ({what.what}) is reserved by another soak-run ({who}); "
                                 f"two runs must not share ports: choose another {what.flag}") from None
            fds.append(fd)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, owner.encode(), 0)
            except OSError:
                pass  # read-only: the lock itself is what counts
        for u in uses:
            if _busy(u):
                raise UsageError(f"port {u.port}/{u.proto} ({u.what}) is in use by {holder(u.port, u.proto)}; "
                                 f"stop it or choose another {u.flag}")
    except BaseException:
        Reservation(fds).release()
        raise
    return Reservation(fds)
