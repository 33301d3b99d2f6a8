"""G2 nodes (``oasis7_chain_runtime``): the argv, ports, ids and shared key of one topology,
exactly as the upstream ``scripts/p2p-longrun-soak.sh`` builds them (agent_world/G2.md section 1).

One process per node and three nodes per topology, for ``triad`` and ``triad_distributed``
alike (the script builds the same argv for both; "triad" exists only in the script):

- ``case_base = --base-port + 100 * index`` (index: the topology's position in the run);
- node i = 0, 1, 2 is ``sequencer``, ``storage``, ``observer`` with stake 50, 30, 20;
- gossip UDP ``case_base+i+1``, status TCP ``case_base+i+21``, replication TCP
  ``/ip4/<host>/tcp/<case_base+i+41>`` (NOT gossip + 100, unlike G1);
- ids ``soak-<topology>-<run_id>-<label>``, world ``p2p-<topology>-<run_id>``;
- reward epoch 60 s unless ``--epoch-secs`` (a positive integer, the binary's parser).

The binary has no report-dir flag: epoch files land in
``<cwd>/output/chain-runtime/<node_id>/reward-runtime-report/`` (``report_dir``). Every node
derives every validator's signer key from its own ``config.toml`` root key, so the runner
writes one key per topology (``ensure_root_key``) before the first node starts and copies it
into each node's working directory (``install_key``): no start-up race, argv unchanged.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

G1_BINARY = "world_viewer_live"
G2_BINARY = "oasis7_chain_runtime"
NODE_KINDS = ("g1", "g2")
ROLES = ("sequencer", "storage", "observer")
STAKES = {"sequencer": 50, "storage": 30, "observer": 20}
GOSSIP_OFFSET, STATUS_OFFSET, REPLICATION_OFFSET = 1, 21, 41
DEFAULT_EPOCH_SECS = 60          # the script's --reward-runtime-epoch-duration-secs
CONFIG_FILE = "config.toml"      # the binary's default --config, relative to its cwd
# PoS flags the script passes verbatim (S L1764-1809).
POS_ARGS = ("--pos-slot-duration-ms", "12000", "--pos-ticks-per-slot", "10", "--pos-proposal-tick-phase", "9",
            "--pos-max-past-slot-lag", "256")


@dataclass(frozen=True)
class G2Node:
    label: str        # runner label, directory name and role
    node_id: str      # --node-id (runtime id)
    gossip: int       # UDP
    status: int       # TCP, HTTP /healthz and /v1/chain/status
    replication: int  # TCP, libp2p


def kind_of_binary(path: str | None) -> str | None:
    """'g1' or 'g2' when the binary's file name is one of the real nodes', else None."""
    if not path:
        return None
    return {G1_BINARY: "g1", G2_BINARY: "g2"}.get(Path(path).name)


def layout(topology: str, index: int, run_id: str, base_port: int) -> tuple[G2Node, ...]:
    case_base = base_port + 100 * index
    return tuple(G2Node(role, f"soak-{topology}-{run_id}-{role}", case_base + i + GOSSIP_OFFSET,
                        case_base + i + STATUS_OFFSET, case_base + i + REPLICATION_OFFSET)
                 for i, role in enumerate(ROLES))


def world_id(topology: str, run_id: str) -> str:
    return f"p2p-{topology}-{run_id}"


def multiaddr(host: str, port: int) -> str:
    return f"/ip4/{host}/tcp/{port}"


def node_args(node: G2Node, nodes: tuple[G2Node, ...], world: str, host: str, tick_ms: int,
              epoch_secs: int, peer_hosts: Mapping[str, str] | None = None) -> list[str]:
    """The script's argv for ``node`` (without the program): G2.md section 1, in its order.
    ``host`` is what the node binds; a peer is reached at ``peer_hosts[label]`` (default ``host``)."""
    peer_hosts = peer_hosts or {}
    argv = ["--node-id", node.node_id, "--world-id", world, "--status-bind", f"{host}:{node.status}",
            "--node-role", node.label, "--node-tick-ms", str(tick_ms), *POS_ARGS,
            "--reward-runtime-epoch-duration-secs", str(epoch_secs), "--reward-points-per-credit", "100",
            "--node-gossip-bind", f"{host}:{node.gossip}",
            "--replication-network-listen", multiaddr(host, node.replication),
            "--pos-no-adaptive-tick-scheduler",
            "--node-auto-attest-all" if node.label == "sequencer" else "--node-no-auto-attest-all"]
    for n in nodes:
        argv += ["--node-validator", f"{n.node_id}:{STAKES[n.label]}"]
    for n in nodes:
        if n is not node:
            peer = peer_hosts.get(n.label, host)
            argv += ["--node-gossip-peer", f"{peer}:{n.gossip}", "--replication-network-peer",
                     multiaddr(peer, n.replication)]
    return argv


def report_dir(work_dir: Path, node_id: str) -> Path:
    """Where the binary writes its epoch files (fixed, relative to its cwd; G2.md section 2)."""
    return work_dir / "output" / "chain-runtime" / node_id / "reward-runtime-report"


def _public_key_hex(private: bytes) -> str | None:
    """The ed25519 public key of a 32-byte seed, when ``cryptography`` is installed. Without it
    the file holds the private key only and the real node fills in ``public_key`` itself."""
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:
        return None
    return Ed25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw().hex()


def root_key_text(private: bytes) -> str:
    """The ``config.toml`` of a topology: its root ``private_key`` (and ``public_key`` when known)."""
    public = _public_key_hex(private)
    return f'[node]\nprivate_key = "{private.hex()}"\n' + (f'public_key = "{public}"\n' if public else "")


def ensure_root_key(path: Path) -> None:
    """Create the topology's one ``config.toml`` (``[node] private_key``, and the matching
    ed25519 ``public_key`` when it can be computed) unless it exists; O_EXCL, mode 0600."""
    if path.exists():
        return
    text = root_key_text(os.urandom(32))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def install_key(shared: Path, work_dir: Path) -> None:
    """The topology's key as the node's own ``config.toml`` (kept as it is after the first start:
    a restarted node finds the file it may have completed)."""
    ensure_root_key(shared)
    target = work_dir / CONFIG_FILE
    if target.exists():
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(shared.read_bytes())
