"""The Collector: one scrape = refresh run state, ingest new reports, read process stats.

``render()`` is the fast path the server uses (text 0.0.4 or OpenMetrics, built from the
catalog, see ``exporter.expo``); ``collect()`` gives the same samples as prometheus_client
families. Neither raises: a failure sets ``soak_exporter_scrape_error`` and the other nodes'
metrics are still served.
"""
from __future__ import annotations

import json
import logging
import stat
import threading
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter import chaoswin, expo, families
from exporter.g2status import is_head, parse_g2
from exporter.ingest import ReportDir
from exporter.procs import DiskSizer
from exporter.reports import MAX_REPORT_BYTES, ReportError, parse_document
from exporter.state import HashBook, NodeView
from soakcore.errors import SoakError
from soakcore.runstate import ChaosWindow, RunState, read_run_state

log = logging.getLogger("soak-exporter")
# urllib also opens file:// and ftp://; a status URL from a flag or the run-state must not.
HTTP_SCHEMES = ("http://", "https://")
# Scrapes may run concurrently (the server is threaded): one refreshes (run state, new
# reports) while the others wait this long for it, then serve the state as it is, with
# soak_exporter_scrape_error 1, rather than pile up behind a refresh that does not end.
REFRESH_WAIT_S = 5.0


@dataclass(frozen=True)
class Source:
    node: str
    role: str = "unknown"
    node_id: str = ""
    report_dir: str | None = None
    work_dir: str | None = None
    pid: str | None = None          # pid or pidfile
    status_url: str | None = None
    restarts: dict[str, int] | None = None  # from the runner; None = detect pid changes
    started_at: float | None = None          # first start in this run (run-state)
    critical: bool = False                   # consensus-critical (run-state)


@dataclass(frozen=True)
class Setup:
    """What to watch: from flags, replaced by the run-state file when given."""

    run_id: str = "adhoc"
    topology: str = "unknown"
    profile: str = "none"
    scenario: str = "unknown"
    thresholds: dict[str, float] = field(default_factory=dict)
    sources: tuple[Source, ...] = ()
    chaos_windows: tuple[ChaosWindow, ...] = ()
    chaos_events: tuple[tuple[str, str, str, int], ...] = ()


def setup_from_run_state(rs: RunState) -> Setup:
    return Setup(rs.run_id, rs.topology, rs.profile, rs.scenario, dict(rs.thresholds),
                 tuple(Source(n.node, n.role, n.node_id, n.report_dir, n.work_dir,
                              str(n.pid) if n.pid else None, n.status_url, dict(n.restarts), n.started_at,
                              n.critical) for n in rs.nodes),
                 rs.chaos_windows,
                 tuple((c.node, c.action, c.phase, c.count) for c in rs.chaos_events))


def _log_notes(node: str, view: NodeView) -> None:
    for note in view.notes:
        log.warning("%s: %s", node, note)
    view.notes.clear()


class SoakCollector(Collector):
    def __init__(self, setup: Setup, run_state: Path | None = None, status_interval_s: float = 2.0,
                 settle_s: float = 3.0) -> None:
        self.setup, self.run_state_path = setup, run_state
        self._flag_thresholds = setup.thresholds  # --profile: used when the run-state has none
        self.settle_s = settle_s
        self._run_state_stamp: tuple[int, int, int] | None = None
        self._run_state_error = False
        self._lock = threading.Lock()          # guards the derived state (views, hashes, pids)
        self._refresh_lock = threading.Lock()  # one refresh (run state + ingest) at a time
        self.started_at = time.time()          # a node that has not reported yet counts from here
        self.views: dict[str, NodeView] = {}
        self.dirs: dict[str, ReportDir] = {}
        self.hashes = HashBook()
        self.excuser = chaoswin.Excuser()
        self._status_failing: set[str] = set()
        self.pids: dict[str, tuple[int | None, int]] = {}  # node -> (pid, start ticks)
        self.detected_crashes: dict[str, int] = {}
        self.disk = DiskSizer()
        self._node_blocks: dict[str, tuple[tuple[object, ...], expo.Block]] = {}
        self._behind: tuple[tuple[tuple[str, int], ...], dict[str, int]] | None = None
        self._windows: tuple[tuple[ChaosWindow, ...], dict[str, tuple[ChaosWindow, ...]]] = ((), {})
        self._renderer = expo.Renderer(("", ""))
        self._run_state_block: tuple[Setup | None, expo.Block] = (None, expo.Block())
        self.status_interval_s = status_interval_s
        self._stop = threading.Event()
        self._refresh_run_state()
        self._apply_sources()

    # -- inputs -------------------------------------------------------------------------
    def _refresh_run_state(self) -> None:
        if self.run_state_path is None:
            return
        try:
            st = self.run_state_path.stat()
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read (and every scrape) for good
                raise OSError(f"{self.run_state_path}: not a regular file")
            # The runner replaces the file (new inode): inode and size catch a rewrite within one mtime tick.
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
            if stamp == self._run_state_stamp:
                return
            new = setup_from_run_state(read_run_state(self.run_state_path))
            if not new.thresholds:
                new = replace(new, thresholds=self._flag_thresholds)
            self._run_state_stamp, self._run_state_error = stamp, False
        except (OSError, SoakError) as exc:
            if not self._run_state_error:
                log.warning("run state: %s (keeping the last good one)", exc)
            self._run_state_error = True
            return
        if (new.run_id, new.topology) != (self.setup.run_id, self.setup.topology):
            self.views, self.dirs, self.hashes, self.pids, self.detected_crashes = {}, {}, HashBook(), {}, {}
            self.excuser = chaoswin.Excuser()
            self._node_blocks, self._behind = {}, None
        self.setup = new
        self._apply_sources()

    def _apply_sources(self) -> None:
        for s in self.setup.sources:
            self.views.setdefault(s.node, NodeView())
            old = self.dirs.get(s.node)
            if s.report_dir and (old is None or str(old.path) != s.report_dir):
                # A new folder is a new numbering: its reports sort after the old folder's.
                self.dirs[s.node] = ReportDir(s.node, Path(s.report_dir), self.settle_s,
                                              sequence=old.sequence + 1 if old else 0)

    def ingest(self) -> bool:
        """Read new report files of every node; False if one node failed (the others still count).

        A node whose folder cannot be read (not a directory, no permission, a bug met by its
        files) is counted in soak_exporter_ingest_failures_total and keeps its last readings.
        """
        ok = True
        for node, rdir in list(self.dirs.items()):
            view = self.views.setdefault(node, NodeView())
            try:
                reports, errors = rdir.poll()
            except Exception as exc:  # noqa: BLE001 - a bug met by one node's files must not blank the others
                if isinstance(exc, OSError):
                    log.warning("%s: cannot read report dir %s: %s", node, rdir.path, exc.strerror or exc)
                else:
                    log.exception("%s: ingest failed", node)
                with self._lock:
                    view.ingest_failures += 1
                    view.version += 1
                ok = False
                continue
            with self._lock:
                for arrival in reports:
                    view.observe_report(arrival)
                    self.hashes.see_report(arrival.report)
                for reason in errors:
                    view.count_error(reason)
                _log_notes(node, view)
        return ok

    def poll_status_once(self) -> None:
        for s in self.setup.sources:
            if not s.status_url or not s.status_url.startswith(HTTP_SCHEMES):
                continue
            try:
                self._poll_status(s)
            except Exception:  # noqa: BLE001 - a bug met by one node's document must not stop the others
                log.exception("%s: status poll failed", s.node)
                self._status_error(s, "unexpected error")

    def _poll_status(self, s: Source) -> None:
        assert s.status_url is not None
        g2_error: ReportError | None = None
        try:
            with urllib.request.urlopen(s.status_url, timeout=1.5) as resp:
                doc = json.loads(resp.read(MAX_REPORT_BYTES))
            if type(doc) is not dict:
                raise ReportError("status", "<root>: expected an object")
            report = parse_document(doc)
        except (OSError, ValueError, RecursionError, ReportError) as exc:
            self._status_error(s, exc)
            return
        head = is_head(doc)
        g2 = None
        if head:
            try:
                g2 = parse_g2(doc)
            except ReportError as exc:
                # The consensus readings still count; the G2 gauges of this node are not served
                # until a good document (never stale), and the bad field is counted and logged.
                g2_error = exc
        arrived_s = time.time()  # the poll's answer, on this machine's clock
        with self._lock:
            view = self.views.setdefault(s.node, NodeView())
            view.observe_status(report, arrived_s)
            if head:
                view.observe_g2(g2)
            _log_notes(s.node, view)
            self.hashes.see_report(report)
        if g2_error is not None:
            self._status_error(s, g2_error)
        else:
            self._status_failing.discard(s.node)

    def _status_error(self, s: Source, exc: object) -> None:
        """Counted (soak_report_errors_total{reason="status"}) and logged once per node until
        it answers well again: a status document we cannot read is never silent."""
        with self._lock:
            self.views.setdefault(s.node, NodeView()).count_error("status")
        if s.node not in self._status_failing:
            log.warning("%s: status poll failed: %s", s.status_url, exc)
        self._status_failing.add(s.node)

    def start_status_poller(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.status_interval_s):
                self.poll_status_once()
        threading.Thread(target=loop, daemon=True, name="status-poller").start()

    def stop(self) -> None:
        self._stop.set()

    # -- output -------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        blocks, base = self._scrape()
        try:
            out = expo.metrics(blocks, base)
        except Exception:  # noqa: BLE001 - collect() must never fail the scrape
            log.exception("scrape failed")
            out = expo.metrics([self._exporter_block(0.0, True)], base)
        yield from out

    def render(self, openmetrics: bool = False) -> bytes:
        """One scrape as the text format 0.0.4 (or OpenMetrics 1.0)."""
        blocks, base = self._scrape()
        if self._renderer.base != base:
            self._renderer = expo.Renderer(base)
        try:
            text = self._renderer.text(blocks, openmetrics)
        except Exception:  # noqa: BLE001 - never fail the scrape
            log.exception("scrape failed")
            text = self._renderer.text([self._exporter_block(0.0, True)], openmetrics)
        return text.encode("utf-8", "replace")

    def _scrape(self) -> tuple[list[expo.Block], tuple[str, str]]:
        """Refresh (run state, new reports), then every block of samples; never raises."""
        started, error = time.perf_counter(), False
        try:
            if self._refresh_lock.acquire(timeout=REFRESH_WAIT_S):
                try:
                    self._refresh_run_state()
                    error = not self.ingest()
                finally:
                    self._refresh_lock.release()
            else:
                log.warning("another scrape's refresh has taken over %.0fs: serving the last state", REFRESH_WAIT_S)
                error = True
        except Exception:  # noqa: BLE001 - a scrape must never fail
            log.exception("scrape failed")
            error = True
        blocks: list[expo.Block] = []
        base = (self.setup.run_id, self.setup.topology)
        try:
            with self._lock:
                base = (self.setup.run_id, self.setup.topology)
                error = self._blocks(blocks) or error
        except Exception:  # noqa: BLE001
            log.exception("scrape failed")
            error = True
        blocks.append(self._exporter_block(time.perf_counter() - started, error or self._run_state_error))
        return blocks, base

    def _blocks(self, out: list[expo.Block]) -> bool:
        """Append every block of this scrape; True if a part failed (the others are kept)."""
        failed = False
        now = time.time()
        self.disk.begin_scrape()
        out.append(families.run_block(self))
        for src in self.setup.sources:
            try:
                view = self.views.get(src.node)
                out.append(self._node_block(src, view))
                out.append(families.node_live_block(self, src, view, now))
            except Exception:  # noqa: BLE001 - one node's bug must not blank the others
                log.exception("%s: scrape failed", src.node)
                failed = True
        try:
            if self._run_state_block[0] is not self.setup:
                self._run_state_block = (self.setup, families.run_state_block(self))
            out.append(self._run_state_block[1])
            out.append(families.topology_block(self, now))
        except Exception:  # noqa: BLE001
            log.exception("scrape failed")
            failed = True
        return failed

    def _node_block(self, src: Source, view: NodeView | None) -> expo.Block:
        """The node's report-derived samples, rebuilt only when its readings changed."""
        key = (view.version if view is not None else -1, id(view), src.role, src.node_id, src.started_at,
               bool(src.report_dir))
        cached = self._node_blocks.get(src.node)
        if cached is not None and cached[0] == key:
            return cached[1]
        block = families.node_block(self, src, view)
        self._node_blocks[src.node] = (key, block)
        return block

    def _exporter_block(self, duration_s: float, error: bool) -> expo.Block:
        b = expo.Block()
        b.add("soak_exporter_scrape_duration_seconds", (), duration_s)
        b.add("soak_exporter_scrape_error", (), float(error))
        return b

    def behind(self) -> dict[str, int]:
        """Outside lag (``exporter.topolag``), recomputed only when some node's readings changed."""
        key = tuple((n, v.version) for n, v in self.views.items())
        if self._behind is None or self._behind[0] != key:
            self._behind = (key, families.behind(self))
        return self._behind[1]

    def windows_of(self, node: str) -> tuple[ChaosWindow, ...]:
        """The node's fault windows (indexed once per run-state version)."""
        windows = self.setup.chaos_windows
        if self._windows[0] is not windows:
            index: dict[str, list[ChaosWindow]] = {}
            for w in windows:
                index.setdefault(w.node, []).append(w)
            self._windows = (windows, {n: tuple(ws) for n, ws in index.items()})
        return self._windows[1].get(node, ())

    def restarts(self, s: Source, pid: tuple[int | None, int] | None) -> dict[str, int]:
        """Restarts by cause: the runner's counts, or (without a run state) every new process
        seen, told by its pid and start time (a pid reused by a new process is a restart too)."""
        if s.restarts is not None:
            return s.restarts
        prev = self.pids.get(s.node)
        if pid is not None and prev is not None and pid != prev:
            self.detected_crashes[s.node] = self.detected_crashes.get(s.node, 0) + 1
        if pid is not None:
            self.pids[s.node] = pid
        return {"chaos": 0, "crash": self.detected_crashes.get(s.node, 0)}
