"""``soak-sim-g2`` / ``python3 -m simulator.g2``: a simulated ``oasis7_chain_runtime``.

Takes the real binary's argv verbatim (simulator/g2_cli.py), runs ONE node per process on the
shared simulator core (the same Node, gossip, blob store, faults and tick loop as soak-sim),
serves ``/healthz``, ``/v1/chain/status`` and ``/v1/chain/balances`` on ``--status-bind``,
holds its replication listeners and dials its replication peers, and writes slim epoch files
to ``output/chain-runtime/<node_id>/reward-runtime-report/`` (every role).
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from simulator.faults import FaultConfig, Faults
from simulator.flags import ParseError, fail
from simulator.g2_cli import HELP, parse
from simulator.g2_doc import G2State, balances, chain_status, dir_bytes, slim_epoch, slot_clock
from simulator.net import Listener, ReplicationLinks, Traffic, serve_http
from simulator.node import Addr, Node
from simulator.report import write_report
from simulator.sim import Sim
from soakcore.errors import SoakError, UsageError, run_cli
from soakcore.ids import validate_name

GC_INTERVAL_S = 10.0   # the storage node's blob-store GC pass
# /ip4|ip6|dns*/<host>/tcp/<port>[/p2p/<id>]: what a launcher passes for libp2p over TCP.
MULTIADDR = re.compile(r"^/(ip4|ip6|dns|dns4|dns6)/([^/]+)/tcp/(\d{1,5})(/p2p/[1-9A-HJ-NP-Za-km-z]+)?$")
SIGNER_NS = b"oasis7-node-consensus-signer-v1"


def multiaddr(raw: str, flag: str) -> Addr:
    m = MULTIADDR.match(raw)
    if not m or int(m.group(3)) > 65535:
        raise SoakError(f"invalid {flag} {raw}")
    return m.group(2), int(m.group(3))


def root_key(path: Path) -> bytes:
    """The node key from ``--config`` (``[node] private_key``); created on first start like the
    real node (G2.md: three nodes starting together race on it, so launchers pre-create it)."""
    if not path.exists():
        key = os.urandom(32).hex()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'[node]\nprivate_key = "{key}"\npublic_key = "{hashlib.sha256(bytes.fromhex(key)).hexdigest()}"\n')
    try:
        doc = tomllib.loads(path.read_text())
        return bytes.fromhex(doc["node"]["private_key"])
    except (OSError, ValueError, KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise SoakError(f"failed to load node keypair from {path}: {exc}") from exc


def signer_keys(o: dict[str, Any], root: bytes) -> dict[str, str]:
    """Every validator's signer key, derived from this node's own root key unless overridden."""
    validators = [v for v, _ in o["node_validator"]] or [o["node_id"]]
    keys = {v: hashlib.sha256(SIGNER_NS + root + b"|" + v.encode()).hexdigest() for v in validators}
    for vid, key in o["node_validator_signer_public_key"]:
        if vid not in keys:
            raise SoakError(f"--node-validator-signer-public-key names validator {vid} that is not in the "
                            "validator set")
        keys[vid] = key
    return keys


class G2Output:
    """Per tick: replication links and the storage walk (every 1 s); per epoch: a slim file."""

    def __init__(self, node: Node, s: G2State, faults: Faults, listeners: list[Listener],
                 links: ReplicationLinks) -> None:
        self.node, self.s, self.faults = node, s, faults
        self.listeners, self.links = listeners, links
        self.next_walk = 0.0
        self.next_gc = time.monotonic() + 1.0   # a first pass soon after start, then every GC_INTERVAL_S

    def tick(self, now_ms: int, elapsed: float) -> None:
        s = self.s
        s.invariant_ok = not self.faults.invariant_broken(elapsed)
        s.last_error = self.node.last_error
        self._clock(now_ms)
        if self.faults.replication_down(elapsed):   # the node's whole replication network
            for listener in self.listeners:
                listener.close()
            self.links.down()
        errors = self.links.recent_errors()
        s.replication_errors = errors
        s.replication_peers = {f"/ip4/{a[0]}/tcp/{a[1]}": "active" if a in self.links.connected else
                               "suspect" if a in self.links.error_at and errors else "candidate"
                               for a in self.links.peers}
        if time.monotonic() >= self.next_walk:   # the real node refreshes storage metrics every 1 s
            self.next_walk = time.monotonic() + 1.0
            root = Path(s.runtime_root)
            dirs = {"runtime_root": root, "execution_world_dir": root / "reward-runtime-execution-world",
                    "execution_records_dir": root / "reward-runtime-execution-records",
                    "execution_store_root": root / "store", "reward_runtime_report_dir": Path(s.report_dir),
                    "replication_root": Path("output") / "node-distfs" / s.node_id}
            walked = {k: dir_bytes(p) for k, p in dirs.items()}
            s.bytes_by_dir = {k: v[0] for k, v in sorted(walked.items())}
            s.blob_counts = {"execution_sidecar_blobs": 0, "execution_store_blobs": walked["execution_store_root"][1],
                             "replication_blobs": walked["replication_root"][1]}
        if self.node.store is not None and time.monotonic() >= self.next_gc:
            self.next_gc = time.monotonic() + GC_INTERVAL_S
            self._gc(now_ms)

    def _clock(self, now_ms: int) -> None:
        """Slots and ticks of the PoS clock that passed since our last tick (a pause) are missed."""
        s, clock = self.s, slot_clock(self.s, now_ms)
        if s.last_slot is not None and s.last_tick is not None:
            s.missed_slots += max(0, clock["slot"] - s.last_slot - 1)
            s.missed_ticks += max(0, clock["last_observed_tick"] - s.last_tick - 1)
        s.last_slot, s.last_tick = clock["slot"], clock["last_observed_tick"]

    def _gc(self, now_ms: int) -> None:
        """Count the files of the blob store that its index does not name (orphans)."""
        assert self.node.store is not None
        s, store = self.s, self.node.store
        try:
            names = {p.name for p in store.root.iterdir() if p.is_file()}
        except OSError as exc:
            s.last_gc_result, s.last_gc_error = "failed", f"gc: {exc.strerror or exc}"
        else:
            s.orphan_blobs = len(names - set(store.index) - {"index.json"})
            s.last_gc_result, s.last_gc_error = "success", None
        s.last_gc_at_ms = now_ms

    def write_epoch(self, now_ms: int, elapsed: float) -> None:
        if not self.s.reward_enabled:
            return
        self.s.report_count += 1
        self.s.settlement_attempts += 1
        self.s.latest_report_ms = now_ms
        doc = slim_epoch(self.node, self.s, now_ms)
        self.node.state.epoch_index += 1
        self.node.persist()
        write_report(Path(self.s.report_dir) / f"epoch-{doc['settlement_report']['epoch_index']}.json", doc,
                     self.faults.cfg.partial_report, self.faults.cfg.slow_write_ms)

    def status(self, now_ms: int, elapsed: float) -> dict[str, Any]:
        return chain_status(self.node, self.s, now_ms)


def build(o: dict[str, Any], work: Path) -> tuple[Sim, G2Output, Node, G2State]:
    try:
        validate_name("node id", o["node_id"])   # it becomes a path component
    except UsageError as exc:
        raise SoakError(str(exc)) from None
    listen = [multiaddr(m, "--replication-network-listen") for m in o["replication_network_listen"]]
    peers = [multiaddr(m, "--replication-network-peer") for m in o["replication_network_peer"]]
    keys = signer_keys(o, root_key(work / o["config"]))
    runtime_root = Path("output") / "chain-runtime" / o["node_id"]
    (work / runtime_root / "output").mkdir(parents=True, exist_ok=True)
    faults = Faults(FaultConfig.from_opts(o), work / runtime_root, random.Random(o["seed"]))
    store = Path(o["storage_root"]) if o["storage_root"] else runtime_root / "store"
    node = Node(o["node_id"], o["node_role"], o["world_id"], o["node_gossip_bind"], o["node_gossip_peer"], work,
                faults, o["seed"], store_root=work / store, bind_flag="--node-gossip-bind")
    node.base_challenges_per_tick = node.challenges_per_tick = o["reward_distfs_probe_per_tick"]
    node.signer_keys = keys
    # Replication: the real default listen is /ip4/127.0.0.1/tcp/0 when none is given.
    wire = Traffic()
    listeners = [Listener(a, "--replication-network-listen", wire) for a in listen or [("127.0.0.1", 0)]]
    now_ms = int(time.time() * 1000)
    c = node.state.distfs
    s = G2State(node_id=o["node_id"], world_id=o["world_id"], role=o["node_role"], started_ms=now_ms,
                genesis_ms=o["pos_slot_clock_genesis_unix_ms"] or now_ms, slot_ms=o["pos_slot_duration_ms"],
                ticks_per_slot=o["pos_ticks_per_slot"], proposal_tick_phase=o["pos_proposal_tick_phase"],
                adaptive=o["pos_adaptive"], runtime_root=str(runtime_root),
                report_dir=str(runtime_root / "reward-runtime-report"), reward_enabled=o["reward_runtime_enabled"],
                distfs_base=(c.total, c.failed), wire=wire)
    if s.reward_enabled:
        (work / s.report_dir).mkdir(parents=True, exist_ok=True)
    output = G2Output(node, s, faults, listeners, ReplicationLinks(peers, traffic=wire))
    sim = Sim(work, [node], faults, o["node_tick_ms"] / 1000, o["reward_runtime_epoch_duration_secs"], output)
    return sim, output, node, s


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        opts = parse(args)
    except ParseError as exc:
        fail(str(exc), HELP)

    def body() -> int:
        work = Path.cwd()
        sim, output, node, s = build(opts, work)
        output.tick(int(time.time() * 1000), 0.0)
        sim.status = chain_status(node, s, int(time.time() * 1000))
        host, port = opts["status_addr"]
        serve_http((host, port), {"/healthz": lambda: {"ok": True}, "/v1/chain/status": lambda: sim.status,
                                  "/v1/chain/balances": lambda: balances(node, s, int(time.time() * 1000))},
                   {"error": "not found"}, "failed to bind status server at")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: sim.stop.set())
        try:
            return sim.run()
        finally:
            output.links.stop()
            for listener in output.listeners:
                listener.close()
    run_cli("soak-sim-g2", body)


if __name__ == "__main__":
    main()
