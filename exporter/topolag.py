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

from typing import Iterable, Mapping, Sequence


def _height_at(trail: Sequence[tuple[float, int]], at: float) -> int | None:
    for arrived, height in reversed(trail):
        if arrived <= at:
            return height
    return None


def behind(trails: Mapping[str, Iterable[tuple[float, int]]]) -> dict[str, int]:
    """Blocks each node (with a reading) is behind the highest other node at its newest reading."""
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
