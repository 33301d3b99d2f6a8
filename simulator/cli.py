"""``soak-sim``: world_viewer_live's command line, read the way the real parser reads it.

``--bind`` is the viewer's TCP listener (held here, nothing served). UDP gossip binds, in
``triad``, ``--triad-gossip-base-port`` P, P+1, P+2 on ``--bind``'s IP; in
``triad_distributed``, the process's own role's ``--triad-<role>-gossip`` address. Every rule
and message of the real parser (FORMATS.md; world_viewer_live/cli.rs) applies: a parse error
prints its one line on stderr and the help on stdout and exits 1.
Simulator-only additions: ``--status-listen``, ``--seed`` and the fault switches.
"""
from __future__ import annotations

import ipaddress
import random
import signal
import sys
from pathlib import Path
from typing import Any

from simulator.faults import FaultConfig, Faults
from simulator.flags import (DISTFS_DEFAULTS, DISTFS_FLAGS, SIM_DEFAULTS, SIM_FLAGS, SIM_HELP, Flag, ParseError,
                             check_distfs, fail, integer, non_empty, non_negative, parse_flags, positive, signed,
                             socket_addr, table, verbatim)
from simulator.net import Listener, serve_http
from simulator.node import Addr, Node
from simulator.sim import ROLES, G1Output, Sim
from soakcore.errors import SoakError, UsageError, run_cli
from soakcore.ids import validate_name

TOPOLOGIES = ("single", "triad", "triad_distributed")
HELP = """Usage: world_viewer_live [scenario] [--bind <addr>] [--llm|--no-llm] [--topology <mode>] ...
(soak-sim: a simulated world_viewer_live; docs/simulator.md)
Options:
  --bind <addr>     Viewer server TCP bind address (default: 127.0.0.1:5010)
  --web-bind <addr> WebSocket bridge bind address (accepted, not served)
  --scenario <name> Scenario name (default: twin_region_bootstrap)
  --llm | --no-llm  accepted, no effect
  --topology <mode> Node topology mode: single|triad|triad_distributed (default: triad; single is not simulated)
  --triad-gossip-base-port <port> Triad gossip base UDP port (default: 5500)
  --triad-sequencer-gossip <addr:port> Triad distributed sequencer gossip bind/bootstrap (required for all roles)
  --triad-storage-gossip <addr:port> Triad distributed storage gossip bind (required when --node-role storage)
  --triad-observer-gossip <addr:port> Triad distributed observer gossip bind (required when --node-role observer)
  --node-id <id>    Node identifier (default: viewer-live-node)
  --node-role <r>   Node role: sequencer|storage|observer (default: observer)
  --node-tick-ms <ms> Node runtime tick interval (default: 200)
  --pos-* , --node-validator, --node-(no-)auto-attest-all, --node-gossip-*, --node-repl-*, --reward-* :
                    parsed and checked like the real node's
  --reward-runtime-enable Enable reward runtime settlement loop (default: off)
  --reward-runtime-report-dir <path> (default: output/node-reward-runtime)
  --reward-runtime-epoch-duration-secs <n> (soak-sim default: 10; real node: 3600)
  --status-listen <host:port> soak-sim only: serve GET /v1/chain/status
""" + SIM_HELP


def _role(raw: str) -> str:
    if raw.strip().lower() not in ROLES:
        raise ValueError("--node-role must be one of: sequencer, storage, observer")
    return raw.strip().lower()


def _topology(raw: str) -> str:
    if raw.strip().lower() not in TOPOLOGIES:
        raise ValueError("--topology must be one of: single, triad, triad_distributed")
    return raw.strip().lower()


def _validator(raw: str) -> tuple[str, int]:
    vid, sep, stake = raw.partition(":")   # world_viewer_live splits at the first ':'
    if not sep:
        raise ValueError("--node-validator requires <validator_id:stake>")
    if not vid.strip():
        raise ValueError("--node-validator validator_id cannot be empty")
    value = integer(1, message="--node-validator stake must be a positive integer")(stake.strip())
    return vid.strip(), value


def _status_addr(raw: str) -> Addr:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--status-listen: expected host:port, got {raw!r}")
    return host.strip("[]"), int(port)


def _v(name: str, parse: Any = verbatim, error: str = "", repeat: bool = False) -> Flag:
    return Flag(name, name.lstrip("-").replace("-", "_"), parse, repeat=repeat, error=error)


def _s(name: str, dest: str, const: Any = True) -> Flag:
    return Flag(name, dest, None, const)


G1_FLAGS: tuple[Flag, ...] = (
    _v("--bind", error="--bind requires an address"),
    _v("--web-bind", error="--web-bind requires an address"),
    _v("--scenario", error="--scenario requires a name"),
    _s("--llm", "llm"), _s("--no-llm", "llm", False),
    _v("--topology", _topology, "--topology requires a value"),
    _v("--triad-gossip-base-port", integer(1, 65533, "--triad-gossip-base-port requires an integer in [1, 65533]"),
       "--triad-gossip-base-port requires an integer in [1, 65533]"),
    *(_v(f"--triad-{r}-gossip", socket_addr(f"--triad-{r}-gossip"), f"--triad-{r}-gossip requires <addr:port>")
      for r in ROLES),
    _s("--viewer-no-consensus-gate", "viewer_consensus_gate", False),
    _s("--no-node", "node_enabled", False),
    _v("--node-id", error="--node-id requires a value"),
    _v("--node-role", _role, "--node-role requires a value"),
    positive("--node-tick-ms"), positive("--pos-slot-duration-ms"), positive("--pos-ticks-per-slot"),
    non_negative("--pos-proposal-tick-phase"), non_negative("--pos-max-past-slot-lag"),
    _s("--pos-adaptive-tick-scheduler", "pos_adaptive"), _s("--pos-no-adaptive-tick-scheduler", "pos_adaptive", False),
    _v("--pos-slot-clock-genesis-unix-ms", signed("--pos-slot-clock-genesis-unix-ms requires an integer"),
       "--pos-slot-clock-genesis-unix-ms requires an integer"),
    _v("--node-validator", _validator, "--node-validator requires <validator_id:stake>", repeat=True),
    _s("--node-auto-attest-all", "auto_attest"), _s("--node-no-auto-attest-all", "auto_attest", False),
    _v("--node-gossip-bind", socket_addr("--node-gossip-bind"), "--node-gossip-bind requires <addr:port>"),
    _v("--node-gossip-peer", socket_addr("--node-gossip-peer"), "--node-gossip-peer requires <addr:port>", True),
    _v("--node-repl-libp2p-listen", error="--node-repl-libp2p-listen requires <multiaddr>", repeat=True),
    _v("--node-repl-libp2p-peer", error="--node-repl-libp2p-peer requires <multiaddr>", repeat=True),
    _v("--node-repl-topic", non_empty("--node-repl-topic requires non-empty value"), "--node-repl-topic requires <topic>"),
    _s("--reward-runtime-enable", "reward_runtime_enable"),
    _s("--reward-runtime-auto-redeem", "reward_runtime_auto_redeem"),
    _v("--reward-runtime-signer", non_empty("--reward-runtime-signer requires non-empty <node_id>"),
       "--reward-runtime-signer requires <node_id>"),
    _v("--reward-runtime-leader-node", non_empty("--reward-runtime-leader-node requires non-empty <node_id>"),
       "--reward-runtime-leader-node requires <node_id>"),
    positive("--reward-runtime-leader-stale-ms"),
    _s("--reward-runtime-no-failover", "reward_runtime_failover", False),
    _v("--reward-runtime-report-dir", non_empty("--reward-runtime-report-dir requires non-empty <path>"),
       "--reward-runtime-report-dir requires <path>"),
    positive("--reward-runtime-min-observer-traces", 2**32 - 1),
    positive("--reward-runtime-epoch-duration-secs"),
    positive("--reward-points-per-credit"), positive("--reward-credits-per-power-unit"),
    positive("--reward-max-redeem-power-per-epoch", 2**63 - 1), positive("--reward-min-redeem-power-unit", 2**63 - 1),
    non_negative("--reward-initial-reserve-power-units", 2**63 - 1),
    *DISTFS_FLAGS,
    _v("--status-listen", _status_addr, "--status-listen requires <host:port>"),
    *SIM_FLAGS,
)
FLAGS = table(G1_FLAGS)
DEFAULTS: dict[str, Any] = {
    "bind": "127.0.0.1:5010", "scenario": None, "topology": "triad", "triad_gossip_base_port": 5500,
    "triad_sequencer_gossip": None, "triad_storage_gossip": None, "triad_observer_gossip": None,
    "viewer_consensus_gate": True, "node_enabled": True, "node_id": "viewer-live-node", "node_role": "observer",
    "node_tick_ms": 200, "pos_ticks_per_slot": 10, "pos_proposal_tick_phase": 9, "node_validator": [],
    "node_gossip_bind": None, "node_gossip_peer": [], "node_repl_libp2p_listen": [], "node_repl_libp2p_peer": [],
    "reward_runtime_enable": False, "reward_runtime_report_dir": "output/node-reward-runtime",
    "reward_runtime_epoch_duration_secs": 10, "status_listen": None, **DISTFS_DEFAULTS, **SIM_DEFAULTS,
}


def _missing(flag: Flag) -> str:
    return flag.error or f"{flag.name} requires a positive integer"


def distributed_gossip(o: dict[str, Any]) -> tuple[Addr, list[Addr]]:
    """The real ``resolve_triad_distributed_gossip``: this role's bind address and its peers."""
    role = o["node_role"]
    seq, sto, obs = (o[f"triad_{r}_gossip"] for r in ROLES)

    def need(addr: Addr | None, flag: str) -> Addr:
        if addr is None:
            raise ParseError(f"--topology triad_distributed with --node-role {role} requires {flag} <addr:port>")
        return addr

    if role == "sequencer":
        bind, peers = need(seq, "--triad-sequencer-gossip"), [sto, obs]
    else:
        bind = need(sto if role == "storage" else obs, f"--triad-{role}-gossip")
        sequencer = need(seq, "--triad-sequencer-gossip")
        if sequencer == bind:
            raise ParseError(f"--topology triad_distributed requires --triad-{role}-gossip distinct from "
                             "--triad-sequencer-gossip")
        peers = [sequencer, obs if role == "storage" else sto]
    return bind, list(dict.fromkeys(p for p in peers if p is not None and p != bind))


def check(o: dict[str, Any]) -> None:
    """The real parser's cross-flag rules, in its order."""
    if o["scenario"] is not None:
        try:
            validate_name("scenario", o["scenario"])
        except UsageError:
            raise ParseError(f"Unknown scenario: {o['scenario']}") from None
    mode = o["topology"]
    if mode in ("triad", "triad_distributed"):
        if not o["node_enabled"]:
            raise ParseError(f"--topology {mode} requires embedded node runtime; remove --no-node or use "
                             "--topology single")
        if not o["viewer_consensus_gate"]:
            raise ParseError(f"--topology {mode} requires viewer consensus gate; remove --viewer-no-consensus-gate "
                             "or use --topology single")
        if mode == "triad" and o["node_role"] != "observer":
            raise ParseError("--node-role is only supported in --topology single")
        if o["node_validator"]:
            raise ParseError("--node-validator is only supported in --topology single")
        if o["node_gossip_bind"] is not None or o["node_gossip_peer"]:
            raise ParseError("--node-gossip-* is only supported in --topology single")
    if mode == "triad":
        if o["node_repl_libp2p_listen"] or o["node_repl_libp2p_peer"]:
            raise ParseError("--node-repl-libp2p-* is only supported in --topology single")
        if any(o[f"triad_{r}_gossip"] is not None for r in ROLES):
            raise ParseError("--triad-*-gossip is only supported in --topology triad_distributed")
    if mode == "triad_distributed":
        distributed_gossip(o)
    check_distfs(o)
    if o["pos_proposal_tick_phase"] >= o["pos_ticks_per_slot"]:
        raise ParseError(f"--pos-proposal-tick-phase={o['pos_proposal_tick_phase']} must be less than "
                         f"--pos-ticks-per-slot={o['pos_ticks_per_slot']}")
    if o["reward_runtime_enable"] and not o["node_enabled"]:
        raise ParseError("--reward-runtime-enable requires embedded node runtime (remove --no-node)")
    try:   # soak-sim's own rule: the node id becomes a path component
        validate_name("node id", o["node_id"])
    except UsageError as exc:
        raise ParseError(str(exc)) from None


def parse(argv: list[str]) -> dict[str, Any]:
    """Parsed options; ParseError with the real one-line message; help exits 0."""
    opts = dict(DEFAULTS, node_validator=[], node_gossip_peer=[], node_repl_libp2p_listen=[],
                node_repl_libp2p_peer=[])

    def other(arg: str) -> None:
        if arg in ("-h", "--help"):
            print(HELP)
            sys.exit(0)
        if opts["scenario"] is not None:
            raise ParseError(f"unexpected argument: {arg}")
        opts["scenario"] = arg

    parse_flags(argv, FLAGS, opts, other, _missing)
    check(opts)
    return opts


def viewer_addr(bind: str) -> Addr:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise SoakError(f"failed to start live viewer server: invalid --bind address {bind!r}")
    return host.strip("[]"), int(port)


def gossip_ip(bind: str) -> str:
    """The real ``infer_triad_gossip_ip``: --bind's IP if it is an IP literal, else 127.0.0.1."""
    host = bind.rpartition(":")[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "127.0.0.1"


def build_nodes(o: dict[str, Any], faults: Faults, work: Path) -> list[Node]:
    world, base = f"live-{o['scenario'] or 'twin_region_bootstrap'}", o["node_id"]
    if o["topology"] == "triad":
        ip, port = gossip_ip(o["bind"]), o["triad_gossip_base_port"]
        addrs = [(ip, port + i) for i in range(3)]
        # A fork needs one node to disagree with its peers: in triad the embedded storage node.
        nodes = [Node(f"{base}-{role}", role, world, addrs[i], addrs, work, faults, o["seed"], role == "storage",
                      bind_flag=f"--triad-gossip-base-port {port} (+{i})")
                 for i, role in enumerate(ROLES)]
    elif o["topology"] == "triad_distributed":
        role = o["node_role"]
        bind, peers = distributed_gossip(o)
        nodes = [Node(f"{base}-{role}", role, world, bind, peers, work, faults, o["seed"],
                      bind_flag=f"--triad-{role}-gossip")]
    else:
        raise SoakError("--topology single is not simulated (soak-sim runs triad and triad_distributed)")
    for node in nodes:
        node.base_challenges_per_tick = node.challenges_per_tick = o["reward_distfs_probe_per_tick"]
    return nodes


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        opts = parse(args)
    except ParseError as exc:
        fail(str(exc), HELP)

    def body() -> int:
        work = Path.cwd()
        faults = Faults(FaultConfig.from_opts(opts), work, random.Random(opts["seed"]))
        (work / "output").mkdir(exist_ok=True)
        nodes = build_nodes(opts, faults, work)       # UDP gossip first, like the real node
        viewer = Listener(viewer_addr(opts["bind"]), "failed to start live viewer server: --bind")
        report_dir = Path(opts["reward_runtime_report_dir"]) if opts["reward_runtime_enable"] else None
        if report_dir:
            report_dir.mkdir(parents=True, exist_ok=True)
        sim = Sim(work, nodes, faults, opts["node_tick_ms"] / 1000, opts["reward_runtime_epoch_duration_secs"],
                  G1Output(nodes, faults, report_dir))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: sim.stop.set())
        if opts["status_listen"]:
            serve_http(opts["status_listen"], {"/v1/chain/status": lambda: sim.status},
                       {"ok": False, "error": "not found"}, "--status-listen")
        try:
            return sim.run()
        finally:
            viewer.close()
    run_cli("soak-sim", body)
