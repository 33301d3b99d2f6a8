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

Per-peer TCP: on one host a node's dials to its peers leave from ephemeral ports that no port
rule can tell apart per peer. So where a cgroup v2 hierarchy lies under /sys/fs/cgroup (nft
resolves ``socket cgroupv2`` paths there) each node is launched in its own cgroup
``soak_<tag>/<node>`` (``cgroup_launcher``: the shell writes its pid to cgroup.procs, then execs
the node, so every socket the node makes carries that cgroup), and ``partition`` matches TCP by
socket: in the output hook what a node's sockets send to a peer's listen ports, in the input
hook (a socket lookup: the receiving socket) what a peer's listener sends to the node's dials.
Without such a hierarchy TCP is cut only from every peer at once (the node's listen ports).
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runner import nfqueue
from soakcore.errors import SoakError

TABLE_PREFIX = "soak_"
CGROUP_FS = Path("/sys/fs/cgroup")   # where nft resolves `socket cgroupv2` paths
# Launch a node inside a cgroup ($0): a constant script, the directory and argv as arguments.
CGROUP_EXEC = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
DELAY_PRIORITY = 100  # the delay table's output chain runs after the drop tables' (priority 0)
SO_TIMESTAMPNS = 35  # Linux: receive timestamps as struct timespec (not in Python's socket module)
SO_SNDBUFFORCE = 32
PROBE_SNDBUF = 8 << 20  # a probe burst's datagrams held by a delay stay charged to its socket


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


def _table(tag: str, priority: int = 0) -> str:
    table = TABLE_PREFIX + tag
    _nft("add", "table", "inet", table)
    _nft("add", "chain", "inet", table, "out", f"{{ type filter hook output priority {priority} ; policy accept ; }}")
    return table


def cgroup_root() -> Path | None:
    """The cgroup v2 mount at or under /sys/fs/cgroup (e.g. /sys/fs/cgroup/unified on a hybrid
    host) where this process may make cgroups, else None."""
    if available():
        return None
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for fields in (line.split() for line in mounts):
        if len(fields) > 2 and fields[2] == "cgroup2" and Path(fields[1]).is_relative_to(CGROUP_FS) \
                and os.access(fields[1], os.W_OK):
            return Path(fields[1])
    return None


def node_cgroups(tag: str, nodes: tuple[str, ...]) -> dict[str, Path]:
    """A cgroup per node, ``<cgroup v2>/soak_<tag>/<node>`` ({} where there is none)."""
    root = cgroup_root()
    if root is None:
        return {}
    made = {}
    for node in nodes:
        path = root / (TABLE_PREFIX + tag) / node
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            return {}
        made[node] = path
    return made


def cgroup_launcher(cgroup: Path) -> tuple[str, ...]:
    """The argv prefix that starts a program inside ``cgroup`` (the same pid: sh execs it)."""
    return ("/bin/sh", "-c", CGROUP_EXEC, str(cgroup))


def _socket_in(cgroup: Path) -> tuple[str, ...]:
    """nft: the packet's socket belongs to ``cgroup`` (or a cgroup below it)."""
    level = len(cgroup.relative_to(_mount_of(cgroup)).parts)
    return ("socket", "cgroupv2", "level", str(level), f'"{cgroup.relative_to(CGROUP_FS)}"')


def _mount_of(cgroup: Path) -> Path:
    root = cgroup_root()
    if root is None or not cgroup.is_relative_to(root):
        raise NetCutError(f"{cgroup} is not in this host's cgroup v2 hierarchy")
    return root


def _remove_cgroups(owner: int | None) -> None:
    """Remove the (empty) node cgroups of runner ``owner`` (None: of every runner that is gone)."""
    root = cgroup_root()
    for top in root.glob(TABLE_PREFIX + "*") if root else ():
        pid = owner_of(top.name)
        if pid is None or (pid != owner if owner is not None else pid_alive(pid)):
            continue
        for path in (*(p for p in top.iterdir() if p.is_dir()), top):
            try:
                path.rmdir()
            except OSError:
                pass   # a process still in it: the reaper, or the next run, removes it later


def _set(ports: tuple[int, ...]) -> str:
    return "{ " + ", ".join(str(p) for p in sorted(set(ports))) + " }"


def _on_ports(table: str, ports: tuple[int, ...], tcp_ports: tuple[int, ...], *verdict: str) -> None:
    """``verdict`` (e.g. ``drop``) for loopback UDP to or from ``ports`` and TCP to or from ``tcp_ports``."""
    for proto, group in (("udp", ports), ("tcp", tcp_ports)):
        if group:
            for direction in ("dport", "sport"):
                _nft("add", "rule", "inet", table, "out", "oifname", "lo", proto, direction, _set(group), *verdict)


def _made(tag: str, build: Callable[[str], None], priority: int = 0) -> str:
    """A table built by ``build``; a table half-built when nft fails is deleted again."""
    table = _table(tag, priority)
    try:
        build(table)
    except BaseException:
        heal(table)
        raise
    return table


def cut(tag: str, ports: tuple[int, ...], tcp_ports: tuple[int, ...] = ()) -> str:
    """Drop loopback UDP to and from ``ports`` and TCP to and from ``tcp_ports``; the table's name."""
    return _made(tag, lambda table: _on_ports(table, ports, tcp_ports, "drop"))


@dataclass(frozen=True)
class Endpoint:
    """A node as TCP sees it: its cgroup (every socket it makes) and its listen ports."""
    cgroup: Path
    listen: tuple[int, ...]


def partition(tag: str, ports: tuple[int, ...], peer_ports: tuple[int, ...], direction: str = "both",
              tcp_ports: tuple[int, ...] = (), tcp_links: tuple[tuple[Endpoint, Endpoint], ...] = ()) -> str:
    """Drop loopback UDP from ``ports`` to ``peer_ports`` (direction ``to``), from ``peer_ports``
    to ``ports`` (``from``) or both; TCP to and from ``tcp_ports`` (the node's listeners, when
    it is partitioned from every peer and no cgroups are at hand); and for each (src, dst) of
    ``tcp_links`` the TCP src sends to dst: on src's dials to dst's listeners (output hook,
    src's sockets) and from src's listeners to dst's dials (input hook, dst's sockets).
    Every other pair still talks."""
    def build(table: str) -> None:
        pairs = {"to": [(ports, peer_ports)], "from": [(peer_ports, ports)],
                 "both": [(ports, peer_ports), (peer_ports, ports)]}[direction]
        for src, dst in pairs:
            if src and dst:
                _nft("add", "rule", "inet", table, "out", "oifname", "lo", "udp", "sport", _set(src),
                     "udp", "dport", _set(dst), "counter", "drop")
        _on_ports(table, (), tcp_ports, "counter", "drop")
        if tcp_links:
            _nft("add", "chain", "inet", table, "in", "{ type filter hook input priority 0 ; policy accept ; }")
        for a, b in tcp_links:
            if b.listen:
                _nft("add", "rule", "inet", table, "out", "oifname", "lo", *_socket_in(a.cgroup), "tcp", "dport",
                     _set(b.listen), "counter", "drop")
            if a.listen:
                _nft("add", "rule", "inet", table, "in", "iifname", "lo", "tcp", "sport", _set(a.listen),
                     *_socket_in(b.cgroup), "counter", "drop")
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
    ``delayq`` holding the queue rule, jumped to from the output chain. Its chain comes after
    every other fault's (priority DELAY_PRIORITY): a packet that loss, partition or bandwidth
    drops is refused at once (EPERM, what their probes count), not silently after its delay."""
    def build(table: str) -> None:
        _nft("add", "chain", "inet", table, "delayq")
        nfqueue.add_queue_rule(table, "delayq", queue)
        for proto, group in (("udp", ports), ("tcp", tcp_ports)):
            if group:
                _nft("add", "rule", "inet", table, "out", "oifname", "lo", proto, "sport", _set(group),
                     "counter", "jump", "delayq")
    return _made(tag, build, DELAY_PRIORITY)


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
    """Delete every table of runner ``pid`` (and its empty node cgroups); returns the names of
    the tables that could not be deleted."""
    failed = [t for t in list_tables() if owner_of(t) == pid and heal(t) is not None]
    _remove_cgroups(pid)
    return failed


def heal_stale() -> list[str]:
    """Delete tables left by runners that no longer exist (killed mid-cut); returns their names.
    Concurrent runs' tables are left alone. Cleanup runs first and last."""
    stale = [t for t in list_tables() if owner_of(t) is not None and not pid_alive(owner_of(t) or 0)]
    _remove_cgroups(None)
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


PROBE_CONNECT = """
import errno, socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[2]))
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
    print("open")
except TimeoutError:
    print("blocked")
except OSError as exc:
    print("blocked" if exc.errno == errno.EPERM else "open")
"""


def probe_tcp_blocked_from(cgroup: Path, port: int, timeout: float = 1.0) -> bool:
    """``probe_tcp_blocked`` from a short-lived process inside ``cgroup`` (as the node there
    would dial): True when the connect times out or is refused with EPERM."""
    res = subprocess.run([*cgroup_launcher(cgroup), sys.executable, "-c", PROBE_CONNECT, str(port), str(timeout)],
                         capture_output=True, text=True, timeout=timeout + 10)
    if res.stdout.strip() not in ("open", "blocked"):
        raise NetCutError(f"tcp probe from {cgroup} failed: {res.stderr.strip()[-300:]}")
    return res.stdout.strip() == "blocked"


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
        raw.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, PROBE_SNDBUF)
        dport = sink.getsockname()[1]
        packet = struct.pack("!HHHH", sport, dport, 8 + payload, 0) + b"p" * payload
        started = time.monotonic()
        while not until(sent):
            try:
                raw.sendto(packet, ("127.0.0.1", dport))
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:   # a delay holds what was sent: wait, not counted
                    time.sleep(0.001)
                    continue
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
            try:
                raw.sendto(struct.pack("!HHHHI", sport, dport, 12, 0, i), ("127.0.0.1", dport))
            except PermissionError:   # refused (a loss or cut table as well): never arrives
                sent.pop(i)
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
