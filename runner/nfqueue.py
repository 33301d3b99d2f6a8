"""A userspace delay line for the ``delay`` chaos action: the kernel here has no netem, so an
nftables rule queues the node's packets to an NFQUEUE (with ``bypass``: no reader, no queue)
and this process, speaking nfnetlink_queue on a plain netlink socket, lets each packet go
(NF_ACCEPT) ``delay_ms`` +/- ``jitter_ms`` (uniform) after it was queued.

Run as a child of the runner: ``python3 -m runner.nfqueue FIRST_QUEUE DELAY_MS JITTER_MS SEED``.
It binds the first free queue number from FIRST_QUEUE on, prints ``bound <num>`` and serves
until its stdin reaches EOF (the runner closed it, or died) or SIGTERM. It carries the run's
SOAK_RUN_OWNER marker like every process of a run, so the reaper ends it after a SIGKILLed
runner too; either way the queue is unbound and ``bypass`` lets packets through undelayed.

Queue options: copy META only (the payload is not needed), FAIL_OPEN (a full queue or a
failed notification accepts the packet at once rather than dropping it) and GSO (large
loopback segments are queued whole, not split).

Kernel behaviour to know (net/netfilter/nfnetlink_queue.c, ``nfqnl_nf_hook_drop``): when any
netfilter hook is unregistered in the network namespace (any nft table with a base chain is
deleted, ours at heal time or another run's), every queued packet of every queue is dropped.
So at those moments the packets in flight (at most delay_ms + jitter_ms of the node's egress)
are lost rather than late; TCP retransmits them, gossip sends again. And a queued packet is let
go by its index in the hook list: when a base chain is added meanwhile (another fault's table),
the index can point one chain earlier, and the packet goes through our chain again (held twice).
Both happen only to the packets in flight when a table comes or goes.
"""
from __future__ import annotations

import heapq
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE, NFNL_SUBSYS_NFTABLES = 3, 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFT_MSG_NEWRULE = 0x10, 0x11, 6
NLA_F_NESTED = 0x8000
NLM_F_CREATE, NLM_F_APPEND = 0x400, 0x800
NFPROTO_INET = 1
XT_NFQ_BYPASS = 1
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_GSO = 1, 4
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NETLINK_NO_ENOBUFS = 5
NF_ACCEPT = 1
QUEUE_MAXLEN = 20_000      # packets held at once: 200 ms of a busy node's egress, with room
RCVBUF = 8 << 20           # notifications waiting to be read; an overflow fails open (no delay)
QUEUE_NUMBERS = 64         # queue numbers tried from the first one (another run may hold some)


class QueueError(OSError):
    pass


def _attr(kind: int, payload: bytes) -> bytes:
    head = struct.pack("=HH", 4 + len(payload), kind)
    return head + payload + b"\0" * (-len(payload) % 4)


def _netlink(nl_type: int, flags: int, seq: int, family: int, res_id: int, attrs: bytes) -> bytes:
    """One netlink message: nlmsghdr, nfgenmsg (family, version 0, res_id), attributes."""
    body = struct.pack("!BBH", family, 0, res_id) + attrs
    return struct.pack("=IHHII", 16 + len(body), nl_type, flags, seq, 0) + body


def _message(msg_type: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    return _netlink((NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, seq, socket.AF_UNSPEC, queue, attrs)


def _attrs(data: bytes) -> dict[int, bytes]:
    found, at = {}, 0
    while at + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, at)
        if length < 4:
            break
        found[kind & 0x7FFF] = data[at + 4:at + length]
        at += (length + 3) & ~3
    return found


def _messages(data: bytes) -> list[tuple[int, bytes]]:
    """(nlmsg type, payload) of each netlink message in one datagram."""
    out, at = [], 0
    while at + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, at)
        if length < 16:
            break
        out.append((kind, data[at + 16:at + length]))
        at += (length + 3) & ~3
    return out


def _acked(sock: socket.socket, what: str) -> None:
    """Wait for the kernel's ack of the last request; QueueError with its errno."""
    sock.settimeout(5)
    try:
        for kind, payload in _messages(sock.recv(65536)):
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise QueueError(code, f"{what}: {os.strerror(code)}")
                return
    except TimeoutError:
        pass
    finally:
        sock.settimeout(None)
    raise QueueError(0, f"{what}: no answer from the kernel")


def _configure(sock: socket.socket, queue: int, seq: int, attrs: bytes) -> None:
    sock.send(_message(NFQNL_MSG_CONFIG, queue, attrs, NLM_F_REQUEST | NLM_F_ACK, seq))
    _acked(sock, f"nfqueue {queue}")


def add_queue_rule(table: str, chain: str, queue: int) -> None:
    """Append to ``chain`` of the ``inet`` table a rule that queues every packet to ``queue``
    with bypass. This kernel has no nft ``queue`` expression (CONFIG_NFT_QUEUE) but has
    nft_compat and xt_NFQUEUE, which the nft command cannot emit, so the rule is sent as an
    nf_tables batch here: one ``target`` expression, NFQUEUE revision 3
    (xt_NFQ_info_v3: queuenum, queues_total, flags)."""
    def nul(text: str) -> bytes:
        return text.encode() + b"\0"
    info = struct.pack("=HHH", queue, 1, XT_NFQ_BYPASS) + b"\0\0"
    target = _attr(1, nul("NFQUEUE")) + _attr(2, struct.pack("!I", 3)) + _attr(3, info)
    expr = _attr(1 | NLA_F_NESTED, _attr(1, nul("target")) + _attr(2 | NLA_F_NESTED, target))
    rule = _attr(1, nul(table)) + _attr(2, nul(chain)) + _attr(4 | NLA_F_NESTED, expr)
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND
    batch = (_netlink(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES, b"")
             + _netlink((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE, flags, 2, NFPROTO_INET, 0, rule)
             + _netlink(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 3, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES, b""))
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        sock.send(batch)
        _acked(sock, f"nfqueue rule in {table}/{chain}")


def bind(first: int) -> tuple[socket.socket, int]:
    """A netlink socket bound to the first free queue number from ``first``."""
    for queue in range(first, first + QUEUE_NUMBERS):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE (root)
            sock.setsockopt(270, NETLINK_NO_ENOBUFS, 1)       # SOL_NETLINK
            sock.bind((0, 0))
            _configure(sock, queue, 1, _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
        except QueueError as exc:
            sock.close()
            if exc.errno in (16, 1):  # EBUSY / EPERM: another reader holds this queue
                continue
            raise
        flags = struct.pack("!I", NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO)
        _configure(sock, queue, 2, _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
                   + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN))
                   + _attr(NFQA_CFG_FLAGS, flags) + _attr(NFQA_CFG_MASK, flags))
        return sock, queue
    raise QueueError(16, f"no free nfqueue in {first}..{first + QUEUE_NUMBERS - 1}")


def serve(sock: socket.socket, queue: int, delay_ms: float, jitter_ms: float, seed: int, stop_fd: int) -> None:
    """Accept every queued packet delay_ms +/- jitter_ms after it arrived, until ``stop_fd``
    is readable (EOF) or closed."""
    rng = random.Random(seed)
    due: list[tuple[float, int]] = []
    while True:
        wait = max(0.0, due[0][0] - time.monotonic()) if due else None
        ready, _, _ = select.select([sock.fileno(), stop_fd], [], [], wait)
        if stop_fd in ready and not os.read(stop_fd, 4096):
            return
        if sock.fileno() in ready:
            now = time.monotonic()
            for kind, payload in _messages(sock.recv(1 << 20)):
                hdr = _attrs(payload[4:]).get(NFQA_PACKET_HDR) if kind & 0xFF == NFQNL_MSG_PACKET else None
                if hdr is not None:
                    late = max(0.0, delay_ms + rng.uniform(-jitter_ms, jitter_ms)) / 1000
                    heapq.heappush(due, (now + late, struct.unpack_from("!I", hdr)[0]))
        now = time.monotonic()
        while due and due[0][0] <= now:
            packet_id = heapq.heappop(due)[1]
            sock.send(_message(NFQNL_MSG_VERDICT, queue, _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT,
                                                                                            packet_id))))


@dataclass
class DelayLine:
    """The runner's handle on a delay child process."""
    proc: subprocess.Popen[bytes]
    queue: int

    @classmethod
    def start(cls, first_queue: int, delay_ms: float, jitter_ms: float, seed: int) -> "DelayLine":
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.Popen([sys.executable, "-m", "runner.nfqueue", str(first_queue), f"{delay_ms:g}",
                                 f"{jitter_ms:g}", str(seed)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=root, start_new_session=True)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().split()
        if line[:1] != ["bound"]:
            proc.kill()
            _, err = proc.communicate(timeout=5)
            raise QueueError(0, f"nfqueue reader did not start: {err.decode().strip()[-300:] or 'no output'}")
        return cls(proc, int(line[1]))

    def stderr_tail(self) -> str:
        """The end of what an ended reader wrote to stderr."""
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace").strip()[-300:] or "no output"

    def stop(self, timeout: float = 5.0) -> int | None:
        """Close its stdin (it exits), SIGKILL after ``timeout``; its exit code."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def queue_base(tag: str) -> int:
    """Where a run's search for a free queue starts: spread by tag so runs rarely collide."""
    return 1000 + (sum(tag.encode()) * 131) % 60000


def main(argv: list[str]) -> int:
    try:
        first, delay_ms, jitter_ms, seed = int(argv[0]), float(argv[1]), float(argv[2]), int(argv[3])
    except (IndexError, ValueError):
        print("usage: python3 -m runner.nfqueue FIRST_QUEUE DELAY_MS JITTER_MS SEED", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner ends it (stdin EOF), not a terminal Ctrl-C
    sock, queue = bind(first)
    print(f"bound {queue}", flush=True)
    serve(sock, queue, delay_ms, jitter_ms, seed, sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
