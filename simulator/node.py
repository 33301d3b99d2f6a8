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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from simulator.faults import Faults
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


class Node:
    def __init__(self, node_id: str, role: str, world_id: str, bind: Addr, peers: list[Addr],
                 state_dir: Path, faults: Faults, seed: int, can_fork: bool = True) -> None:
        self.node_id, self.role, self.world_id = node_id, role, world_id
        self.peers = [p for p in peers if p != bind]
        self.faults = faults
        self.state_path = state_dir / f"sim-state-{node_id}.json"
        self.state = self._load()
        self.heads: dict[str, PeerHead] = {}
        self.last_status: str | None = "Committed" if self.state.committed_height else None
        self.last_error: str | None = None
        self.forked_at: int | None = None
        self.can_fork = can_fork
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(bind)
        except OSError as exc:
            self.sock.close()
            raise SoakError(f"--bind {bind[0]}:{bind[1]} ({node_id}): {exc.strerror}") from exc
        self.sock.setblocking(False)
        self.store = BlobStore(state_dir / "output" / "node-distfs" / node_id / "store", seed) \
            if role == "storage" else None
        self.challenges_per_tick = 1
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

    def network_committed_height(self) -> int:
        return max([self.committed_height, *(h.height for h in self.heads.values())])

    def tick(self, now_ms: int, elapsed: float) -> None:
        self.receive(now_ms, elapsed)
        if self.faults.regressed(elapsed) and not self.state.regressed:
            self.state.regressed = True
        if self.can_fork and self.faults.forked(elapsed) and self.forked_at is None:
            self.forked_at = max(1, self.state.committed_height)
        if self.role == "sequencer" and not self.faults.stalled(elapsed):
            self._commit(self.state.committed_height + 1, now_ms)
        if self.store is not None:
            self.run_challenges(now_ms)
        self.state.tick_count += 1
        # On disk before any peer hears of it: a kill -9 restart never reports less than was gossiped.
        self.persist()
        self.broadcast()

    def _commit(self, height: int, now_ms: int) -> None:
        self.state.committed_height = height
        self.state.last_committed_at_ms = now_ms
        self.last_status = "Committed"

    def receive(self, now_ms: int, elapsed: float) -> None:
        while True:
            try:
                data, sender = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # A dead peer's ECONNREFUSED from an earlier send surfaces here: tolerated.
                if exc.errno != errno.ECONNREFUSED:
                    self.last_error = f"recv: {exc.strerror}"
                continue
            try:
                msg = json.loads(data)
                head = PeerHead(str(msg["id"]), int(msg["h"]), str(msg["hash"]), int(msg["at"]))
            except (ValueError, KeyError, TypeError):
                continue
            self.heads[head.node_id] = head
            if sender not in self.peers:
                # Like the real node's peer discovery: whoever gossips to us gets our heads back.
                self.peers.append(sender)
            # Followers commit what the sequencer has committed and they actually received.
            if (self.role != "sequencer" and msg.get("role") == "sequencer"
                    and head.height > self.state.committed_height and not self.faults.stalled(elapsed)):
                self._commit(head.height, now_ms)

    def broadcast(self) -> None:
        height = self.committed_height
        msg = json.dumps({"id": self.node_id, "role": self.role, "h": height,
                          "hash": self.own_hash(height) or "", "at": self.state.last_committed_at_ms}).encode()
        for peer in self.peers:
            try:
                self.sock.sendto(msg, peer)
            except OSError as exc:  # nftables drop gives EPERM; a dead peer ECONNREFUSED
                if exc.errno not in (errno.EPERM, errno.ECONNREFUSED, errno.EAGAIN):
                    self.last_error = f"send: {exc.strerror}"

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
        self.sock.close()
