"""No orphans, whatever kills the runner (SIGKILL included).

Every process a run starts (nodes, relaunched nodes, exporter, Prometheus, Alertmanager, and
anything they start) inherits ``SOAK_RUN_OWNER=<runner pid>:<runner start time>:<run dir>``
in its environment: that marker is the proof of ownership, and pid reuse cannot fake it (the
runner's start time must match too).

Before anything else, the runner starts a reaper (``python3 -m runner.reaper MARKER``) in its
own session, holding the read end of a pipe whose write end only the runner has. When the
runner is gone (any exit: the pipe reaches EOF; also checked once a second), the reaper
continues and terminates every process carrying the marker (SIGCONT, SIGTERM, SIGKILL after
a grace) and deletes the run's nftables tables (``soak_<runner pid>_*``), then exits. It also
holds the run's port locks (runner/ports.py), so the next run cannot start on those ports
before the cleanup is done.

If the reaper itself was killed too, the next run finds processes whose marker names a runner
that no longer exists, and stale tables, and cleans them (``clean_stale``), saying what.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from runner import netcut

ENV = "SOAK_RUN_OWNER"
REPO = Path(__file__).resolve().parent.parent
TERM_GRACE_S = 3.0


@dataclass(frozen=True)
class Owner:
    pid: int
    started: float   # psutil create_time of the runner
    run_dir: str

    @classmethod
    def me(cls, run_dir: Path) -> "Owner":
        return cls(os.getpid(), psutil.Process().create_time(), str(run_dir))

    @property
    def marker(self) -> str:
        return f"{self.pid}:{self.started:.3f}:{self.run_dir}"

    @classmethod
    def parse(cls, text: str | None) -> "Owner | None":
        try:
            pid, started, run_dir = (text or "").split(":", 2)
            return cls(int(pid), float(started), run_dir)
        except ValueError:
            return None

    def alive(self) -> bool:
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 0.01
        except psutil.Error:
            return False


def marked() -> dict[Owner, list[psutil.Process]]:
    """Live processes of each run, by owner: those carrying its marker,
    and every member of a session whose leader carries it (the runner starts each node in its
    own session, so a helper a node starts with a cleared environment is found too)."""
    found: dict[Owner, list[psutil.Process]] = {}
    unmarked: list[tuple[int, psutil.Process]] = []
    leaders: dict[int, Owner] = {}
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}  # never this process or its ancestors
    for p in psutil.process_iter():
        try:
            if p.pid in me or p.status() == psutil.STATUS_ZOMBIE:
                continue
            sid = os.getsid(p.pid)
            owner = Owner.parse(p.environ().get(ENV))
        except (psutil.Error, OSError):
            continue
        if owner is None:
            unmarked.append((sid, p))
            continue
        found.setdefault(owner, []).append(p)
        if sid == p.pid:
            leaders[sid] = owner
    for sid, p in unmarked:
        if sid in leaders:
            found[leaders[sid]].append(p)
    return found


def _describe(p: psutil.Process) -> str:
    try:
        return f"pid {p.pid} ({p.name()})"
    except psutil.Error:
        return f"pid {p.pid}"


def terminate_all(procs: list[psutil.Process]) -> list[str]:
    """SIGCONT (a paused process cannot die of SIGTERM), SIGTERM, SIGKILL after a grace.
    psutil checks each process is still the one found (pid reuse)."""
    names = [_describe(p) for p in procs]
    for sig in (signal.SIGCONT, signal.SIGTERM):
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass
    alive = _wait_gone(procs, TERM_GRACE_S)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    _wait_gone(alive, 2.0)
    return names


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has ended (a zombie has: only its parent can reap it); the rest."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def reap(owner: Owner) -> list[str]:
    """End every process of ``owner``'s run and delete its tables; what was done, one item each."""
    done: list[str] = []
    for _ in range(5):  # a process forked meanwhile is found in the next round
        procs = marked().get(owner, [])
        if not procs:
            break
        done += terminate_all(procs)
    failed = netcut.heal_owned(owner.pid)
    done += [f"nft table of runner {owner.pid}: could not delete {t}" for t in failed]
    return done


def clean_stale() -> list[str]:
    """What dead runs left: their processes (marker of a runner that no longer exists) and
    nftables tables. Returns one line per dead run / table cleaned."""
    lines = []
    for owner, procs in marked().items():
        if not owner.alive():
            ended = terminate_all(procs)
            lines.append(f"run {owner.run_dir} (runner pid {owner.pid}, gone): ended {', '.join(ended)}")
    lines += [f"deleted nftables table {t} (its runner is gone)" for t in netcut.heal_stale()]
    return lines


def start(owner: Owner, keep_fds: list[int], log_path: Path) -> int:
    """Start the reaper; returns the pipe's write end, which the runner keeps open until it exits."""
    read_end, write_end = os.pipe()
    with open(log_path, "ab") as log:
        subprocess.Popen([sys.executable, "-m", "runner.reaper", owner.marker], stdin=read_end, stdout=log,
                         stderr=log, pass_fds=keep_fds, start_new_session=True, cwd="/",
                         env={**os.environ, ENV: owner.marker, "PYTHONPATH": str(REPO)})
    os.close(read_end)
    return write_end


def watch(owner: Owner) -> None:
    """Block until the runner is gone: EOF on stdin, or its pid no longer the runner."""
    while True:
        ready, _, _ = select.select([0], [], [], 1.0)
        if ready and not os.read(0, 4096):
            return
        if not owner.alive():
            return


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal Ctrl-C is for the runner
    owner = Owner.parse(argv[0] if argv else None)
    if owner is None:
        print("usage: python3 -m runner.reaper PID:START:RUN_DIR", file=sys.stderr)
        return 2
    watch(owner)
    started = time.monotonic()
    done = reap(owner)
    if done:
        print(f"soak-run reaper: runner {owner.pid} gone; cleaned in {time.monotonic() - started:.1f}s: "
              f"{', '.join(done)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
