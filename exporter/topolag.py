"""Lag judged from outside: how far a node's committed height is behind the topology's
highest node at the same moment, as the exporter sees every node.

A node's own report cannot show it lags when nothing reaches it: its
``network_committed_height`` comes from what gossip delivered, so a node cut off from
everyone believes it is in step. Here each node's newest reading (arrival time, height) is
compared with every other node's reading that had arrived by then. Heights only rise, so
an older reading of another node can only make the lag smaller: reading phases never turn
into a false lag, and a node stuck while the others commit shows its real distance.
"""
from __future__ import annotations

import heapq
from typing import Iterable, Mapping, Sequence


def _height_at(trail: Sequence[tuple[float, int]], at: float) -> int | None:
    for arrived, height in reversed(trail):
        if arrived <= at:
            return height
    return None


def behind_reference(trails: Mapping[str, Iterable[tuple[float, int]]]) -> dict[str, int]:
    """The definition, in O(nodes^2): ``behind`` must give exactly this (a property test holds them equal)."""
    seqs = {node: tuple(trail) for node, trail in trails.items()}
    out = {}
    for node, trail in seqs.items():
        if not trail:
            continue
        at, height = trail[-1]
        others = (_height_at(t, at) for n, t in seqs.items() if n != node)
        best = max((h for h in others if h is not None), default=height)
        out[node] = max(0, best - height)
    return out


def behind(trails: Mapping[str, Sequence[tuple[float, int]]]) -> dict[str, int]:
    """Blocks each node (with a reading) is behind the highest other node at its newest reading.

    A sweep over time instead of every pair: from the earliest node's newest reading to the
    latest's, each node's current height is updated in arrival order (readings before queries
    at equal times: a reading counts from its own arrival on), and each node's newest
    reading asks for the highest current height of the others (a heap, stale entries
    dropped lazily). Readings are visited from the end of each trail back to that start only:
    with nodes reporting about as often as each other, a few per node. Ties and order as in
    ``behind_reference``.
    """
    lasts = {node: trail[-1] for node, trail in trails.items() if trail}
    if not lasts:
        return {}
    start = min(at for at, _ in lasts.values())
    current: dict[str, int] = {}
    events: list[tuple[float, int, int, str, int]] = []  # (time, 0 reading / 1 query, order, node, height)
    order = 0
    for node, trail in trails.items():
        for arrived, height in reversed(trail):  # newest first, back to the sweep's start
            if arrived <= start:
                current[node] = height
                break
            order -= 1  # of one node's readings at one time the later wins: visited first, so sorted last
            events.append((arrived, 0, order, node, height))
    for node, (at, height) in lasts.items():
        events.append((at, 1, 0, node, height))
    events.sort()
    version = dict.fromkeys(current, 0)
    heap = [(-h, node, 0) for node, h in current.items()]
    heapq.heapify(heap)
    out = {}
    for _, kind, _, node, height in events:
        if kind == 0:
            current[node] = height
            version[node] = version.get(node, 0) + 1
            heapq.heappush(heap, (-height, node, version[node]))
            continue
        best = None
        held = []
        while heap:
            neg, other, ver = heap[0]
            if version[other] != ver:
                heapq.heappop(heap)  # superseded
                continue
            if other == node:
                held.append(heapq.heappop(heap))
                continue
            best = -neg
            break
        for entry in held:
            heapq.heappush(heap, entry)
        out[node] = max(0, (height if best is None else best) - height)
    return out
