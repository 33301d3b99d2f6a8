"""The network faults of the chaos engine (disconnect, partition, loss, bandwidth, delay):
nftables tables made by runner/netcut.py, each verified by probes when made and when healed
(a heal that does not take is a heal error: chaos_events.log and the verdict's notes)."""
from __future__ import annotations

import statistics
import threading
from pathlib import Path
from typing import Callable

from runner import netcut, nfqueue
from runner.nodes import NodeProc
from runner.plan import ChaosEvent

LOSS_PROBES = 2000               # datagrams a loss probe sends: 1 point is > 2 standard deviations at 50 %
LOSS_TOLERANCE_POINTS = 5.0      # a measured loss this far from percent fails the event
RATE_TOLERANCE = (0.5, 1.5)      # a probe burst's rate within these multiples of the limit
DELAY_PROBES = 20                # datagrams a delay probe sends (5 ms apart); the median is judged
# The probes' median rise may miss delay_ms by jitter_ms plus this: the reader is a Python
# process on a loaded machine (measured here: +0.3..3 ms at 100..200 ms). Healed: the median
# within this of the baseline.
DELAY_TOLERANCE_MS = 25.0
TcpDial = tuple[str, str]   # (from node, to node): a TCP connect from one's cgroup to the other's listener


class NetworkFaults:
    """Mixed into runner.chaos.ChaosEngine, whose fields these are."""
    nodes: dict[str, NodeProc]
    tag: str
    heal_errors: list[str]
    stop: threading.Event
    _tables: dict[str, int]          # live cuts: table -> a cut port
    cgroups: dict[str, Path]         # node -> its cgroup (netcut.node_cgroups)

    def _hold(self, secs: float) -> None:
        raise NotImplementedError

    def _unavailable(self, ev: ChaosEvent) -> str | None:
        """Why a network fault cannot be made on this node here (the skip detail), else None."""
        why = netcut.available()
        if why:
            return f"skipped: {why.replace('disconnect', ev.action)}"
        if not self.nodes[ev.node].spec.gossip_ports:
            return "skipped: the node has no gossip ports (topology file: gossip_ports)"
        return None

    def _do_disconnect(self, ev: ChaosEvent) -> str:
        skip = self._unavailable(ev)
        if skip:
            return skip
        spec = self.nodes[ev.node].spec
        table = netcut.cut(netcut.table_tag(self.tag, ev.id), spec.gossip_ports, spec.replication_ports)
        self._tables[table] = spec.gossip_ports[0]
        try:
            if not netcut.probe_blocked("127.0.0.1", spec.gossip_ports[0]):
                raise RuntimeError("traffic still flows after the cut")
            if spec.replication_ports and not netcut.probe_tcp_blocked("127.0.0.1", spec.replication_ports[0]):
                raise RuntimeError(f"tcp port {spec.replication_ports[0]} still connects after the cut")
            self._hold(ev.duration_secs)
        finally:
            self._heal_cut(table, spec.gossip_ports[0])
        tcp = f" and tcp ports {','.join(map(str, spec.replication_ports))}" if spec.replication_ports else ""
        return f"udp ports {','.join(map(str, spec.gossip_ports))}{tcp} cut {ev.duration_secs:g}s and healed"

    def _endpoint(self, node: str) -> netcut.Endpoint:
        return netcut.Endpoint(self.cgroups[node], self.nodes[node].spec.replication_ports)

    def _tcp_dials(self, node: str, peers: list[str], others: list[str]) -> tuple[TcpDial | None, TcpDial | None]:
        """Per-peer TCP probes of a partition (nodes in cgroups): a dial that must be dropped
        (the node to a peer's listener: TCP needs both directions, so any direction cuts it)
        and one that must still connect (to a node outside peers, else between two peers)."""
        listening = [n for n in others if self.nodes[n].spec.replication_ports]
        cut = next(((node, n) for n in peers if n in listening), None)
        rest = [n for n in listening if n not in peers]
        up = (node, rest[0]) if rest else (peers[0], peers[1]) if len(peers) > 1 and peers[1] in listening else None
        return cut, up

    def _tcp_blocked(self, dial: TcpDial) -> bool:
        return netcut.probe_tcp_blocked_from(self.cgroups[dial[0]], self.nodes[dial[1]].spec.replication_ports[0])

    def _do_partition(self, ev: ChaosEvent) -> str:
        skip = self._unavailable(ev)
        if skip:
            return skip
        spec = self.nodes[ev.node].spec
        others = [n for n in self.nodes if n != ev.node]
        peers = [p for p in (ev.param("peers") or others) if p in self.nodes]
        direction = ev.param("direction")
        peer_ports = tuple(p for n in peers for p in self.nodes[n].spec.gossip_ports)
        if not peer_ports:
            return "skipped: no gossip ports between the node and its peers (topology file: gossip_ports)"
        # TCP per peer by the nodes' cgroups; without them only from every peer at once (the
        # node's listen ports): one host's ephemeral dial ports cannot be told apart per peer.
        links: tuple[tuple[netcut.Endpoint, netcut.Endpoint], ...] = ()
        tcp: tuple[int, ...] = ()
        if self.cgroups:
            me, them = self._endpoint(ev.node), [self._endpoint(n) for n in peers]
            links = tuple((a, b) for t in them for a, b in {"to": [(me, t)], "from": [(t, me)],
                                                              "both": [(me, t), (t, me)]}[direction])
        elif set(peers) == set(others) and direction == "both":
            tcp = spec.replication_ports
        table = netcut.partition(netcut.table_tag(self.tag, ev.id), spec.gossip_ports, peer_ports, direction, tcp,
                                 links)
        self._tables[table] = spec.gossip_ports[0]
        own, peer = spec.gossip_ports[0], peer_ports[0]
        cut = (own, peer) if direction != "from" else (peer, own)
        # A link that must stay up: the node to a node outside peers; else between two peers;
        # else (one peer, one direction) the direction not cut.
        rest = [p for n in others if n not in peers for p in self.nodes[n].spec.gossip_ports]
        up = ((own, rest[0]) if rest else (peer_ports[0], peer_ports[1]) if len(peer_ports) > 1
              else (cut[1], cut[0]) if direction != "both" else None)
        tcp_cut, tcp_up = self._tcp_dials(ev.node, peers, others) if links else (None, None)
        try:
            if not netcut.probe_pair_blocked(*cut):
                raise RuntimeError(f"udp {cut[0]} -> {cut[1]} still delivers after the partition")
            if up and netcut.probe_pair_blocked(*up):
                raise RuntimeError(f"udp {up[0]} -> {up[1]} refused: the partition cut more than its links")
            if tcp_cut and not self._tcp_blocked(tcp_cut):
                raise RuntimeError(f"tcp {tcp_cut[0]} -> {tcp_cut[1]} still connects after the partition")
            if tcp_up and self._tcp_blocked(tcp_up):
                raise RuntimeError(f"tcp {tcp_up[0]} -> {tcp_up[1]} dropped: the partition cut more than its links")
            self._hold(ev.duration_secs)
        finally:
            self._heal_cut(table, own, cut)
            if tcp_cut and self._tcp_blocked(tcp_cut):
                error = f"partition {table} not healed: tcp {tcp_cut[0]} -> {tcp_cut[1]} still dropped"
                self.heal_errors.append(error)
                raise RuntimeError(error)
        kept = f"; {up[0]} -> {up[1]} kept delivering" if up else ""
        tcp_note = (f"; tcp {','.join(map(str, tcp))} cut" if tcp else
                    f"; tcp {tcp_cut[0]} -> {tcp_cut[1]} dropped" if tcp_cut else "")
        tcp_note += f", {tcp_up[0]} -> {tcp_up[1]} connecting" if tcp_up else ""
        return (f"udp {cut[0]} -> {cut[1]} refused ({direction}, peers {','.join(peers)}){kept}{tcp_note}; "
                f"{ev.duration_secs:g}s, healed")

    def _shaped(self, ev: ChaosEvent, make: Callable[[str, tuple[int, ...], tuple[int, ...]], str],
                measure: Callable[[int], str]) -> str:
        """A table on all of the node's ports (made by ``make``), checked by ``measure`` (its
        figure, or RuntimeError), held, then deleted and checked gone."""
        skip = self._unavailable(ev)
        if skip:
            return skip
        spec = self.nodes[ev.node].spec
        table = make(netcut.table_tag(self.tag, ev.id), spec.gossip_ports, spec.replication_ports)
        self._tables[table] = spec.gossip_ports[0]
        try:
            figure = measure(spec.gossip_ports[0])
            self._hold(ev.duration_secs)
        finally:
            self._heal_cut(table, spec.gossip_ports[0])
        tcp = f" and tcp {','.join(map(str, spec.replication_ports))}" if spec.replication_ports else ""
        return f"udp {','.join(map(str, spec.gossip_ports))}{tcp}: {figure}; {ev.duration_secs:g}s, healed"

    def _do_loss(self, ev: ChaosEvent) -> str:
        percent = float(ev.param("percent"))

        def measure(port: int) -> str:
            measured = 100 * netcut.probe_loss(port, LOSS_PROBES)
            if abs(measured - percent) > LOSS_TOLERANCE_POINTS:
                raise RuntimeError(f"measured loss {measured:.1f}% over {LOSS_PROBES} probes, expected {percent:g}%")
            return f"loss {percent:g}%, measured {measured:.1f}% of {LOSS_PROBES} probe datagrams"
        return self._shaped(ev, lambda tag, udp, tcp: netcut.loss(tag, udp, tcp, percent), measure)

    def _do_bandwidth(self, ev: ChaosEvent) -> str:
        rate = int(ev.param("rate_kbit")) * 1000 // 8  # bytes per second

        def measure(port: int) -> str:
            measured = netcut.probe_rate(port, rate)
            if not RATE_TOLERANCE[0] * rate <= measured <= RATE_TOLERANCE[1] * rate:
                raise RuntimeError(f"a probe burst passed {measured:.0f} B/s, the limit is {rate} B/s")
            return f"limit {rate} B/s each way, a probe burst passed {measured:.0f} B/s"
        return self._shaped(ev, lambda tag, udp, tcp: netcut.limit(tag, udp, tcp, rate), measure)

    def _latency(self, port: int, expect_ms: float, within: Callable[[float], bool] = lambda ms: True) -> float:
        """Median one-way time (ms) of DELAY_PROBES datagrams from ``port``, measured again
        (three batches at most) while fewer than half arrive or the median is not ``within``:
        the kernel disturbs packets queued while any nft table on the machine comes or goes
        (runner/nfqueue.py), so one batch can be lost or held twice; a delay that is wrong
        three batches running is wrong."""
        median = None
        for _ in range(3):
            took = netcut.probe_latency_ms(port, DELAY_PROBES, timeout=expect_ms / 1000 + 2)
            median = statistics.median(took) if len(took) >= DELAY_PROBES // 2 else None
            if median is not None and within(median):
                return median
        if median is None:
            raise RuntimeError(f"three times fewer than {DELAY_PROBES // 2} of {DELAY_PROBES} delay probes from "
                               f"port {port} arrived")
        return median

    def _do_delay(self, ev: ChaosEvent) -> str:
        """The node's egress queued to a runner-owned NFQUEUE reader that lets each packet go
        delay_ms +/- jitter_ms late; probes from the node's port must show the rise, and after
        the table is deleted the baseline again."""
        skip = self._unavailable(ev)
        if skip:
            return skip
        spec = self.nodes[ev.node].spec
        delay_ms, jitter_ms = float(ev.param("delay_ms")), float(ev.param("jitter_ms"))
        port = spec.gossip_ports[0]
        tag = netcut.table_tag(self.tag, ev.id)
        base = self._latency(port, 0)
        line = nfqueue.DelayLine.start(nfqueue.queue_base(tag), delay_ms, jitter_ms, sum(ev.id.encode()))
        try:
            table = netcut.delay(tag, spec.gossip_ports, spec.replication_ports, line.queue)
            self._tables[table] = port
            try:
                rise = self._latency(port, delay_ms + jitter_ms, lambda ms: abs(ms - base - delay_ms) <=
                                     jitter_ms + DELAY_TOLERANCE_MS) - base
                if abs(rise - delay_ms) > jitter_ms + DELAY_TOLERANCE_MS:
                    raise RuntimeError(f"probes from port {port} rose {rise:.1f} ms, expected {delay_ms:g} ms "
                                       f"+/- {jitter_ms + DELAY_TOLERANCE_MS:g}")
                self._hold(ev.duration_secs)
            finally:
                self._heal_cut(table, port)
                after = self._latency(port, 0, lambda ms: ms - base <= DELAY_TOLERANCE_MS)
                if after - base > DELAY_TOLERANCE_MS:
                    error = f"delay {table} not healed: probes from port {port} still take {after:.1f} ms"
                    self.heal_errors.append(error)
                    raise RuntimeError(error)
        finally:
            early = line.proc.poll()   # the reader ended before we stopped it: the delay was gone
            line.stop()
        if early is not None:
            raise RuntimeError(f"the delay reader exited during the fault (code {early}): {line.stderr_tail()}")
        tcp = f" and tcp {','.join(map(str, spec.replication_ports))}" if spec.replication_ports else ""
        return (f"udp {','.join(map(str, spec.gossip_ports))}{tcp} egress via nfqueue {line.queue}: "
                f"{delay_ms:g} +/- {jitter_ms:g} ms, probes rose {rise:.1f} ms (baseline {base:.2f} ms); "
                f"{ev.duration_secs:g}s, healed ({after:.2f} ms)")

    def _heal_cut(self, table: str, port: int, pair: tuple[int, int] | None = None) -> None:
        """Delete the table and check that traffic flows again (to ``port``, or over ``pair``
        of ports: from, to); a cut that stays is an error."""
        gone = netcut.heal(table)
        others = {p for t, p in self._tables.items() if t != table}  # an overlapping cut still holds
        still = gone is not None or port not in others and (
            netcut.probe_pair_blocked(*pair) if pair else netcut.probe_blocked("127.0.0.1", port))
        if still:
            error = f"network cut {table} could not be healed: port {port} still refuses traffic ({gone or 'probe'})"
            self.heal_errors.append(error)
            raise RuntimeError(error)
        self._tables.pop(table, None)
