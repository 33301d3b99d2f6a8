"""The soak-sim process: its nodes, the tick loop (faults, challenge pressure, epoch reports)
and the optional G2 status endpoint."""
from __future__ import annotations

import argparse
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from simulator.faults import FaultConfig, Faults
from simulator.node import Addr, Node
from simulator.report import chain_status, epoch_report, write_report
from soakcore.errors import SoakError

ROLES = ("sequencer", "storage", "observer")


def fault_config(a: argparse.Namespace) -> FaultConfig:
    return FaultConfig(a.fault_leak_bytes_per_sec, a.fault_fd_leak_per_sec, a.fault_disk_bytes_per_sec,
                       a.fault_stall_at_sec, a.fault_regress_at_sec, a.fault_regress_by, a.fault_fork_at_sec,
                       a.fault_invariant_at_sec, a.fault_distfs_fail_ratio, a.fault_distfs_fail_reason,
                       a.fault_crash_at_sec, a.fault_crash_code, a.fault_partial_report, a.fault_slow_write_ms)


def build_nodes(a: argparse.Namespace, faults: Faults, work: Path) -> list[Node]:
    world = f"live-{a.scenario}"
    base = a.node_id
    if a.topology == "triad":
        host, port = a.bind
        addrs = [(host, port + i) for i in range(3)]
        # A fork needs one node to disagree with its peers: in triad the embedded storage node.
        return [Node(f"{base}-{role}", role, world, addrs[i], addrs, work, faults, a.seed, role == "storage")
                for i, role in enumerate(ROLES)]
    peers = [x for x in (a.triad_sequencer_gossip, a.triad_storage_gossip, a.triad_observer_gossip) if x]
    return [Node(f"{base}-{a.node_role}", a.node_role, world, a.bind, peers, work, faults, a.seed)]


class Sim:
    """The tick loop: nodes, faults, challenge pressure, epoch reports, status document."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.work = Path.cwd()
        self.faults = Faults(fault_config(a), self.work, random.Random(a.seed))
        (self.work / "output").mkdir(exist_ok=True)
        self.nodes = build_nodes(a, self.faults, self.work)
        self.reporter = self.nodes[0]  # the sequencer in triad mode; the only node otherwise
        self.storage = next((n for n in self.nodes if n.role == "storage"), None)
        self.report_dir = a.reward_runtime_report_dir if a.reward_runtime_enable else None
        if self.report_dir:
            self.report_dir.mkdir(parents=True, exist_ok=True)
        self.tick_s = a.node_tick_ms / 1000
        self.epoch_s = a.reward_runtime_epoch_duration_secs
        self.epochs_written = 0
        self.stop = threading.Event()
        self.status: dict[str, Any] = {}

    def invariant_ok(self, elapsed: float) -> bool:
        return not self.faults.invariant_broken(elapsed)

    def apply_pressure(self, now_ms: int) -> None:
        if self.storage is None:
            return
        try:
            doc = json.loads((self.work / "challenge_pressure.json").read_text())
            active = int(doc["until_unix_ms"]) > now_ms
            self.storage.challenges_per_tick = max(1, int(doc["challenges_per_tick"])) if active else 1
        except (OSError, ValueError, KeyError, TypeError):
            self.storage.challenges_per_tick = 1

    def write_epoch(self, now_ms: int, elapsed: float) -> None:
        assert self.report_dir is not None
        self.epochs_written += 1
        doc = epoch_report(self.reporter, self.storage, now_ms, self.invariant_ok(elapsed), self.epochs_written)
        # Bump and persist the index before the slow write: a crash mid-write never reuses N.
        self.reporter.state.epoch_index += 1
        self.reporter.persist()
        write_report(self.report_dir, doc, self.faults.cfg.partial_report, self.faults.cfg.slow_write_ms)

    def run(self) -> int:
        start = time.monotonic()
        next_epoch = start + self.epoch_s
        while not self.stop.is_set():
            now_ms, elapsed = int(time.time() * 1000), time.monotonic() - start
            self.faults.tick(elapsed, self.tick_s)
            self.apply_pressure(now_ms)
            for node in self.nodes:
                node.tick(now_ms, elapsed)
            if self.report_dir and time.monotonic() >= next_epoch:
                # After a SIGSTOP the node writes one report, not a burst of catch-up reports.
                next_epoch = max(next_epoch + self.epoch_s, time.monotonic())
                self.write_epoch(now_ms, elapsed)
            self.status = chain_status(self.reporter, self.storage, now_ms, self.invariant_ok(elapsed),
                                       self.report_dir or self.work)
            self.stop.wait(max(0.0, self.tick_s - (time.monotonic() - start - elapsed)))
        for node in self.nodes:
            node.close()
        return 0


def serve_status(sim: Sim, addr: Addr) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            found = self.path.split("?")[0] == "/v1/chain/status"
            body = json.dumps(sim.status if found else {"ok": False, "error": "not found"}).encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    try:
        server = ThreadingHTTPServer(addr, Handler)
    except OSError as exc:
        raise SoakError(f"--status-listen {addr[0]}:{addr[1]}: {exc.strerror}") from exc
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
