"""``soak-sim``: accepts world_viewer_live's launch flags, plus fault switches."""
from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any, Callable

from simulator.node import Addr
from simulator.sim import ROLES, Sim, serve_status
from soakcore.distfs import DISTFS_REASONS
from soakcore.errors import UsageError, run_cli
from soakcore.ids import validate_name


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
    f.add_argument("--fault-distfs-fail-reason", choices=DISTFS_REASONS, default="MISSING_SAMPLE")
    f.add_argument("--fault-crash-code", type=int, default=3)
    f.add_argument("--fault-partial-report", action="store_true")
    f.add_argument("--fault-slow-write-ms", type=_positive(int), default=0)
    return p


def check_args(a: argparse.Namespace) -> None:
    """Cross-flag rules argparse cannot express; all checked before anything starts."""
    validate_name("scenario", a.scenario)
    validate_name("node id", a.node_id)
    if not 0 <= a.fault_distfs_fail_ratio <= 1:  # also refuses nan
        raise UsageError(f"--fault-distfs-fail-ratio: must be within 0..1, got {a.fault_distfs_fail_ratio}")
    if not 1 <= a.fault_crash_code <= 255:
        raise UsageError(f"--fault-crash-code: must be an exit code 1..255, got {a.fault_crash_code}")
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
