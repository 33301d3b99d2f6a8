"""``soak-sim``: accepts world_viewer_live's launch flags, plus fault switches."""
from __future__ import annotations

import argparse
import json
import random
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from simulator.faults import FaultConfig, Faults
from simulator.node import Addr, Node
from simulator.report import chain_status, epoch_report, write_report
from simulator.storage import REASONS
from soakcore.errors import SoakError, UsageError, run_cli
from soakcore.ids import validate_name

ROLES = ("sequencer", "storage", "observer")


def _addr(text: str) -> Addr:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host, int(port)


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a misspelt fault flag must fail, not silently match a longer one.
    p = argparse.ArgumentParser(prog="soak-sim", allow_abbrev=False,
                                description="Simulated Agent World node (world_viewer_live flags).")
    p.add_argument("scenario")
    p.add_argument("--topology", choices=("triad", "triad_distributed"), default="triad")
    p.add_argument("--node-role", choices=ROLES)
    p.add_argument("--node-id", default="soak-sim")
    p.add_argument("--bind", type=_addr, default=("127.0.0.1", 5500))
    for role in ROLES:
        p.add_argument(f"--triad-{role}-gossip", type=_addr)
    p.add_argument("--node-tick-ms", type=_positive(int), default=200)
    p.add_argument("--reward-runtime-enable", action="store_true")
    p.add_argument("--reward-runtime-report-dir", type=Path)
    p.add_argument("--reward-runtime-epoch-duration-secs", type=_positive(float), default=10.0)
    p.add_argument("--llm", dest="llm", action="store_true")
    p.add_argument("--no-llm", dest="llm", action="store_false")
    p.add_argument("--status-listen", type=_addr, help="serve G2 GET /v1/chain/status here")
    p.add_argument("--seed", type=int, default=0)
    f = p.add_argument_group("fault switches (times are seconds since this process started)")
    f.add_argument("--fault-leak-bytes-per-sec", type=_positive(int), default=0)
    f.add_argument("--fault-fd-leak-per-sec", type=_positive(float), default=0)
    f.add_argument("--fault-disk-bytes-per-sec", type=_positive(int), default=0)
    for name in ("stall", "regress", "fork", "invariant", "crash"):
        f.add_argument(f"--fault-{name}-at-sec", type=_positive(float))
    f.add_argument("--fault-regress-by", type=_positive(int), default=100)
    f.add_argument("--fault-distfs-fail-ratio", type=_positive(float), default=0.0)
    f.add_argument("--fault-distfs-fail-reason", choices=REASONS, default="MISSING_SAMPLE")
    f.add_argument("--fault-crash-code", type=int, default=3)
    f.add_argument("--fault-partial-report", action="store_true")
    f.add_argument("--fault-slow-write-ms", type=_positive(int), default=0)
    return p


def check_args(a: argparse.Namespace) -> None:
    """Cross-flag rules argparse cannot express; all checked before anything starts."""
    validate_name("scenario", a.scenario)
    validate_name("node id", a.node_id)
    if a.fault_distfs_fail_ratio > 1:
        raise UsageError(f"--fault-distfs-fail-ratio: must be within 0..1, got {a.fault_distfs_fail_ratio}")
    if a.node_tick_ms < 1:
        raise UsageError("--node-tick-ms: must be at least 1")
    if a.reward_runtime_epoch_duration_secs <= 0:
        raise UsageError("--reward-runtime-epoch-duration-secs: must be positive")
    if a.reward_runtime_enable and a.reward_runtime_report_dir is None:
        raise UsageError("--reward-runtime-enable needs --reward-runtime-report-dir")
    if a.topology == "triad_distributed":
        if a.node_role is None:
            raise UsageError("--node-role is required with --topology triad_distributed")
        if a.triad_sequencer_gossip is None:
            raise UsageError("--triad-sequencer-gossip is required with --topology triad_distributed")


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


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        args = build_parser().parse_args(argv)
        check_args(args)
        sim = Sim(args)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: sim.stop.set())
        if args.status_listen:
            serve_status(sim, args.status_listen)
        return sim.run()
    run_cli("soak-sim", body)
