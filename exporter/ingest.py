"""Incremental reader of one node's report directory: each file parsed once.

A file that does not parse is retried while it may still be being written (the real node
writes non-atomically); once it has been unchanged for ``settle_s`` it is counted once
under its reason and logged once. Files are taken in epoch-index order.

Cost does not grow with the run: when the directory's mtime moved (a file was created) the
next epoch numbers are probed by name; the directory is listed in full only on the first
poll, when it moved and no expected name appeared (a gap, an index reset), or when it moved
and the last full listing is ``FULL_LIST_S`` old (a stray file beside the expected one).
Only pending files are stat'ed on other polls.
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
# Bound on how late an out-of-sequence file beside in-sequence ones is noticed; a full
# listing of 100k files costs ~0.1 s, so this keeps its share of scrape time small.
FULL_LIST_S = 30.0


@dataclass
class ReportDir:
    node: str
    path: Path
    settle_s: float = 3.0      # unchanged this long and still invalid = counted as an error
    clock: Callable[[], float] = time.time
    done: set[str] = field(default_factory=set)  # parsed or given up on; never read again
    pending: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # name -> size, mtime_ns, since
    _listed_mtime_ns: int | None = None
    _high: int = -1  # highest epoch index seen: the next file is probably _high + 1
    _full_listed_at: float = float("-inf")

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
        for name in sorted(names | set(self.pending), key=_index):
            result = self._read(name)
            if isinstance(result, Report):
                reports.append(result)
            elif result is not None:
                errors.append(result)
        return reports, errors

    def _new_names(self) -> set[str]:
        st = os.stat(self.path)
        moved = st.st_mtime_ns != self._listed_mtime_ns
        if not moved and self.clock() - st.st_mtime > RACY_S:
            return set()
        names = self._probe() if self._listed_mtime_ns is not None else set()
        if moved and (not names or self.clock() - self._full_listed_at >= FULL_LIST_S):
            with os.scandir(self.path) as it:
                names = {e.name for e in it if e.name not in self.done and REPORT_NAME.match(e.name)}
            self._full_listed_at = self.clock()
        self._listed_mtime_ns = st.st_mtime_ns
        self._high = max([self._high, *(_index(n) for n in names)])
        return names

    def _probe(self) -> set[str]:
        names, index = set(), self._high + 1
        while os.path.lexists(self.path / f"epoch-{index}.json"):
            names.add(f"epoch-{index}.json")
            index += 1
        return names - self.done

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


def _index(name: str) -> int:
    match = REPORT_NAME.match(name)
    return int(match.group(1)) if match else -1
