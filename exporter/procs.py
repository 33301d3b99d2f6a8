"""Process stats straight from ``/proc``, and node directory sizes walked off the scrape path.

``proc_stats`` reads ``/proc/<pid>/stat`` (state, CPU ticks, threads, start ticks) and
``/proc/<pid>/statm`` (resident pages, summed exactly: the ``rss`` field of ``stat`` is an
approximate per-CPU read) and counts ``/proc/<pid>/fd`` (its size on Linux >= 6.2, a listing
before): the kernel counters psutil reads, without building a psutil ``Process``. The start ticks identify the
process: a pid reused by a new process is a new process (see ``SoakCollector.restarts``).

``DiskSizer`` walks a node's directory in a background thread, whole (no entry cap): a scrape
never waits for a walk, except the first one of a directory (bounded, ``FIRST_WAIT_S``); a
directory is walked again ``DISK_REFRESH_S`` after its last walk, or ten times as long as that
walk took when it is huge, so the walker's share of a core stays small.
"""
from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass

DISK_REFRESH_S = 10.0       # a directory is walked at most this often
DISK_MAX_SHARE = 0.1        # ... and the walker's busy share stays below this
FIRST_WAIT_S = 1.0          # a scrape waits this long (in all) for directories never walked
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_BOOT_TTL_S = 10.0


@dataclass(frozen=True, slots=True)
class ProcStats:
    up: bool
    rss: float = 0.0
    cpu_s: float = 0.0
    fds: float | None = 0.0       # None: the fd folder is not readable (another user's process)
    threads: float = 0.0
    start_time: float = 0.0
    start_ticks: int = 0          # identifies the process together with its pid


DOWN = ProcStats(False)
_boot: tuple[float, float] = (float("-inf"), 0.0)  # (read at, monotonic), btime


def boot_time() -> float:
    """The kernel's boot time (``btime`` of /proc/stat, as psutil reads it), re-read every 10 s."""
    global _boot
    now = time.monotonic()
    if now - _boot[0] >= _BOOT_TTL_S:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime"):
                    _boot = (now, float(line.split()[1]))
                    break
    return _boot[1]


def _fd_size_counts() -> bool:
    """Linux >= 6.2 reports the number of open fds as the size of /proc/<pid>/fd."""
    try:
        return os.stat("/proc/self/fd").st_size > 0
    except OSError:
        return False


_FD_SIZE = _fd_size_counts()


def _read_small(path: str) -> bytes:
    fd = os.open(path, _OPEN_FLAGS)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def proc_stats(pid: int | None) -> ProcStats:
    """The process's stats; ``DOWN`` when it is gone, a zombie, or /proc cannot be read."""
    if pid is None:
        return DOWN
    try:
        data = _read_small(f"/proc/{pid}/stat")
        # "pid (comm) state ...": comm may hold spaces and parentheses, the last ')' ends it.
        f = data[data.rindex(b")") + 2:].split()
        if f[0] in (b"Z", b"X", b"x"):
            return DOWN
        fds: float | None
        try:
            if _FD_SIZE:
                fds = float(os.stat(f"/proc/{pid}/fd").st_size)
            else:
                fds = float(len(os.listdir(f"/proc/{pid}/fd")))
        except PermissionError:
            fds = None
        resident = int(_read_small(f"/proc/{pid}/statm").split()[1])
        # Fields after the state: utime 11, stime 12, num_threads 17, starttime 19.
        start_ticks = int(f[19])
        return ProcStats(True, float(resident * PAGE_SIZE), (int(f[11]) + int(f[12])) / CLOCK_TICKS, fds,
                         float(int(f[17])), start_ticks / CLOCK_TICKS + boot_time(), start_ticks)
    except (OSError, ValueError, IndexError):
        return DOWN


def read_pid(spec: str) -> int | None:
    """A pid, or a pidfile holding one; None when the file is missing, malformed or not a
    regular file (opened without blocking: a FIFO in its place must not hang the scrape)."""
    text = spec
    if not spec.isdigit():
        try:
            fd = os.open(spec, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return None
                text = os.read(fd, 64).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
        except OSError:
            return None
    # pid 0 is the kernel's, never a node's: a pidfile holding 0 means "not running".
    return int(text) if text.isdigit() and int(text) > 0 else None


@dataclass(frozen=True, slots=True)
class DiskSize:
    bytes: float      # regular files, symlinks not followed
    entries: int      # files, folders and other entries counted


def walk(path: str) -> DiskSize | None:
    """The whole tree under ``path``; None when ``path`` is not a directory."""
    total, seen, stack, first = 0, 0, [path], True
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    seen += 1
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            total += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            if first and not os.path.isdir(path):
                return None
        first = False
    return DiskSize(float(total), seen)


class DiskSizer:
    """Directory sizes measured by a background thread (started when there is work)."""

    def __init__(self, refresh_s: float = DISK_REFRESH_S, first_wait_s: float = FIRST_WAIT_S) -> None:
        self.refresh_s, self.first_wait_s = refresh_s, first_wait_s
        self._sizes: dict[str, tuple[DiskSize | None, float]] = {}  # path -> size, next walk (monotonic)
        self._wanted: dict[str, None] = {}  # an ordered set
        self._busy: str | None = None       # being walked now
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._deadline = 0.0

    def begin_scrape(self) -> None:
        """Directories never walked are waited for up to ``first_wait_s`` in all, from now."""
        self._deadline = time.monotonic() + self.first_wait_s

    def size(self, path: str) -> DiskSize | None:
        with self._cond:
            got = self._sizes.get(path)
            if got is None or time.monotonic() >= got[1]:
                self._want(path)
            if got is None:
                self._cond.wait_for(lambda: path in self._sizes, max(0.0, self._deadline - time.monotonic()))
                got = self._sizes.get(path)
        return got[0] if got else None

    def _want(self, path: str) -> None:
        if path == self._busy:
            return
        self._wanted[path] = None
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, daemon=True, name="disk-sizer")
            self._worker.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._wanted:
                    self._worker = None
                    return
                path = self._busy = next(iter(self._wanted))
                del self._wanted[path]
            started = time.monotonic()
            try:
                size = walk(path)
            except Exception:  # noqa: BLE001 - a bug here must not end the walker for the other nodes
                size = None
            took = time.monotonic() - started
            with self._cond:
                self._sizes[path] = (size, time.monotonic() + max(self.refresh_s, took / DISK_MAX_SHARE))
                self._busy = None
                self._cond.notify_all()
