"""oasis7_chain_runtime's command line (G2.md section 1), read the way the real loop reads it:
exact flag names, ``<flag> requires a value`` / ``requires a non-empty value`` (values are
trimmed), ``unknown option: X`` for anything else, then the post-loop checks. Any error:
the line on stderr, the help on stdout, exit 1; ``-h``/``--help`` anywhere: help, exit 0.
Simulator-only additions: ``--seed`` and the fault switches (simulator/flags.py).
"""
from __future__ import annotations

import ipaddress
import sys
from typing import Any, Callable

from simulator.flags import (DISTFS_DEFAULTS, DISTFS_FLAGS, SIM_DEFAULTS, SIM_FLAGS, SIM_HELP, Flag, ParseError,
                             check_distfs, integer, non_negative, parse_flags, positive, signed, table)
from simulator.sim import ROLES

HELP = """Usage: oasis7_chain_runtime [options]
(soak-sim-g2: a simulated oasis7_chain_runtime; docs/simulator.md)
  --node-id <id>                 (default viewer-live-node)
  --world-id <id>                (default live-llm_bootstrap)
  --status-bind <host:port>      HTTP status server (default 127.0.0.1:5121)
  --config <path>                node key file, created when missing (default config.toml)
  --node-role <sequencer|storage|observer> (default sequencer)
  --node-tick-ms <n>             (default 200)
  --pos-slot-duration-ms <n> --pos-ticks-per-slot <n> --pos-proposal-tick-phase <n>
  --pos-adaptive-tick-scheduler | --pos-no-adaptive-tick-scheduler
  --pos-slot-clock-genesis-unix-ms <i64> --pos-max-past-slot-lag <n>
  --node-validator <id:stake>    repeatable
  --node-validator-signer-public-key <id:hex>
  --node-auto-attest-all | --node-no-auto-attest-all
  --node-gossip-bind <ip:port>   UDP gossip;  --node-gossip-peer <ip:port> repeatable
  --replication-network-listen <multiaddr>  --replication-network-peer <multiaddr>  repeatable
  --storage-root --execution-world-dir --execution-records-dir --execution-bridge-state <path>
  --storage-profile <p> --traffic-profile <p> --network-tier-manifest <path>
  --reward-runtime-enable | --reward-runtime-disable (default enabled)
  --reward-runtime-epoch-duration-secs <n> (default 3600) --reward-points-per-credit <n>
  --reward-runtime-auto-redeem | --reward-runtime-no-auto-redeem  --reward-runtime-signer-node-id <id>
  --reward-initial-reserve-power-units <n>  --reward-distfs-probe-* --reward-distfs-adaptive-*
  --p2p-* (user mode and detection overrides: accepted, no effect)
""" + SIM_HELP


def _trimmed(raw: str) -> str:
    return raw.strip()


def _role(raw: str) -> str:
    if raw.strip().lower() not in ROLES:
        raise ValueError("--node-role must be one of: sequencer, storage, observer")
    return raw.strip().lower()


def _socket_addr(flag: str) -> Callable[[str], tuple[str, int]]:
    def parse(raw: str) -> tuple[str, int]:
        host, sep, port = raw.strip().rpartition(":")
        try:
            ip = ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
            if not sep or not port.isdigit() or int(port) > 65535 or (ip.version == 6 and not host.startswith("[")):
                raise ValueError
        except ValueError:
            raise ValueError(f"{flag} requires <addr:port>") from None
        return str(ip), int(port)
    return parse


def _validator(raw: str) -> tuple[str, int]:
    vid, sep, stake = raw.strip().rpartition(":")   # oasis7 splits at the LAST ':' (G2.md)
    if not sep:
        raise ValueError("--node-validator requires <validator_id:stake>")
    if not vid.strip():
        raise ValueError("--node-validator validator_id cannot be empty")
    return vid.strip(), integer(1, message="--node-validator stake must be a positive integer")(stake.strip())


def _signer_key(raw: str) -> tuple[str, str]:
    vid, sep, key = raw.strip().rpartition(":")
    if not sep or not vid.strip() or not key.strip():
        raise ValueError("--node-validator-signer-public-key requires <validator_id:public_key_hex>")
    return vid.strip(), key.strip()


def _v(name: str, parse: Callable[[str], Any] = _trimmed, repeat: bool = False) -> Flag:
    return Flag(name, name.lstrip("-").replace("-", "_"), parse, repeat=repeat)


def _s(name: str, dest: str, const: Any = True) -> Flag:
    return Flag(name, dest, None, const)


P2P_VALUE_FLAGS = ("--p2p-user-mode", "--p2p-detected-reachability", "--p2p-detected-hole-punch",
                   "--p2p-deployment-mode", "--p2p-node-role", "--p2p-source-operator", "--p2p-source-asn")
P2P_SWITCHES = ("--p2p-accept-public-entry", "--p2p-reject-public-entry", "--p2p-clear-detected-reachability",
                "--p2p-detected-relay-available", "--p2p-detected-relay-unavailable", "--p2p-detected-probe-stable",
                "--p2p-detected-probe-unstable")

G2_FLAGS: tuple[Flag, ...] = (
    _v("--node-id"), _v("--world-id"), _v("--status-bind"), _v("--config"), _v("--node-role", _role),
    _v("--storage-profile"), _v("--traffic-profile"), _v("--network-tier-manifest"),
    positive("--node-tick-ms"), positive("--pos-slot-duration-ms"), positive("--pos-ticks-per-slot"),
    non_negative("--pos-proposal-tick-phase"), non_negative("--pos-max-past-slot-lag"),
    _s("--pos-adaptive-tick-scheduler", "pos_adaptive"), _s("--pos-no-adaptive-tick-scheduler", "pos_adaptive", False),
    _v("--pos-slot-clock-genesis-unix-ms", signed("--pos-slot-clock-genesis-unix-ms requires an integer")),
    _v("--node-validator", _validator, repeat=True),
    _v("--node-validator-signer-public-key", _signer_key, repeat=True),
    _s("--node-auto-attest-all", "auto_attest"), _s("--node-no-auto-attest-all", "auto_attest", False),
    _v("--node-gossip-bind", _socket_addr("--node-gossip-bind")),
    _v("--node-gossip-peer", _socket_addr("--node-gossip-peer"), repeat=True),
    _v("--replication-network-listen", repeat=True), _v("--replication-network-peer", repeat=True),
    _v("--storage-root"), _v("--execution-world-dir"), _v("--execution-records-dir"), _v("--execution-bridge-state"),
    _s("--reward-runtime-enable", "reward_runtime_enabled"), _s("--reward-runtime-disable", "reward_runtime_enabled",
                                                                False),
    _v("--reward-runtime-signer-node-id"), positive("--reward-runtime-epoch-duration-secs"),
    positive("--reward-points-per-credit"),
    _s("--reward-runtime-auto-redeem", "auto_redeem"), _s("--reward-runtime-no-auto-redeem", "auto_redeem", False),
    non_negative("--reward-initial-reserve-power-units", 2**63 - 1),
    *(_v(f) for f in P2P_VALUE_FLAGS), *(_s(f, f.lstrip("-").replace("-", "_")) for f in P2P_SWITCHES),
    *DISTFS_FLAGS, *SIM_FLAGS,
)
FLAGS = table(G2_FLAGS)
DEFAULTS: dict[str, Any] = {
    "node_id": "viewer-live-node", "world_id": "live-llm_bootstrap", "status_bind": "127.0.0.1:5121",
    "config": "config.toml", "node_role": "sequencer", "node_tick_ms": 200, "pos_slot_duration_ms": 12000,
    "pos_ticks_per_slot": 10, "pos_proposal_tick_phase": 9, "pos_max_past_slot_lag": 256, "pos_adaptive": False,
    "pos_slot_clock_genesis_unix_ms": None, "auto_attest": False, "node_gossip_bind": None, "storage_root": None,
    "reward_runtime_enabled": True, "reward_runtime_epoch_duration_secs": 3600, "reward_points_per_credit": 10,
    **DISTFS_DEFAULTS, **SIM_DEFAULTS,
}
LISTS = ("node_validator", "node_validator_signer_public_key", "node_gossip_peer", "replication_network_listen",
         "replication_network_peer")


def _wrap(flag: Flag) -> Flag:
    """Every value is trimmed and must not be empty before the flag's own check (the real
    ``parse_required_value``)."""
    if flag.parse is None:
        return flag
    inner = flag.parse

    def parse(raw: str) -> Any:
        if not raw.strip():
            raise ValueError(f"{flag.name} requires a non-empty value")
        return inner(raw.strip())
    return Flag(flag.name, flag.dest, parse, flag.const, flag.repeat, flag.error)


REAL_FLAGS = {name: _wrap(f) if not name.startswith(("--fault-", "--seed")) else f for name, f in FLAGS.items()}


def status_bind(raw: str) -> tuple[str, int]:
    """The real ``parse_host_port``."""
    host, sep, port = raw.strip().rpartition(":")
    if not sep:
        raise ParseError("--status-bind must be in <host:port> format")
    if not host.strip():
        raise ParseError("--status-bind host cannot be empty")
    if not port.isdigit() or not port.isascii() or int(port) > 65535:
        raise ParseError("--status-bind port must be an integer in 1..=65535")
    if int(port) == 0:
        raise ParseError("--status-bind port must be in 1..=65535")
    return host.strip().strip("[]"), int(port)


def parse(argv: list[str]) -> dict[str, Any]:
    if any(a in ("-h", "--help") for a in argv):   # anywhere, before anything else (M L201-204)
        print(HELP)
        sys.exit(0)
    opts: dict[str, Any] = dict(DEFAULTS, **{k: [] for k in LISTS})

    def other(arg: str) -> None:
        raise ParseError(f"unknown option: {arg}")

    parse_flags(argv, REAL_FLAGS, opts, other, lambda f: f"{f.name} requires a value")
    opts["status_addr"] = status_bind(opts["status_bind"])
    for key, flag in (("node_id", "--node-id"), ("world_id", "--world-id"), ("config", "--config")):
        if not opts[key].strip():
            raise ParseError(f"{flag} requires a non-empty value")
    if opts["pos_proposal_tick_phase"] >= opts["pos_ticks_per_slot"]:
        raise ParseError(f"--pos-proposal-tick-phase={opts['pos_proposal_tick_phase']} must be less than "
                         f"--pos-ticks-per-slot={opts['pos_ticks_per_slot']}")
    if opts["node_gossip_peer"] and opts["node_gossip_bind"] is None:
        raise ParseError("--node-gossip-peer requires --node-gossip-bind")
    check_distfs(opts)
    return opts
