"""One simulated node: PoS-like consensus over real UDP gossip on loopback.

The sequencer proposes one block per tick; followers commit what actually reaches them, so
SIGSTOP or a network cut shows up as lag and stalls in the others. State (height, epoch,
DistFS counters) is persisted in the working directory every tick, so a restart resumes.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from simulator.faults import Faults
from simulator.net import Traffic
from simulator.storage import BlobStore, Counters, TickChallenges
from soakcore.errors import SoakError

Addr = tuple[str, int]


def block_hash(world_id: str, height: int, forked: bool = False) -> str:
    return hashlib.sha256(f"{'fork:' if forked else ''}{world_id}:{height}".encode()).hexdigest()


@dataclass
class PeerHead:
    node_id: str
    height: int
    block_hash: str
    committed_at_ms: int


@dataclass
class Persisted:
    committed_height: int = 0
    last_committed_at_ms: int = 0
    epoch_index: int = 0
    tick_count: int = 0
    regressed: bool = False
    distfs: Counters = field(default_factory=Counters)


# Peer discovery like the real node's: whoever gossips to us is remembered (and answered) for
# PEER_TTL_MS after its last datagram, at most MAX_LEARNED_PEERS of them (FORMATS.md).
MAX_LEARNED_PEERS = 1024
PEER_TTL_MS = 10 * 60 * 1000
FINALITY_SAMPLES = 64


class Node:
    """``bind`` is this node's own UDP gossip address (None: no gossip at all); ``peers`` the
    addresses it was given. Others are learned from the datagrams that reach it."""

    def __init__(self, node_id: str, role: str, world_id: str, bind: Addr | None, peers: list[Addr],
                 state_dir: Path, faults: Faults, seed: int, can_fork: bool = True,
                 store_root: Path | None = None, bind_flag: str = "gossip bind") -> None:
        self.node_id, self.role, self.world_id = node_id, role, world_id
        self.bind = bind
        self.peers = list(dict.fromkeys(p for p in peers if p != bind))   # static, never forgotten
        self.learned: dict[Addr, int] = {}                                 # address -> last datagram (ms)
        self.faults = faults
        self.state_path = state_dir / f"sim-state-{node_id}.json"
        self.state = self._load()
        self.heads: dict[str, PeerHead] = {}
        self.last_status: str | None = "Committed" if self.state.committed_height else None
        self.last_error: str | None = None
        self.forked_at: int | None = None
        self.can_fork = can_fork
        self.proposal_opened_ms: int | None = None
        # State-root divergence fault: execution stays at this height and the block is re-run
        # every tick with a different result (a non-deterministic executor).
        self.exec_stuck_at: int | None = None
        self.reexecutions = 0
        self.stale_heads = 0   # sequencer heads older than our committed height (inbound, stale)
        self.finality_ms: deque[int] = deque(maxlen=FINALITY_SAMPLES)
        self.traffic = Traffic()
        # G2: validator signer keys derived from this node's root key (None: not checked). A
        # sequencer whose key differs (another config.toml) is not followed, as in the real node.
        self.signer_keys: dict[str, str] | None = None
        self.rejected_heads = 0
        self.sock: socket.socket | None = None
        if bind is not None:
            self.sock = socket.socket(socket.AF_INET6 if ":" in bind[0] else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.sock.bind(bind)
            except OSError as exc:
                self.sock.close()
                raise SoakError(f"{bind_flag} {bind[0]}:{bind[1]} ({node_id}): {exc.strerror}") from exc
            self.sock.setblocking(False)
        root = store_root or state_dir / "output" / "node-distfs" / node_id / "store"
        self.store = BlobStore(root, seed) if role == "storage" else None
        self.base_challenges_per_tick = self.challenges_per_tick = 1
        self.last_tick = TickChallenges()

    def _load(self) -> Persisted:
        try:
            raw = json.loads(self.state_path.read_text())
            return Persisted(**{**raw, "distfs": Counters(**raw["distfs"])})
        except (OSError, ValueError, TypeError, KeyError):
            return Persisted()

    def persist(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state)))
        os.replace(tmp, self.state_path)

    @property
    def committed_height(self) -> int:
        """What the node reports; a regression fault lowers it for good (a real regression)."""
        return max(0, self.state.committed_height - (self.faults.cfg.regress_by if self.state.regressed else 0))

    def own_hash(self, height: int) -> str | None:
        if height <= 0:
            return None
        return block_hash(self.world_id, height, self.forked_at is not None and height >= self.forked_at)

    def state_root(self, height: int) -> str | None:
        """The execution state root after ``height`` (forks with the block hash)."""
        if height <= 0:
            return None
        forked = self.forked_at is not None and height >= self.forked_at
        return hashlib.sha256(f"{'fork:' if forked else ''}root:{self.world_id}:{height}".encode()).hexdigest()

    def execution(self) -> tuple[int, str | None, str | None]:
        """(last executed height, its block hash, its state root)."""
        if self.exec_stuck_at is None:
            h = self.committed_height
            return h, self.own_hash(h), self.state_root(h)
        h = self.exec_stuck_at
        root = hashlib.sha256(f"diverged:{self.reexecutions}:root:{self.world_id}:{h}".encode()).hexdigest()
        return h, self.own_hash(h), root if h > 0 else None

    def network_committed_height(self) -> int:
        return max([self.committed_height, *(h.height for h in self.heads.values())])

    def tick(self, now_ms: int, elapsed: float) -> None:
        self.last_error = self.faults.last_error(elapsed) or self.last_error
        self.receive(now_ms, elapsed)
        if self.faults.regressed(elapsed) and not self.state.regressed:
            self.state.regressed = True
        if self.can_fork and self.faults.forked(elapsed) and self.forked_at is None:
            self.forked_at = max(1, self.state.committed_height)
        if self.faults.state_root_diverged(elapsed):
            if self.exec_stuck_at is None:
                self.exec_stuck_at = self.committed_height
            self.reexecutions += 1
        if self.role == "sequencer" and not self.faults.stalled(elapsed):
            self._propose(now_ms)
        if self.store is not None:
            self.run_challenges(now_ms)
        self.state.tick_count += 1
        # On disk before any peer hears of it: a kill -9 restart never reports less than was gossiped.
        self.persist()
        self.broadcast()

    def _propose(self, now_ms: int) -> None:
        """One proposal open at a time; it commits on a later tick, once it has been open for
        the finality-delay fault's time (so latency and block rate change for real)."""
        opened = self.proposal_opened_ms
        if opened is None:
            self.proposal_opened_ms = now_ms
            return
        if now_ms - opened < self.faults.cfg.finality_delay_ms:
            return
        self.finality_ms.append(now_ms - opened)
        self._commit(self.state.committed_height + 1, now_ms)
        self.proposal_opened_ms = now_ms

    def _commit(self, height: int, now_ms: int) -> None:
        self.state.committed_height = height
        self.state.last_committed_at_ms = now_ms
        self.last_status = "Committed"

    def receive(self, now_ms: int, elapsed: float) -> None:
        if self.sock is None:
            return
        while True:
            try:
                data, sender = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # A dead peer's ECONNREFUSED from an earlier send surfaces here: tolerated.
                if exc.errno != errno.ECONNREFUSED:
                    self.last_error = f"recv: {exc.strerror}"
                continue
            self.traffic.in_count += 1
            self.traffic.in_bytes += len(data)
            try:
                msg = json.loads(data)
                head = PeerHead(str(msg["id"]), int(msg["h"]), str(msg["hash"]), int(msg["at"]))
            except (ValueError, KeyError, TypeError):
                continue
            if self.signer_keys is not None and msg.get("role") == "sequencer" \
                    and msg.get("sk") != self.signer_keys.get(head.node_id):
                self.rejected_heads += 1
                continue
            self.heads[head.node_id] = head
            self.learn(sender[:2], now_ms)
            if msg.get("role") == "sequencer" and head.height < self.state.committed_height:
                self.stale_heads += 1
            # Followers commit what the sequencer has committed and they actually received.
            if (self.role != "sequencer" and msg.get("role") == "sequencer"
                    and head.height > self.state.committed_height and not self.faults.stalled(elapsed)):
                self.finality_ms.append(max(0, now_ms - head.committed_at_ms))
                self._commit(head.height, now_ms)
        self.forget(now_ms)

    def learn(self, sender: Addr, now_ms: int) -> None:
        """Remember whoever gossips to us (the real node's discovery: a star still works)."""
        if sender in self.peers or sender == self.bind:
            return
        if sender not in self.learned and len(self.learned) >= MAX_LEARNED_PEERS:
            del self.learned[min(self.learned, key=self.learned.__getitem__)]
        self.learned[sender] = now_ms

    def forget(self, now_ms: int) -> None:
        for addr in [a for a, seen in self.learned.items() if now_ms - seen > PEER_TTL_MS]:
            del self.learned[addr]

    def targets(self) -> list[Addr]:
        return [*self.peers, *self.learned]

    def broadcast(self) -> None:
        if self.sock is None:
            return
        height = self.committed_height
        doc: dict[str, Any] = {"id": self.node_id, "role": self.role, "h": height,
                               "hash": self.own_hash(height) or "", "at": self.state.last_committed_at_ms}
        if self.signer_keys is not None:
            doc["sk"] = self.signer_keys.get(self.node_id)
        msg = json.dumps(doc).encode()
        for peer in self.targets():
            try:
                self.sock.sendto(msg, peer)
            except OSError as exc:  # nftables drop gives EPERM; a dead peer ECONNREFUSED
                if exc.errno not in (errno.EPERM, errno.ECONNREFUSED, errno.EAGAIN):
                    self.last_error = f"send: {exc.strerror}"
                continue
            self.traffic.out_count += 1
            self.traffic.out_bytes += len(msg)

    def run_challenges(self, now_ms: int) -> None:
        assert self.store is not None
        c, t = self.state.distfs, TickChallenges()
        c.rounds += 1
        for _ in range(self.challenges_per_tick):
            reason, t.last_reference = self.store.challenge(c.cursor, c.rounds * 131, self.faults.distfs_failure())
            t.last_reason = reason
            c.cursor += 1
            for counts in (c, t):
                counts.total += 1
                if reason is None:
                    counts.passed += 1
                else:
                    counts.failed += 1
                    counts.reasons[reason] = counts.reasons.get(reason, 0) + 1
        c.last_probe_ms = now_ms
        self.last_tick = t

    def peer_heads(self) -> list[dict[str, Any]]:
        return [{"node_id": h.node_id, "height": h.height, "block_hash": h.block_hash,
                 "committed_at_ms": h.committed_at_ms, "execution_block_hash": None,
                 "execution_state_root": None} for h in sorted(self.heads.values(), key=lambda h: h.node_id)]

    def close(self) -> None:
        self.persist()
        if self.sock is not None:
            self.sock.close()
