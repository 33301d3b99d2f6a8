"""Process stats via psutil, and a node directory's size at bounded cost."""
from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

import psutil

DISK_MAX_ENTRIES = 50_000   # stop walking after this many entries (bounded scrape cost)
DISK_REFRESH_S = 10.0       # a directory is walked at most this often


@dataclass(frozen=True)
class ProcStats:
    up: bool
    rss: float = 0.0
    cpu_s: float = 0.0
    fds: float = 0.0
    threads: float = 0.0
    start_time: float = 0.0


def proc_stats(pid: int | None) -> ProcStats:
    if pid is None:
        return ProcStats(False)
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            if p.status() == psutil.STATUS_ZOMBIE:
                return ProcStats(False)
            cpu = p.cpu_times()
            return ProcStats(True, float(p.memory_info().rss), cpu.user + cpu.system, float(p.num_fds()),
                             float(p.num_threads()), p.create_time())
    except (psutil.Error, OSError):
        return ProcStats(False)


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


class DiskSizer:
    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, float]] = {}

    def size(self, path: str) -> float | None:
        now = time.monotonic()
        cached = self._cache.get(path)
        if cached and now - cached[0] < DISK_REFRESH_S:
            return cached[1]
        total, seen, stack = 0, 0, [path]
        while stack and seen < DISK_MAX_ENTRIES:
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
                if not cached and seen == 0 and not os.path.isdir(path):
                    return None
        self._cache[path] = (now, float(total))
        return float(total)
