"""A real network cut on one machine: nftables rules drop a node's loopback UDP gossip and TCP
replication traffic.

As root, a table ``inet soak_<tag>`` with an output-hook chain drops UDP whose source or
destination port is one of the node's gossip ports (senders then get EPERM; the process keeps
running), and TCP whose source or destination port is one of its replication listen ports
(G1 real nodes: gossip + 100; G2: the ``--replication-network-listen`` port): peers' dials to
it and everything its listener sends are dropped (connects time out). Deleting the table heals.
Without root (or nft) the cut is refused, and the event is logged as skipped: ``disconnect`` is
never silently turned into a pause.

The same tables make the other network faults (docs/chaos.md): ``partition`` drops only UDP
between the node's gossip ports and its peers' (sport/dport pairs), ``loss`` and ``bandwidth``
add ``numgen random`` and ``limit rate`` drops on the node's ports, and ``delay`` sends what the
node's ports send through an NFQUEUE that a runner-owned reader (runner/nfqueue.py) lets go late. Probes that must carry a
node's real source port are sent from a raw socket (root), so nothing needs to bind it.

Not cut: TCP connections the node itself dials to its peers' listeners from an ephemeral port
(nothing on loopback tells them apart from the other peers' dials without per-process cgroups).
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import subprocess
import time
from typing import Callable

from runner import nfqueue
from soakcore.errors import SoakError

TABLE_PREFIX = "soak_"
SO_TIMESTAMPNS = 35  # Linux: receive timestamps as struct timespec (not in Python's socket module)


class NetCutError(SoakError):
    pass


def available() -> str | None:
    """None when cuts can be made here, else why not."""
    if os.geteuid() != 0:
        return "disconnect needs root for nftables (no relay fallback built yet)"
    if not shutil.which("nft"):
        return "nft not found: apt-get install nftables"
    return None


def _nft(*args: str) -> None:
    res = subprocess.run(["nft", *args], capture_output=True, text=True, timeout=10)
    if res.returncode != 0:
        raise NetCutError(f"nft {' '.join(args)}: {res.stderr.strip()}")


def _table(tag: str) -> str:
    table = TABLE_PREFIX + tag
    _nft("add", "table", "inet", table)
    _nft("add", "chain", "inet", table, "out", "{ type filter hook output priority 0 ; policy accept ; }")
    return table


def _set(ports: tuple[int, ...]) -> str:
    return "{ " + ", ".join(str(p) for p in sorted(set(ports))) + " }"


def _on_ports(table: str, ports: tuple[int, ...], tcp_ports: tuple[int, ...], *verdict: str) -> None:
    """``verdict`` (e.g. ``drop``) for loopback UDP to or from ``ports`` and TCP to or from ``tcp_ports``."""
    for proto, group in (("udp", ports), ("tcp", tcp_ports)):
        if group:
            for direction in ("dport", "sport"):
                _nft("add", "rule", "inet", table, "out", "oifname", "lo", proto, direction, _set(group), *verdict)


def _made(tag: str, build: Callable[[str], None]) -> str:
    """A table built by ``build``; a table half-built when nft fails is deleted again."""
    table = _table(tag)
    try:
        build(table)
    except BaseException:
        heal(table)
        raise
    return table


def cut(tag: str, ports: tuple[int, ...], tcp_ports: tuple[int, ...] = ()) -> str:
    """Drop loopback UDP to and from ``ports`` and TCP to and from ``tcp_ports``; the table's name."""
    return _made(tag, lambda table: _on_ports(table, ports, tcp_ports, "drop"))


def partition(tag: str, ports: tuple[int, ...], peer_ports: tuple[int, ...], direction: str = "both",
              tcp_ports: tuple[int, ...] = ()) -> str:
    """Drop loopback UDP from ``ports`` to ``peer_ports`` (direction ``to``), from ``peer_ports``
    to ``ports`` (``from``) or both, and TCP to and from ``tcp_ports`` (the node's replication
    listeners, when it is partitioned from every peer). Every other pair of ports still talks."""
    def build(table: str) -> None:
        pairs = {"to": [(ports, peer_ports)], "from": [(peer_ports, ports)],
                 "both": [(ports, peer_ports), (peer_ports, ports)]}[direction]
        for src, dst in pairs:
            _nft("add", "rule", "inet", table, "out", "oifname", "lo", "udp", "sport", _set(src),
                 "udp", "dport", _set(dst), "counter", "drop")
        _on_ports(table, (), tcp_ports, "counter", "drop")
    return _made(tag, build)


def loss(tag: str, ports: tuple[int, ...], tcp_ports: tuple[int, ...], percent: float) -> str:
    """Drop ``percent`` % (to 0.1 %) of loopback UDP to and from ``ports`` and TCP to and from
    ``tcp_ports``, each packet at random (``numgen random``)."""
    per_mille = str(round(percent * 10))
    return _made(tag, lambda table: _on_ports(table, ports, tcp_ports, "numgen", "random", "mod", "1000",
                                              "<", per_mille, "counter", "drop"))


def limit(tag: str, ports: tuple[int, ...], tcp_ports: tuple[int, ...], bytes_per_sec: int) -> str:
    """Drop loopback traffic of the node's ports over ``bytes_per_sec``: one named limit for
    what its ports send (UDP and TCP together) and one for what they receive."""
    def build(table: str) -> None:
        for name in ("lim_out", "lim_in"):
            _nft("add", "limit", "inet", table, name, f"{{ rate over {bytes_per_sec} bytes/second }}")
        for proto, group in (("udp", ports), ("tcp", tcp_ports)):
            for direction, name in (("sport", "lim_out"), ("dport", "lim_in")):
                if group:
                    _nft("add", "rule", "inet", table, "out", "oifname", "lo", proto, direction, _set(group),
                         "limit", "name", name, "counter", "drop")
    return _made(tag, build)


def delay(tag: str, ports: tuple[int, ...], tcp_ports: tuple[int, ...], queue: int) -> str:
    """Send what the node's ports send (UDP from ``ports``, TCP from ``tcp_ports``: the node's
    egress, as Chaos Mesh delays a pod's egress) to NFQUEUE ``queue`` with bypass: a chain
    ``delayq`` holding the queue rule, jumped to from the output chain."""
    def build(table: str) -> None:
        _nft("add", "chain", "inet", table, "delayq")
        nfqueue.add_queue_rule(table, "delayq", queue)
        for proto, group in (("udp", ports), ("tcp", tcp_ports)):
            if group:
                _nft("add", "rule", "inet", table, "out", "oifname", "lo", proto, "sport", _set(group),
                     "counter", "jump", "delayq")
    return _made(tag, build)


def heal(table: str) -> str | None:
    """Delete a table; None when it is gone (also when it was already gone), else nft's error."""
    res = subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, text=True, timeout=10)
    if res.returncode == 0 or table not in list_tables():
        return None
    return res.stderr.strip() or f"nft exit {res.returncode}"


def table_tag(*parts: object) -> str:
    """Tables are named soak_<runner pid>_...: a later run can tell which owners are gone."""
    return "_".join(str(p) for p in parts).replace("-", "_").replace(".", "_")


def list_tables() -> list[str]:
    """Names of the inet ``soak_*`` tables on this machine ([] without nft or root)."""
    if available():
        return []
    res = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=10)
    return [p[2] for p in (line.split() for line in res.stdout.splitlines())
            if len(p) == 3 and p[:2] == ["table", "inet"] and p[2].startswith(TABLE_PREFIX)]


def owner_of(table: str) -> int | None:
    owner = table[len(TABLE_PREFIX):].split("_")[0]
    return int(owner) if owner.isdigit() else None


def heal_owned(pid: int) -> list[str]:
    """Delete every table of runner ``pid``; returns the names of those that could not be deleted."""
    return [t for t in list_tables() if owner_of(t) == pid and heal(t) is not None]


def heal_stale() -> list[str]:
    """Delete tables left by runners that no longer exist (killed mid-cut); returns their names.
    Concurrent runs' tables are left alone. Cleanup runs first and last."""
    stale = [t for t in list_tables() if owner_of(t) is not None and not pid_alive(owner_of(t) or 0)]
    return [t for t in stale if heal(t) is None]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def probe_blocked(host: str, port: int) -> bool:
    """True when a UDP send to ``port`` is refused by the cut (EPERM)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"soak-probe", (host, port))
        except OSError as exc:
            return exc.errno == errno.EPERM
    return False


def probe_tcp_blocked(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a TCP connect to ``port`` is dropped by a cut: it times out (the dropped SYN is
    retried) or fails with EPERM. A listener accepting, or a closed port refusing, is not cut."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((host, port))
        except TimeoutError:
            return True
        except OSError as exc:
            return exc.errno == errno.EPERM
    return False


def probe_pair_blocked(sport: int, dport: int, host: str = "127.0.0.1") -> bool:
    """True when a UDP datagram from port ``sport`` to ``dport`` is refused by a rule (EPERM).
    Sent from a raw socket, so it carries a node's real port without binding it (root only);
    a datagram that passes reaches whatever listens on ``dport`` (nodes ignore its payload)."""
    payload = b"soak-probe"
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as s:
        try:
            s.sendto(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload, (host, dport))
        except OSError as exc:
            return exc.errno == errno.EPERM
    return False


def _raw_burst(sport: int, payload: int, until: Callable[[int], bool]) -> tuple[int, int, float]:
    """Raw UDP datagrams of ``payload`` bytes from ``sport`` to a socket of our own, sent while
    ``until(sent)`` is false; (sent, refused, seconds)."""
    sent = refused = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink, \
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as raw:
        sink.bind(("127.0.0.1", 0))
        dport = sink.getsockname()[1]
        packet = struct.pack("!HHHH", sport, dport, 8 + payload, 0) + b"p" * payload
        started = time.monotonic()
        while not until(sent):
            try:
                raw.sendto(packet, ("127.0.0.1", dport))
            except OSError as exc:
                if exc.errno != errno.EPERM:
                    raise
                refused += 1
            sent += 1
        return sent, refused, time.monotonic() - started


def probe_latency_ms(sport: int, count: int = 20, timeout: float = 3.0) -> list[float]:
    """One-way times (ms) of ``count`` raw UDP datagrams from port ``sport`` to a socket of our
    own, sent 5 ms apart, each timed by the kernel's receive timestamp (so reading them late
    does not count); a datagram that never arrives within ``timeout`` is left out."""
    sent: dict[int, float] = {}
    took: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink, \
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as raw:
        sink.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sink.bind(("127.0.0.1", 0))
        dport = sink.getsockname()[1]
        for i in range(count):
            sent[i] = time.time()
            raw.sendto(struct.pack("!HHHHI", sport, dport, 12, 0, i), ("127.0.0.1", dport))
            time.sleep(0.005)
        deadline = time.monotonic() + timeout
        while sent and time.monotonic() < deadline:
            sink.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data, ancillary, _, _ = sink.recvmsg(64, 64)
            except TimeoutError:
                break
            stamps = [struct.unpack("=qq", d[:16]) for level, kind, d in ancillary
                      if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS)]
            if len(data) == 4 and stamps and struct.unpack("!I", data)[0] in sent:
                took.append((stamps[0][0] + stamps[0][1] / 1e9 - sent.pop(struct.unpack("!I", data)[0])) * 1000)
    return took


def probe_loss(sport: int, count: int = 2000) -> float:
    """Share (0..1) of ``count`` datagrams from port ``sport`` refused by the rules."""
    sent, refused, _ = _raw_burst(sport, 16, lambda n: n >= count)
    return refused / sent


def probe_rate(sport: int, expected_bytes_per_sec: int, secs: float = 1.0) -> float:
    """Bytes per second (IP packets) that pass from port ``sport`` when sending as fast as
    possible, measured for ``secs`` after draining a limit's bucket (it starts full) for 1 s."""
    ip_bytes = max(100, min(1000, expected_bytes_per_sec // 50))
    payload = ip_bytes - 28

    def for_secs(s: float) -> Callable[[int], bool]:
        deadline = time.monotonic() + s
        return lambda n: n % 64 == 0 and time.monotonic() >= deadline
    _raw_burst(sport, payload, for_secs(1.0))
    sent, refused, elapsed = _raw_burst(sport, payload, for_secs(secs))
    return (sent - refused) * ip_bytes / elapsed
