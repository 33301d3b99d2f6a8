"""``soak-run`` (and scripts/p2p-longrun-soak.sh): every flag of the old script, plus ours."""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from alerts.gates import MAX_FOR_SECS
from checker.promapi import duration_secs
from alerts.profiles import PROFILES, TOPOLOGIES, Profile, get_profile, weak_overrides
from runner import g2, ports, reaper
from runner.config import RunConfig
from runner.plan import MAX_SECS, Continuous, load_plan
from runner.topofile import CustomTopology, is_topology_file, load_topology_file
from runner.topology import DEFAULT_EPOCH_SECS, LaunchSettings, topology_nodes
from soakcore.errors import UsageError, run_cli
from soakcore.ids import validate_name
from soakcore.runstate import CHAOS_ACTIONS
from soakcore.services import ALERTMANAGER_BIN, PROMETHEUS_BIN, find_binary


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown on every flag that has one; the examples and exit codes kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], 0) and action.default is not argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with one line, through run_cli
        raise UsageError(message)


def finite(text: str) -> float:
    """argparse type of every float flag: a finite number (NaN would never end a wait)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def duration(text: str) -> float:
    """argparse type of every time flag: seconds as ``90``, or ``90s``, ``10m``, ``1h``."""
    secs = duration_secs(text.strip())
    if secs is not None:
        return secs
    try:
        float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or a duration like 90s, 10m, 1h; got {text!r}") from None
    return finite(text)  # a number: it must be finite (NaN would never end a wait)


EPILOG = """examples:
  python3 -m runner --profile soak_smoke --duration-secs 90 --chaos-plan examples/chaos-every-action.json
  python3 -m runner --topology triad_distributed --duration-secs 10m --chaos-continuous-enable --seed 42
  python3 -m runner --node-bin /opt/bin/oasis7_chain_runtime --profile soak_endurance
  python3 -m runner --topology triad --duration-secs 60 --node-arg triad=--fault-invariant-at-sec=20

times take seconds or a duration: 90, 90s, 10m, 1h.

exit codes: 0 every critical gate passed; 1 a gate failed, the run was aborted, or (endurance,
release) a gate lacked data; 2 bad arguments (nothing was started); 3 could not evaluate.
The run directory is <out-dir>/<YYYYmmdd-HHMMSS>/; summary.md is the page to read first."""


def add_continuous_flags(a: Callable[..., Any]) -> None:
    """The continuous-chaos flags, for soak-run and soak-k8s render (``a``: add_argument)."""
    a("--chaos-continuous-enable", action="store_true", help="faults from a seed, one every interval")
    a("--chaos-continuous-interval-secs", type=duration, default=30, help="time between continuous faults")
    a("--chaos-continuous-start-sec", type=duration, default=30, help="first continuous fault this far into the window")
    a("--chaos-continuous-max-events", type=int, default=0, help="at most this many continuous faults (0: no limit)")
    a("--chaos-continuous-actions", default="restart,pause", help="comma list of actions to pick from")
    a("--chaos-continuous-seed", type=int, help="seed of continuous chaos (default: --seed)")
    a("--chaos-continuous-restart-down-secs", type=duration, default=1, help="down time of restart/kill")
    a("--chaos-continuous-pause-duration-secs", type=duration, default=2,
      help="duration of pause, disconnect and challenge_pressure")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="soak-run", description="Run an Agent World soak: nodes, chaos, Prometheus, verdict.",
                epilog=EPILOG, formatter_class=_Help)
    a = p.add_argument
    a("--profile", default="soak_smoke", choices=list(PROFILES),
      help="thresholds, duration and topologies (alerts/profiles.py)")
    a("--duration-secs", type=duration, help="window per topology (default: the profile's: 25m, 3h, 8h)")
    a("--topologies", help="comma list (default: the profile's)")
    a("--topology", help="a single topology (same as --topologies T), or a topology file (.yaml/.json) whose "
      "nodes are argv lists: see docs/runner.md")
    a("--scenario", default="triad_p2p_bootstrap", help="scenario argument passed to G1 nodes")
    a("--base-port", type=int, default=5610, help="first port of the nodes (each topology takes 100 from here)")
    a("--bind-host", default="127.0.0.1", help="IPv4 address the nodes bind")
    a("--out-dir", type=Path, default=Path(".tmp/p2p_longrun"), help="run directories are created in here")
    a("--startup-timeout-secs", type=duration, default=20, help="how long nodes and the stack may take to start")
    a("--poll-interval-secs", type=duration, default=2, help="scrape, rule evaluation and progress interval")
    a("--tick-ms", type=int, default=200, help="node tick (--node-tick-ms)")
    a("--epoch-secs", type=finite, default=None, help="reward epoch passed to nodes, a whole number of seconds "
      "(reports arrive this often); default 10 for g1, 60 for g2 (the upstream script's)")
    a("--node-kind", choices=g2.NODE_KINDS, default=None,
      help="g1: world_viewer_live's flags (default); g2: oasis7_chain_runtime, three processes per topology with "
      "the upstream script's argv (simulator: python3 -m simulator.g2). Default from --node-bin's file name "
      f"({g2.G2_BINARY}: g2), else g1")
    a("--node-bin", help="real node binary instead of the simulator: world_viewer_live (g1) or "
      "oasis7_chain_runtime (g2)")
    a("--node-arg", action="append", default=[], metavar="NODE=ARG", help="extra argv for one node (repeatable)")
    a("--status-endpoints", action="store_true", help="simulator serves G2 /v1/chain/status; exporter polls it")
    a("--seed", type=int, default=None, help="seed of nodes and continuous chaos (default: from the clock)")
    a("--enable-chaos", action="store_true", help="inject chaos: the plan, or continuous chaos without one")
    a("--chaos-plan", type=Path, help="JSON or YAML plan of timed faults (docs/runner.md, examples/)")
    add_continuous_flags(a)
    a("--max-stall-secs", type=duration, help="override the profile's max_stall_secs")
    a("--max-lag-p95", type=finite, help="override the profile's max_lag_p95 (blocks)")
    a("--max-distfs-failure-ratio", type=finite, help="override the profile's max_distfs_failure_ratio (0..1)")
    a("--threshold", action="append", default=[], metavar="KEY=VALUE", help="override any profile threshold")
    a("--allow-weak-gates", action="store_true", help="run even when an override leaves a gate unable to fail "
      "(a ratio of 1, more DistFS checks than the run makes, a duration threshold as long as the run); "
      "such gates are listed in the verdict")
    a("--no-prewarm", action="store_true", help="do not wait for every node's first report")
    a("--drain-secs", type=duration, help="how long nodes keep running after the window so a breach that began "
      "at its end can last its gate's for (default: the longest for + two intervals; shorter is a weak gate)")
    a("--prometheus-url", help="use this existing Prometheus instead of starting one (docs/runner.md)")
    a("--alertmanager-url", help="use this existing Alertmanager instead of starting one")
    a("--exporter-port", type=int, default=0, help="the exporter's 127.0.0.1 port (default: a free one); fix it "
      "when an existing Prometheus (--prometheus-url) scrapes it")
    a("--exporter-listen", metavar="HOST:PORT", help="bind the exporter here instead (e.g. 0.0.0.0:9464 so a "
      "Prometheus in docker-compose can scrape a live run; see docs/dashboards.md); default 127.0.0.1 and a "
      "free port")
    a("--fail-fast", action="store_true", help="do not start the next topology after one that failed")
    a("--abort-on-fail", action="store_true", help="stop when a critical gate fires (after warm-up)")
    a("--on-crash", choices=("restart", "leave", "stop"), default="restart",
      help="a node that exits outside chaos: relaunch it, leave it down, or stop the topology")
    return p


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{name}: must be positive, got {value:g}")


def resolve(a: argparse.Namespace, now: float | None = None) -> RunConfig:
    """Every setting resolved and validated (UsageError, exit 2) before anything starts."""
    now = time.time() if now is None else now
    profile, overrides = _profile(a)
    custom = _custom_topology(a.topology)
    topologies = (custom.name,) if custom else _builtin_topologies(a.topology or a.topologies
                                                                   or ",".join(profile.topologies))
    kind = _node_kind(a, custom)
    if a.epoch_secs is None:
        a.epoch_secs = float(DEFAULT_EPOCH_SECS[kind])
    _check_numbers(a)
    if custom is None and a.epoch_secs != int(a.epoch_secs):
        binary = g2.G2_BINARY if kind == "g2" else g2.G1_BINARY
        raise UsageError(f"--epoch-secs {a.epoch_secs:g}: expected a whole number of seconds ({binary}'s "
                         "--reward-runtime-epoch-duration-secs is a positive integer)")
    _check_tools(a)
    seed = a.seed if a.seed is not None else int(now) % 100000
    duration = a.duration_secs or profile.duration_secs
    weak = tuple(weak_overrides(overrides, duration, a.tick_ms)) + _weak_drain(a)
    if weak and not a.allow_weak_gates:
        raise UsageError(f"threshold overrides that leave a gate unable to fail: {'; '.join(weak)} "
                         "(give --allow-weak-gates to run anyway; they are then listed in the verdict)")
    known_nodes = {**topology_nodes(kind), **({custom.name: custom.labels} if custom else {})}
    selected = {t: known_nodes[t] for t in topologies}
    events = load_plan(a.chaos_plan, known_nodes, duration) if a.chaos_plan else ()
    idle = [e.id for e in events if not any(e.applies_to(t) and e.node in selected[t] for t in topologies)]
    if idle:
        print(f"soak-run: warning: {a.chaos_plan}: {len(idle)} event(s) apply to no selected topology "
              f"({', '.join(topologies)}) and will not happen: {', '.join(idle[:5])}{' ...' if len(idle) > 5 else ''}",
              file=sys.stderr)
    node_args = _node_args(a.node_arg, selected)
    exporter_host, exporter_port = _exporter_listen(a)
    _check_out_dir(a.out_dir)
    out_dir = a.out_dir.resolve()
    while (out_dir / time.strftime("%Y%m%d-%H%M%S", time.localtime(now))).exists():
        now += 1  # a run started in the same second gets the next name, never a shared directory
    run_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return RunConfig(
        run_id=run_id, run_dir=out_dir / run_id, profile=profile,
        duration_secs=duration, topologies=topologies,
        launch=LaunchSettings(a.scenario, a.bind_host, a.base_port, a.tick_ms, a.epoch_secs, a.node_bin, seed,
                              a.status_endpoints, node_args, kind),
        interval_s=a.poll_interval_secs, startup_timeout_secs=a.startup_timeout_secs,
        chaos_plan=a.chaos_plan, plan_events=events, continuous=_continuous(a, seed, duration),
        prometheus_url=a.prometheus_url, alertmanager_url=a.alertmanager_url, fail_fast=a.fail_fast,
        abort_on_fail=a.abort_on_fail, on_crash=a.on_crash, prewarm=not a.no_prewarm,
        custom_topologies=(custom,) if custom else (), exporter_port=exporter_port, exporter_host=exporter_host,
        weak_gates=weak, drain_secs=a.drain_secs)


def _weak_drain(a: argparse.Namespace) -> tuple[str, ...]:
    """A drain shorter than the longest gate ``for`` (+ two intervals) leaves the window's end unjudged."""
    needed = MAX_FOR_SECS + 2 * a.poll_interval_secs
    if a.drain_secs is None or a.drain_secs >= needed:
        return ()
    return (f"drain_secs={a.drain_secs:g}: shorter than the {needed:g}s a breach that begins at the window's "
            "end needs to be judged",)


def _exporter_listen(a: argparse.Namespace) -> tuple[str, int]:
    """(host, port) of the exporter: --exporter-listen HOST:PORT, else 127.0.0.1 and --exporter-port."""
    if a.exporter_listen is None:
        return "127.0.0.1", a.exporter_port
    if a.exporter_port:
        raise UsageError("--exporter-listen and --exporter-port: give one (--exporter-listen HOST:PORT sets both)")
    host, sep, port = a.exporter_listen.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        number = int(port)
    except ValueError:
        number = 0
    if not sep or not 1024 <= number <= 65535:
        raise UsageError(f"--exporter-listen {a.exporter_listen!r}: expected IPV4:PORT with a port in 1024..65535, "
                         "e.g. 0.0.0.0:9464")
    return host, number


def _profile(a: argparse.Namespace) -> tuple[Profile, dict[str, float]]:
    """The profile with the command line's overrides, and those overrides."""
    overrides: dict[str, float | None] = {"max_stall_secs": a.max_stall_secs, "max_lag_p95": a.max_lag_p95,
                                          "max_distfs_failure_ratio": a.max_distfs_failure_ratio}
    for item in a.threshold:
        key, sep, value = item.partition("=")
        try:
            overrides[key] = finite(value) if sep else None
        except argparse.ArgumentTypeError:
            raise UsageError(f"--threshold {item}: expected KEY=NUMBER (a finite number)") from None
    explicit = {k: v for k, v in overrides.items() if v is not None}
    return get_profile(a.profile).with_overrides(overrides), explicit


def _node_kind(a: argparse.Namespace, custom: CustomTopology | None) -> str:
    """--node-kind, else the kind --node-bin's file name says (oasis7_chain_runtime: g2), else g1."""
    named = g2.kind_of_binary(a.node_bin)
    if a.node_kind and custom is not None:
        raise UsageError(f"--node-kind {a.node_kind}: a topology file gives every node's argv itself; "
                         "drop --node-kind")
    if a.node_kind and named and a.node_kind != named:
        raise UsageError(f"--node-kind {a.node_kind}: --node-bin {a.node_bin} is {Path(a.node_bin).name}, a "
                         f"{named} node; give --node-kind {named}")
    return a.node_kind or named or "g1"


def _builtin_topologies(csv: str) -> tuple[str, ...]:
    topologies = tuple(t.strip() for t in csv.split(","))
    for t in topologies:
        if t not in TOPOLOGIES:
            raise UsageError(f"--topologies: unknown topology {t!r}; known: {', '.join(TOPOLOGIES)} "
                             "(or --topology FILE.yaml)")
    return topologies


# Smallest sensible value of the positive flags (a 1 ns poll would be a busy loop); every time
# is at most MAX_SECS (~115 days), which a timed wait accepts.
MINIMUM = {"duration_secs": 0, "startup_timeout_secs": 0, "poll_interval_secs": 0.1, "epoch_secs": 0.1,
           "tick_ms": 0, "chaos_continuous_interval_secs": 0.1}
MAX_CONTINUOUS_EVENTS = 100_000


def _check_numbers(a: argparse.Namespace) -> None:
    for name, minimum in MINIMUM.items():
        flag, value = "--" + name.replace("_", "-"), getattr(a, name)
        _positive(flag, value)
        if value is not None and not minimum <= value <= MAX_SECS * (1000 if name == "tick_ms" else 1):
            raise UsageError(f"{flag}: expected {minimum:g}..{MAX_SECS:g}, got {value:g}")
    for name in ("chaos_continuous_start_sec", "chaos_continuous_max_events", "chaos_continuous_restart_down_secs",
                 "chaos_continuous_pause_duration_secs"):
        if getattr(a, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')}: must not be negative, got {getattr(a, name):g}")
        if getattr(a, name) > MAX_SECS:
            raise UsageError(f"--{name.replace('_', '-')}: expected at most {MAX_SECS:g}, got {getattr(a, name):g}")
    if a.exporter_port and not 1024 <= a.exporter_port <= 65535:
        raise UsageError(f"--exporter-port: expected 1024..65535, got {a.exporter_port}")
    if not 1024 <= a.base_port <= 65000:
        raise UsageError(f"--base-port: expected 1024..65000, got {a.base_port}")
    if a.node_bin and not (Path(a.node_bin).is_file() and os.access(a.node_bin, os.X_OK)):
        raise UsageError(f"--node-bin {a.node_bin}: not an executable file")
    try:
        ipaddress.IPv4Address(a.bind_host)
    except ValueError:
        raise UsageError(f"--bind-host {a.bind_host!r}: expected an IPv4 address such as 127.0.0.1") from None
    for flag, url in (("--prometheus-url", a.prometheus_url), ("--alertmanager-url", a.alertmanager_url)):
        if url is not None and not url.startswith(("http://", "https://")):
            raise UsageError(f"{flag} {url!r}: expected an http:// or https:// URL")


def _node_args(items: list[str], selected: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """``NODE=ARG`` items; NODE must be a node of a selected topology (a typo is a usage error)."""
    valid = sorted({n for nodes in selected.values() for n in nodes})
    extra: dict[str, tuple[str, ...]] = {}
    for item in items:
        node, sep, arg = item.partition("=")
        if not sep:
            raise UsageError(f"--node-arg {item!r}: expected NODE=ARG")
        if node not in valid:
            raise UsageError(f"--node-arg {item!r}: no node {node!r} in {', '.join(selected)}; "
                             f"valid nodes: {', '.join(valid)}")
        extra[validate_name("node", node)] = (*extra.get(node, ()), arg)
    return extra


def _check_out_dir(out_dir: Path) -> None:
    """--out-dir must be (or be creatable as) a writable directory; checked, nothing created."""
    probe = out_dir.absolute()
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():
            raise UsageError(f"--out-dir {out_dir}: {probe} is a dangling symlink")
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--out-dir {out_dir}: {probe} is not a directory")
    try:  # os.access says yes to root everywhere: only a real (and at once removed) directory tells
        os.rmdir(tempfile.mkdtemp(prefix=".soak-run-probe-", dir=probe))
    except OSError as exc:
        raise UsageError(f"--out-dir {out_dir}: cannot create a directory in {probe}: {exc.strerror}") from None


def _check_tools(a: argparse.Namespace) -> None:
    """The servers this run will start must be on PATH (a UsageError naming the missing one)."""
    if a.prometheus_url is None:
        find_binary(PROMETHEUS_BIN)
        if a.alertmanager_url is None:
            find_binary(ALERTMANAGER_BIN)


def _continuous(a: argparse.Namespace, seed: int, duration: float) -> Continuous | None:
    if not (a.chaos_continuous_enable or (a.enable_chaos and not a.chaos_plan)):
        return None
    count = max(0.0, duration - a.chaos_continuous_start_sec) / a.chaos_continuous_interval_secs
    if min(count, a.chaos_continuous_max_events or count) > MAX_CONTINUOUS_EVENTS:
        raise UsageError(f"--chaos-continuous-interval-secs {a.chaos_continuous_interval_secs:g}: {count:.0f} events "
                         f"in {duration:g}s, more than {MAX_CONTINUOUS_EVENTS}; use a longer interval or "
                         "--chaos-continuous-max-events")
    actions = tuple(a.chaos_continuous_actions.split(","))
    bad = [x for x in actions if x not in CHAOS_ACTIONS]
    if bad:
        raise UsageError(f"--chaos-continuous-actions: unknown action {bad[0]!r}; known: {', '.join(CHAOS_ACTIONS)}")
    return Continuous(a.chaos_continuous_interval_secs, a.chaos_continuous_start_sec, a.chaos_continuous_max_events,
                      actions, a.chaos_continuous_seed if a.chaos_continuous_seed is not None else seed,
                      a.chaos_continuous_restart_down_secs, a.chaos_continuous_pause_duration_secs)


def _custom_topology(value: str | None) -> CustomTopology | None:
    """``--topology`` names a built-in topology, or a topology file of argv lists."""
    if value is None or not is_topology_file(value):
        return None
    return load_topology_file(Path(value), tuple(TOPOLOGIES))


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        from runner.soak import run
        given = sys.argv[1:] if argv is None else argv
        cfg = resolve(build_parser().parse_args(given))
        # The argv that repeats this run exactly: the given flags plus the seed actually used.
        cfg = dataclasses.replace(cfg, repeat_argv=tuple(
            given if any(x == "--seed" or x.startswith("--seed=") for x in given)
            else [*given, "--seed", str(cfg.launch.seed)]))
        # What dead runs left (processes carrying their marker, network cuts) is ended first, so it
        # holds no port; then this run's ports are reserved and checked free: all before anything starts.
        for line in reaper.clean_stale():
            print(f"soak-run: cleaned up after a dead run: {line}", file=sys.stderr)
        lease = ports.reserve(ports.planned(cfg), f"soak-run pid {os.getpid()}, run {cfg.run_dir}")
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            print(f"\nsoak-run: {signal.Signals(signum).name}: healing chaos, stopping nodes, judging what was "
                  "collected", file=sys.stderr)
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        return run(cfg, stop, lease)
    run_cli("soak-run", body)
