"""Incremental reader of one node's report directory: each file parsed once.

A file that does not parse is retried while it may still be being written (the real node
writes non-atomically); once it has been unchanged for ``settle_s`` it is counted once in
``errors[reason]`` and logged once. Files are taken in epoch-index order.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from exporter.reports import MAX_REPORT_BYTES, Report, ReportError, parse_report

log = logging.getLogger("soak-exporter")
REPORT_NAME = re.compile(r"^epoch-(\d+)\.json$")


@dataclass
class ReportDir:
    node: str
    path: Path
    settle_s: float = 3.0
    clock: Callable[[], float] = field(default=lambda: __import__("time").time())
    done: set[str] = field(default_factory=set)  # names parsed or given up on
    pending: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (size, mtime)

    def poll(self) -> tuple[list[tuple[Path, Report]], list[str]]:
        """New reports (in epoch order) and new error reasons since the last poll."""
        try:
            entries = [(int(m.group(1)), e) for e in os.scandir(self.path)
                       if e.name not in self.done and (m := REPORT_NAME.match(e.name))]
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            log.warning("%s: cannot list report dir: %s", self.path, exc.strerror)
            return [], ["io"]
        reports, errors = [], []
        for _, entry in sorted(entries, key=lambda x: x[0]):
            result = self._read(entry)
            if isinstance(result, Report):
                reports.append((Path(entry.path), result))
            elif result is not None:
                errors.append(result)
        return reports, errors

    def _read(self, entry: os.DirEntry[str]) -> Report | str | None:
        path = Path(entry.path)
        try:
            if entry.is_symlink() and not path.resolve().is_relative_to(self.path.resolve()):
                raise ReportError("io", "symlink points outside the report dir")
            st = entry.stat()
            if st.st_size > MAX_REPORT_BYTES:
                raise ReportError("too_large", f"{st.st_size} bytes > {MAX_REPORT_BYTES}")
            report = parse_report(path.read_bytes())
        except (ReportError, OSError) as exc:
            reason = exc.reason if isinstance(exc, ReportError) else "io"
            stamp = (st.st_size, st.st_mtime) if "st" in locals() else (0, 0.0)
            unchanged = self.pending.get(entry.name) == stamp
            self.pending[entry.name] = stamp
            if reason in ("partial", "invalid_json", "schema") and not (
                    unchanged and self.clock() - stamp[1] >= self.settle_s):
                return None  # may still be being written; retry next poll
            self.done.add(entry.name)
            self.pending.pop(entry.name, None)
            log.warning("%s: %s (counted as %s)", path, exc, reason)
            return reason
        self.done.add(entry.name)
        self.pending.pop(entry.name, None)
        return report
