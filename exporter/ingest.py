"""Incremental reader of one node's report directory: each file parsed once.

A file that does not parse is retried while it may still be being written (the real node
writes non-atomically); once it has been unchanged for ``settle_s`` it is counted once
under its reason and logged once. Files are taken in epoch-index order.

Cost does not grow with the run: the directory is listed only when its mtime moved (a file
was created) or is too recent to trust, and only pending files are stat'ed on other polls.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from exporter.reports import MAX_REPORT_BYTES, Report, ReportError, parse_report

log = logging.getLogger("soak-exporter")
REPORT_NAME = re.compile(r"^epoch-(\d+)\.json$")
# Reasons that may be a file still being written; others (too_large, io) are final at once.
RETRIED = frozenset({"partial", "invalid_json", "schema"})
# A directory mtime this close to now may hide a file created in the same timestamp tick
# as our last listing, so such a directory is listed again (git's "racy" rule).
RACY_S = 2.0


@dataclass
class ReportDir:
    node: str
    path: Path
    settle_s: float = 3.0      # unchanged this long and still invalid = counted as an error
    clock: Callable[[], float] = time.time
    done: set[str] = field(default_factory=set)  # parsed or given up on; never read again
    pending: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # name -> size, mtime_ns, since
    _listed_mtime_ns: int | None = None

    def poll(self) -> tuple[list[Report], list[str]]:
        """New reports (in epoch order) and new error reasons since the last poll."""
        try:
            names = self._new_names()
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            log.warning("%s: cannot list report dir: %s", self.path, exc.strerror)
            return [], []
        reports, errors = [], []
        for name in sorted(names | set(self.pending), key=lambda n: int(REPORT_NAME.match(n).group(1))):  # type: ignore[union-attr]
            result = self._read(name)
            if isinstance(result, Report):
                reports.append(result)
            elif result is not None:
                errors.append(result)
        return reports, errors

    def _new_names(self) -> set[str]:
        st = os.stat(self.path)
        if st.st_mtime_ns == self._listed_mtime_ns and self.clock() - st.st_mtime > RACY_S:
            return set()
        with os.scandir(self.path) as it:
            names = {e.name for e in it if e.name not in self.done and REPORT_NAME.match(e.name)}
        self._listed_mtime_ns = st.st_mtime_ns
        return names

    def _read(self, name: str) -> Report | str | None:
        path = self.path / name
        try:
            st = path.lstat()
        except FileNotFoundError:
            self.pending.pop(name, None)  # removed before we got to it: nothing to count
            return None
        except OSError as exc:
            return self._give_up(name, ReportError("io", exc.strerror or str(exc)))
        try:
            report = parse_report(self._read_bytes(path, st.st_size))
        except ReportError as exc:
            return self._retry_or_give_up(name, st, exc)
        except OSError as exc:
            return self._give_up(name, ReportError("io", exc.strerror or str(exc)))
        self.done.add(name)
        self.pending.pop(name, None)
        return report

    def _read_bytes(self, path: Path, size: int) -> bytes:
        if path.is_symlink() and not path.resolve().is_relative_to(self.path.resolve()):
            raise ReportError("io", "symlink points outside the report dir")
        if size > MAX_REPORT_BYTES:
            raise ReportError("too_large", f"{size} bytes > {MAX_REPORT_BYTES}")
        with open(path, "rb") as fh:
            # Read one byte more than allowed: a file that grew past the limit is caught too.
            return fh.read(MAX_REPORT_BYTES + 1)

    def _retry_or_give_up(self, name: str, st: os.stat_result, exc: ReportError) -> str | None:
        if exc.reason not in RETRIED:
            return self._give_up(name, exc)
        stamp = (st.st_size, st.st_mtime_ns)
        prev = self.pending.get(name)
        since = prev[2] if prev and prev[:2] == stamp else self.clock()
        self.pending[name] = (*stamp, since)
        if self.clock() - since < self.settle_s:
            return None  # may still be being written; retried on the next poll
        return self._give_up(name, exc)

    def _give_up(self, name: str, exc: ReportError) -> str:
        self.done.add(name)
        self.pending.pop(name, None)
        log.warning("%s: %s (counted as %s)", self.path / name, exc, exc.reason)
        return exc.reason
