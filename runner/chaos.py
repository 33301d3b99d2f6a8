"""Applies chaos events without blocking metric collection: one thread per event, each
fault verified when applied and always healed (at its end, and on interrupt)."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import signal
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from runner import netcut
from runner.chaos_net import NetworkFaults
from runner.nodes import NodeProc, wait_for
from runner.plan import ChaosEvent
from soakcore.runstate import ChaosWindow

LOG_HEADER = "timestamp|topology|event_id|phase|action|node|detail\n"
PRESSURE_FILE = "challenge_pressure.json"
PRESSURE_CHECKS_PER_TICK = 8  # storage challenges per tick while challenge_pressure is in effect
# The blob store of a (simulated) storage node: G1 output/node-distfs/<id>/store, G2
# output/chain-runtime/<id>/store, relative to its working directory.
STORE_GLOB = "output/*/*/store/index.json"
FAKETIME_LIB = "/usr/lib/*/faketime/libfaketime.so.1"   # Debian's faketime package
SKEW_TOLERANCE_MS = 1000.0       # a measured skew this far from offset_ms fails the event
SKEW_VERIFY_SECS = 20.0          # how long a relaunched node has to show its clock
CORRUPT_WATCH_SECS = 60.0        # how long corrupt_store waits for the node to report a failed challenge


def _failed_checks(report_dir: Path) -> int:
    """The node's cumulative failed DistFS checks in its newest readable report (0: none):
    G1 ``distfs_probe_cursor_state.cumulative_failed_checks``, G2 ``distfs.failed_checks``."""
    reports = sorted(report_dir.glob("epoch-*.json"), key=lambda p: int(p.stem.split("-")[1]) if
                     p.stem.split("-")[1].isdigit() else -1)
    for path in reversed(reports):
        try:
            doc = json.loads(path.read_text())
            g1 = doc.get("distfs_probe_cursor_state")
            return int(g1["cumulative_failed_checks"] if g1 is not None else doc["distfs"]["failed_checks"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # the newest may be mid-write
    return 0


class ChaosLog:
    def __init__(self, path: Path) -> None:
        self.path, self._lock = path, threading.Lock()
        if not path.exists():
            path.write_text(LOG_HEADER)

    def write(self, topology: str, ev: ChaosEvent, phase: str, detail: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = "|".join([stamp, topology, ev.id, phase, ev.action, ev.node, detail.replace("|", "/").replace("\n", " ")])
        with self._lock, open(self.path, "a") as fh:
            fh.write(line + "\n")


@dataclass
class ChaosEngine(NetworkFaults):
    topology: str
    nodes: dict[str, NodeProc]
    log: ChaosLog
    publish: Callable[[], None]          # rewrite run-state
    tag: str                             # nftables table tag, unique per run+topology
    # Every fault window of the run, open ones with end None. Counted, not a set: two
    # overlapping faults on one node are two windows and the first to end keeps the other.
    windows: list[ChaosWindow] = field(default_factory=list)
    heal_errors: list[str] = field(default_factory=list)
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _tables: dict[str, int] = field(default_factory=dict)  # live cuts: table -> a cut port
    stop: threading.Event = field(default_factory=threading.Event)
    cgroups: dict[str, Path] = field(default_factory=dict, init=False)   # node -> its cgroup (netcut)

    def __post_init__(self) -> None:
        # Each node runs in a cgroup of its own where the host allows it (netcut.node_cgroups),
        # so a partition can drop TCP per peer. Set before the nodes' first start.
        self.cgroups = netcut.node_cgroups(self.tag, tuple(self.nodes))
        for name, cgroup in self.cgroups.items():
            self.nodes[name].launch_prefix = netcut.cgroup_launcher(cgroup)

    def launch(self, ev: ChaosEvent) -> None:
        t = threading.Thread(target=self._run, args=(ev,), name=f"chaos-{ev.id}", daemon=True)
        self._threads.append(t)
        t.start()

    def _run(self, ev: ChaosEvent) -> None:
        self.log.write(self.topology, ev, "start", f"down_secs={ev.down_secs:g} duration_secs={ev.duration_secs:g}")
        index = self._open_window(ev)
        try:
            detail = getattr(self, f"_do_{ev.action}")(ev)
            phase = "skipped" if detail.startswith("skipped:") else "completed"
        except Exception as exc:  # noqa: BLE001 - a failed fault is logged, never fatal
            phase, detail = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self._close_window(index)
        with self._lock:
            key = (ev.node, ev.action, phase)
            self.counts[key] = self.counts.get(key, 0) + 1
        self.log.write(self.topology, ev, phase, detail.removeprefix("skipped: "))
        self.publish()

    @property
    def active(self) -> set[tuple[str, str]]:
        """(node, action) of the faults in effect now."""
        with self._lock:
            return {(w.node, w.action) for w in self.windows if w.end is None}

    def _open_window(self, ev: ChaosEvent) -> int:
        with self._lock:
            self.windows.append(ChaosWindow(ev.node, ev.action, ev.id, time.time()))
            index = len(self.windows) - 1
        self.publish()
        return index

    def _close_window(self, index: int) -> None:
        with self._lock:
            w = self.windows[index]
            self.windows[index] = ChaosWindow(w.node, w.action, w.event_id, w.start, max(time.time(), w.start))
        self.publish()

    def _hold(self, secs: float) -> None:
        self.stop.wait(secs)  # an interrupt ends the fault early, then it is healed

    def _bounce(self, ev: ChaosEvent, sig: signal.Signals) -> str:
        node = self.nodes[ev.node]
        old = node.pid
        code = node.stop(sig)
        if old is not None and wait_for(lambda: not netcut.pid_alive(old), 2.0) is False:
            raise RuntimeError(f"pid {old} still alive after {sig.name}")
        self._hold(ev.down_secs)
        if self.stop.is_set():
            return f"exit={code}; not relaunched (run stopping)"
        node.restarts["chaos"] += 1
        node.start()
        if not wait_for(lambda: node.pid is not None, 5.0):
            raise RuntimeError("relaunched process is not running")
        return f"pid {old} exit={code} -> pid {node.pid}"

    def _do_restart(self, ev: ChaosEvent) -> str:
        return self._bounce(ev, signal.SIGTERM)

    def _do_kill(self, ev: ChaosEvent) -> str:
        return self._bounce(ev, signal.SIGKILL)

    def _do_pause(self, ev: ChaosEvent) -> str:
        node = self.nodes[ev.node]
        if not node.send(signal.SIGSTOP):
            raise RuntimeError("process not running")
        try:
            if not wait_for(lambda: node.status() == "stopped", 2.0):
                raise RuntimeError(f"process not stopped (status {node.status()})")
            self._hold(ev.duration_secs)
        finally:
            node.send(signal.SIGCONT)
        return f"pid {node.pid} stopped {ev.duration_secs:g}s and continued"

    def _do_corrupt_store(self, ev: ChaosEvent) -> str:
        """Damage ``blobs`` blobs of the node's store (never healed), then watch the node's own
        DistFS failures rise for up to CORRUPT_WATCH_SECS (an interrupt ends the watch)."""
        spec = self.nodes[ev.node].spec
        stores = sorted(p.parent for p in spec.work_dir.glob(STORE_GLOB))
        if not stores:
            return f"skipped: no blob store under {spec.work_dir}/{STORE_GLOB.removesuffix('/index.json')}"
        blobs = sorted(p for p in stores[0].iterdir() if p.is_file() and p.name != "index.json")
        count, mode = min(int(ev.param("blobs")), len(blobs)), ev.param("mode")
        hit = random.Random(ev.id).sample(blobs, count)
        failed_before = _failed_checks(spec.report_dir)
        digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in hit}
        for path in hit:
            if mode == "delete":
                path.unlink()
            else:
                data = bytearray(path.read_bytes())
                for i in range(0, len(data), 64):
                    data[i] ^= 0xFF
                path.write_bytes(bytes(data))
        intact = [p.name for p in hit if p.exists() and (mode == "delete" or
                                                          hashlib.sha256(p.read_bytes()).hexdigest() == digest[p])]
        if intact or mode == "flip" and not all(p.exists() for p in hit):
            raise RuntimeError(f"blobs not damaged ({mode}): {intact or 'a flipped blob is gone'}")
        names = ",".join(p.name for p in hit)
        started = time.monotonic()
        deadline = started + CORRUPT_WATCH_SECS
        while not self.stop.is_set() and time.monotonic() < deadline:
            failed = _failed_checks(spec.report_dir)
            if failed > failed_before:
                return (f"{mode} {count} blob(s) of {stores[0]} ({names}); the node's DistFS failures rose "
                        f"{failed_before} -> {failed}; not healed")
            self._hold(0.5)
        return (f"{mode} {count} blob(s) of {stores[0]} ({names}); no DistFS failure reported in the "
                f"{time.monotonic() - started:.0f}s watched; not healed")

    def _relaunch(self, node: NodeProc, env: dict[str, str]) -> float:
        """Stop the node (SIGTERM) and start it again with ``env``; the relaunch time (unix s)."""
        old = node.pid
        node.stop(signal.SIGTERM)
        if old is not None and wait_for(lambda: not netcut.pid_alive(old), 5.0) is False:
            raise RuntimeError(f"pid {old} still alive after SIGTERM")
        node.env = env
        node.restarts["chaos"] += 1
        started = time.time()
        node.start()
        if not wait_for(lambda: node.pid is not None, 5.0):
            raise RuntimeError("relaunched process is not running")
        return started

    def _skew_ms(self, node: NodeProc, since: float) -> float:
        """How far the node's clock is off: its status document's observed_at_unix_ms against
        this clock, or else a report written after ``since`` against the file's mtime."""
        deadline = time.monotonic() + SKEW_VERIFY_SECS
        while time.monotonic() < deadline and not self.stop.is_set():
            if node.spec.status_url:
                try:
                    asked = time.time()
                    with urllib.request.urlopen(node.spec.status_url, timeout=2) as res:
                        observed = json.loads(res.read())["observed_at_unix_ms"]
                    return observed - (asked + time.time()) / 2 * 1000
                except (OSError, ValueError, KeyError, TypeError):
                    pass
            for path in sorted(node.spec.report_dir.glob("epoch-*.json"), key=lambda p: p.stat().st_mtime)[-1:]:
                try:
                    mtime = path.stat().st_mtime
                    if mtime > since:
                        return json.loads(path.read_text())["observed_at_unix_ms"] - mtime * 1000
                except (OSError, ValueError, KeyError, TypeError):
                    pass
            self._hold(0.2)
        raise RuntimeError(f"no observed_at_unix_ms from the relaunched node within {SKEW_VERIFY_SECS:g}s")

    def _do_clock_skew(self, ev: ChaosEvent) -> str:
        lib = next(iter(sorted(glob.glob(FAKETIME_LIB))), None)
        if lib is None:
            return "skipped: libfaketime not found (apt-get install faketime)"
        offset = float(ev.param("offset_ms"))
        node = self.nodes[ev.node]
        plain = dict(node.env)
        preload = " ".join(p for p in (lib, plain.get("LD_PRELOAD", "")) if p)
        skewed = {**plain, "LD_PRELOAD": preload, "FAKETIME": f"{offset / 1000:+.3f}",
                  "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_DONT_RESET": "1"}
        measured = healed = None
        try:
            since = self._relaunch(node, skewed)
            measured = self._skew_ms(node, since)
            if abs(measured - offset) > SKEW_TOLERANCE_MS:
                raise RuntimeError(f"the node's clock is off by {measured:.0f} ms, expected {offset:g} ms")
            self._hold(ev.duration_secs)
        finally:
            node.env = plain
            if not self.stop.is_set():   # at the run's end the node is stopped anyway, skew and all
                since = self._relaunch(node, plain)
                healed = self._skew_ms(node, since)
                if abs(healed) > SKEW_TOLERANCE_MS:
                    error = f"clock skew on {ev.node} not healed: still off by {healed:.0f} ms"
                    self.heal_errors.append(error)
                    raise RuntimeError(error)
        back = f"; relaunched with the true clock (off by {healed:.0f} ms)" if healed is not None else ""
        return f"relaunched under libfaketime {offset:+g} ms: observed_at off by {measured:.0f} ms; " \
               f"{ev.duration_secs:g}s{back}"

    def _do_challenge_pressure(self, ev: ChaosEvent) -> str:
        path = self.nodes[ev.node].spec.work_dir / PRESSURE_FILE
        until_ms = int((time.time() + ev.duration_secs) * 1000)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"until_unix_ms": until_ms, "challenges_per_tick": PRESSURE_CHECKS_PER_TICK}))
        os.replace(tmp, path)
        if json.loads(path.read_text()).get("until_unix_ms") != until_ms:  # the node reads this very file
            raise RuntimeError(f"{path} does not hold the pressure just written")
        try:
            self._hold(ev.duration_secs)
        finally:
            path.unlink(missing_ok=True)
        return f"{PRESSURE_CHECKS_PER_TICK} challenges/tick for {ev.duration_secs:g}s"

    def heal_all(self, timeout: float = 15.0) -> None:
        """End every fault now: wake the event threads (they heal in finally) and wait."""
        self.stop.set()
        for t in self._threads:
            t.join(timeout)
        for table, port in list(self._tables.items()):
            try:
                self._heal_cut(table, port)
            except RuntimeError:
                pass  # recorded in heal_errors, reported in the topology's notes
        for node in self.nodes.values():
            node.send(signal.SIGCONT)
