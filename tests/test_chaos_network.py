"""The chaos table is the one source (plan fields, docs/chaos.md, implementations), and the
network faults really act on loopback traffic: real sockets, real nftables tables (as root),
each table deleted in finally."""
from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from runner import netcut, nfqueue
from runner.chaos import ChaosEngine
from runner.plan import load_plan
from runner.topology import TOPOLOGY_NODES
from soakcore.actions import ACTIONS, DOC_PATH, render_doc
from soakcore.errors import UsageError


def _plan(tmp: Path, *events: dict[str, object]) -> Path:
    path = tmp / "plan.json"
    path.write_text(json.dumps({"events": [{"id": f"e{i}", "at_sec": 1, **e} for i, e in enumerate(events)]}))
    return path


def test_docs_chaos_md_is_rendered_from_the_table() -> None:
    assert DOC_PATH.read_text() == render_doc(), "stale: run python3 -m soakcore.actions"
    for name, action in ACTIONS.items():
        assert f"| `{name}` |" in render_doc() and action.chaos_mesh


def test_every_action_in_the_table_is_implemented() -> None:
    for name in ACTIONS:
        assert callable(getattr(ChaosEngine, f"_do_{name}", None)), name


def test_the_plan_validates_timing_from_the_table(tmp_path: Path) -> None:
    for name, action in ACTIONS.items():
        plan = _plan(tmp_path, {"node": "triad", "action": name, "duration_secs": 0})
        if action.needs_duration:
            with pytest.raises(UsageError, match=r"events\[0\]\.duration_secs"):
                load_plan(plan, TOPOLOGY_NODES)
        else:
            assert load_plan(plan, TOPOLOGY_NODES)[0].action == name


def _plan_error(tmp: Path, event: dict[str, object]) -> str:
    with pytest.raises(UsageError) as exc:
        load_plan(_plan(tmp, event), TOPOLOGY_NODES)
    return str(exc.value)


def test_action_fields_are_validated_from_the_table(tmp_path: Path) -> None:
    base = {"topology": "triad_distributed", "node": "storage", "action": "partition", "duration_secs": 3}
    ev = load_plan(_plan(tmp_path, {**base, "peers": ["observer"], "direction": "to"}), TOPOLOGY_NODES)[0]
    assert (ev.param("peers"), ev.param("direction")) == (("observer",), "to")
    assert load_plan(_plan(tmp_path, base), TOPOLOGY_NODES)[0].param("direction") == "both"
    for bad, field in (({"peers": ["storage"]}, "peers"), ({"peers": []}, "peers"), ({"peers": "observer"}, "peers"),
                       ({"peers": ["observer", "observer"]}, "peers"), ({"direction": "sideways"}, "direction")):
        assert f"events[0].{field}: event 'e0': expected" in _plan_error(tmp_path, {**base, **bad})
    pause = {**base, "action": "pause", "peers": ["observer"]}
    assert "events[0].peers: event 'e0': not a field of pause" in _plan_error(tmp_path, pause)


# --- real nftables on loopback: three bound UDP sockets stand for three nodes -------------

class Sockets:
    def __init__(self, n: int) -> None:
        self.socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
        for s in self.socks:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.3)
        self.ports = tuple(s.getsockname()[1] for s in self.socks)

    def delivers(self, src: int, dst: int) -> bool:
        """A real datagram from socket ``src`` reaches socket ``dst`` (EPERM: refused)."""
        try:
            self.socks[src].sendto(b"x", ("127.0.0.1", self.ports[dst]))
            return self.socks[dst].recv(16) == b"x"
        except OSError:
            return False

    def close(self) -> None:
        for s in self.socks:
            s.close()


@pytest.fixture
def sockets() -> Iterator[Sockets]:
    assert netcut.available() is None, "this machine's tests run as root with nft"
    s = Sockets(3)
    yield s
    s.close()


def _tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("direction, cut, kept", [
    ("both", [(0, 1), (1, 0)], [(0, 2), (2, 0), (1, 2), (2, 1)]),
    ("to", [(0, 1)], [(1, 0), (0, 2), (2, 1)]),
    ("from", [(1, 0)], [(0, 1), (0, 2), (1, 2)]),
])
def test_a_partition_drops_exactly_the_named_links(sockets: Sockets, direction: str,
                                                   cut: list[tuple[int, int]], kept: list[tuple[int, int]]) -> None:
    p = sockets.ports
    table = netcut.partition(netcut.table_tag(os.getpid(), "test", direction), (p[0],), (p[1],), direction)
    try:
        assert {pair: sockets.delivers(*pair) for pair in cut + kept} == {
            **{pair: False for pair in cut}, **{pair: True for pair in kept}}
        a, b = cut[0]
        assert netcut.probe_pair_blocked(p[a], p[b]) and not netcut.probe_pair_blocked(p[a], p[2] if b != 2 else p[0])
    finally:
        assert netcut.heal(table) is None
    assert table not in _tables()
    assert all(sockets.delivers(*pair) for pair in cut)


@pytest.mark.parametrize("direction", ["both", "to", "from"])
def test_a_partition_drops_exactly_the_tcp_between_the_node_and_its_peer_by_cgroup(direction: str) -> None:
    """Three 'nodes' a, b, c: a cgroup each and a listener each; a is partitioned from b. A TCP
    connect from a's cgroup to b's listener and from b's to a's must fail (TCP needs both
    directions, so any direction cuts it); every link with c keeps connecting."""
    tag = netcut.table_tag(os.getpid(), "test", "tcp", direction)
    cgroups = netcut.node_cgroups(tag, ("a", "b", "c"))
    assert set(cgroups) == {"a", "b", "c"}, "this machine has a writable cgroup v2 hierarchy"
    listeners = {n: socket.socket() for n in cgroups}
    try:
        for sock in listeners.values():
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
        ends = {n: netcut.Endpoint(cgroups[n], (listeners[n].getsockname()[1],)) for n in cgroups}
        links = {"to": [("a", "b")], "from": [("b", "a")], "both": [("a", "b"), ("b", "a")]}[direction]
        table = netcut.partition(tag, (), (), direction, (), tuple((ends[x], ends[y]) for x, y in links))
        try:
            blocked = {(x, y): netcut.probe_tcp_blocked_from(cgroups[x], ends[y].listen[0], 0.5)
                       for x in cgroups for y in cgroups if x != y}
        finally:
            assert netcut.heal(table) is None
        assert blocked == {pair: pair in (("a", "b"), ("b", "a")) for pair in blocked}
        assert not netcut.probe_tcp_blocked_from(cgroups["a"], ends["b"].listen[0], 0.5), "healed"
    finally:
        for sock in listeners.values():
            sock.close()
        netcut.heal_owned(os.getpid())
    assert not any(path.exists() for path in cgroups.values()), "the cgroups are removed"


def test_loss_drops_that_share_of_the_ports_packets_both_ways(sockets: Sockets) -> None:
    p = sockets.ports
    table = netcut.loss(netcut.table_tag(os.getpid(), "test", "loss"), (p[0],), (), 30)
    try:
        for s in sockets.socks:
            s.setblocking(False)
        refused = {0: 0, 1: 0}
        for i in range(1000):
            src, dst = (0, 1) if i % 2 else (1, 0)   # from the node's port and to it
            try:
                sockets.socks[src].sendto(b"x", ("127.0.0.1", p[dst]))
            except PermissionError:
                refused[src] += 1
        assert all(120 <= n <= 180 for n in refused.values()), refused   # 30 % of 500, +-6 points
        assert 25 <= 100 * netcut.probe_loss(p[0]) <= 35
        assert netcut.probe_loss(p[2], 200) == 0, "another port loses nothing"
    finally:
        assert netcut.heal(table) is None
    assert table not in _tables() and netcut.probe_loss(p[0], 200) == 0


def test_bandwidth_holds_the_ports_traffic_to_the_rate(sockets: Sockets) -> None:
    p = sockets.ports
    table = netcut.limit(netcut.table_tag(os.getpid(), "test", "bw"), (p[0],), (), 50_000)
    try:
        assert 40_000 <= netcut.probe_rate(p[0], 50_000) <= 60_000
        assert netcut.probe_rate(p[2], 50_000, 0.2) > 500_000, "another port is not limited"
    finally:
        assert netcut.heal(table) is None
    assert table not in _tables()


def _one_way_ms(sockets: Sockets, src: int, dst: int, n: int = 10) -> float:
    """Median time (ms) a real datagram takes from socket ``src`` to socket ``dst``. One that
    never comes is left out: another run deleting an nft table flushes every queue (nfqueue.py)."""
    took = []
    sockets.socks[dst].settimeout(1)
    for _ in range(n):
        started = time.monotonic()
        sockets.socks[src].sendto(b"x", ("127.0.0.1", sockets.ports[dst]))
        try:
            assert sockets.socks[dst].recv(16) == b"x"
        except TimeoutError:
            continue
        took.append((time.monotonic() - started) * 1000)
    assert len(took) >= n // 2, f"{n - len(took)} of {n} datagrams lost"
    return statistics.median(took)


def _tcp_round_trip_ms(listener: socket.socket, n: int = 5) -> float:
    """Median round trip (ms) of a request to ``listener`` and the listener's reply."""
    with socket.create_connection(listener.getsockname(), timeout=3) as client:
        server, _ = listener.accept()
        took = []
        with server:
            for _ in range(n):
                started = time.monotonic()
                client.sendall(b"q")
                server.sendall(server.recv(1))
                assert client.recv(1) == b"q"
                took.append((time.monotonic() - started) * 1000)
    return statistics.median(took)


def test_delay_holds_back_what_the_ports_send_by_delay_ms_and_heals(sockets: Sockets) -> None:
    p = sockets.ports
    with socket.socket() as listener:   # a replication listener of the node
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        tcp_base = _tcp_round_trip_ms(listener)
        tag = netcut.table_tag(os.getpid(), "test", "delay")
        line = nfqueue.DelayLine.start(nfqueue.queue_base(tag), 150, 20, 1)
        try:
            table = netcut.delay(tag, (p[0],), (listener.getsockname()[1],), line.queue)
            try:
                assert 130 - 10 <= _one_way_ms(sockets, 0, 1) <= 170 + 25, "the node's egress is late"
                # a batch that another test's table flushed from the queue is sent again (nfqueue.py)
                latency = next((b for b in (netcut.probe_latency_ms(p[0], 20) for _ in range(3)) if len(b) >= 10), [])
                # late, never early (no upper bound per datagram: a loaded machine can preempt a send)
                assert len(latency) >= 10 and 130 - 1 <= min(latency), latency
                assert 140 <= statistics.median(latency) <= 160, latency
                assert _one_way_ms(sockets, 1, 0) < 20, "what the node receives is not delayed (egress only)"
                assert _one_way_ms(sockets, 2, 1) < 20, "another port is not delayed"
                assert 130 - 10 <= _tcp_round_trip_ms(listener) - tcp_base <= 170 + 25, "the listener's replies"
            finally:
                assert netcut.heal(table) is None
            assert table not in _tables() and _one_way_ms(sockets, 0, 1) < 20
        finally:
            assert line.stop() == 0


def test_a_delay_whose_reader_died_lets_packets_through_undelayed(sockets: Sockets) -> None:
    p = sockets.ports
    tag = netcut.table_tag(os.getpid(), "test", "bypass")
    line = nfqueue.DelayLine.start(nfqueue.queue_base(tag), 300, 0, 1)
    table = netcut.delay(tag, (p[0],), (), line.queue)
    try:
        assert _one_way_ms(sockets, 0, 1, 3) >= 290
        line.proc.send_signal(signal.SIGKILL)   # a runner (and its reader) killed mid-fault
        line.proc.wait(5)
        assert _one_way_ms(sockets, 0, 1) < 20, "bypass: no reader means no delay, never a black hole"
    finally:
        assert netcut.heal(table) is None


def test_loss_under_a_delay_is_still_refused_at_once_and_the_rest_arrives_late(sockets: Sockets) -> None:
    p = sockets.ports
    tag = netcut.table_tag(os.getpid(), "test", "both")
    line = nfqueue.DelayLine.start(nfqueue.queue_base(tag), 100, 0, 1)
    tables = [netcut.delay(tag + "_d", (p[0],), (), line.queue), netcut.loss(tag + "_l", (p[0],), (), 30)]
    try:   # the delay table was made first, yet the loss table judges first (netcut.DELAY_PRIORITY)
        assert 25 <= 100 * netcut.probe_loss(p[0]) <= 35
        latency = netcut.probe_latency_ms(p[0], 20)
        assert 5 <= len(latency) <= 19 and 99 <= min(latency), latency
    finally:
        assert [netcut.heal(t) for t in tables] == [None, None]
        assert line.stop() == 0


def test_a_delay_reader_ends_by_itself_when_its_runner_is_sigkilled() -> None:
    runner = subprocess.Popen([sys.executable, "-c", "import sys, time; from runner.nfqueue import DelayLine; "
                               "print(DelayLine.start(int(sys.argv[1]), 100, 0, 1).proc.pid, flush=True); "
                               "time.sleep(60)", str(nfqueue.queue_base("orphan"))],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert runner.stdout is not None
    reader = psutil.Process(int(runner.stdout.readline()))
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    reader.wait(5)   # stdin EOF: the reader exits (TimeoutExpired if not; the reaper would end it too)
    assert not reader.is_running()


def test_a_delay_reader_exits_when_its_runner_closes_the_pipe_and_skips_busy_queues() -> None:
    first = nfqueue.DelayLine.start(nfqueue.queue_base("busy"), 10, 0, 1)
    second = nfqueue.DelayLine.start(first.queue, 10, 0, 1)
    try:
        assert second.queue == first.queue + 1, "a queue another reader holds is skipped"
    finally:
        assert (first.stop(), second.stop()) == (0, 0)


def test_the_network_example_plan_is_valid_and_uses_the_network_actions() -> None:
    events = load_plan(Path(__file__).resolve().parent.parent / "examples" / "chaos-network.json", TOPOLOGY_NODES, 90)
    assert {e.action for e in events if e.applies_to("triad")} == {"loss", "delay", "bandwidth"}
    assert {e.action for e in events if e.applies_to("triad_distributed")} == {"partition", "loss", "delay", "bandwidth"}
    assert all(action in ACTIONS for action in {e.action for e in events})
