"""Three real soak-sim processes gossiping over loopback UDP: heights agree, SIGSTOP and a
real nftables cut show as stalls and lag that recover, and a restart resumes persisted state."""
from __future__ import annotations

import os
import signal
import time
from typing import Iterator

import pytest

from exporter.reports import parse_document, parse_report
from runner import netcut
from simulator.schema import report_problems, status_problems
from simulator.testing import SimProcess, triad_distributed, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SimProcess]]:
    nodes = triad_distributed(tmp_path_factory.mktemp("sim-cluster"), "live")
    try:
        for node in nodes.values():
            node.start()
        for node in nodes.values():
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def heights(nodes: dict[str, SimProcess]) -> dict[str, int]:
    return {role: node.height() for role, node in nodes.items()}


def in_step(nodes: dict[str, SimProcess]) -> bool:
    h = heights(nodes)
    return h["sequencer"] > 0 and max(h.values()) - min(h.values()) <= 3


def hashes_by_height(docs: list[dict]) -> dict[int, set[str]]:
    """Every (height, block hash) any report claims, own head and peer heads alike."""
    seen: dict[int, set[str]] = {}
    for doc in docs:
        cons = doc["node_snapshot"]["consensus"]
        claims = [(cons["committed_height"], cons["last_block_hash"])]
        claims += [(p["height"], p["block_hash"]) for p in cons["peer_heads"]]
        for height, block in claims:
            if block:
                seen.setdefault(height, set()).add(block)
    return seen


def test_three_processes_advance_agree_and_write_reports_of_the_real_format(cluster: dict[str, SimProcess]) -> None:
    wait_until(lambda: all(len(n.reports()) >= 2 for n in cluster.values()), 15, "two reports per node")
    wait_until(lambda: in_step(cluster), 10, "heights in step")
    before = heights(cluster)
    time.sleep(1)
    after = heights(cluster)
    assert all(after[r] >= before[r] + 3 for r in after), (before, after)
    docs = {role: node.reports() for role, node in cluster.items()}
    for role, reports in docs.items():
        for doc in reports:
            assert report_problems(doc) == [], role
        assert [d["settlement_report"]["epoch_index"] for d in reports] == list(range(len(reports)))
        peers = {p["node_id"] for p in reports[-1]["node_snapshot"]["consensus"]["peer_heads"]}
        assert peers == {f"live-{r}" for r in cluster if r != role}
    assert docs["sequencer"][-1]["distfs_challenge_report"] is None
    storage = docs["storage"][-1]
    assert storage["distfs_challenge_report"]["total_checks"] >= 1
    assert storage["distfs_probe_cursor_state"]["cumulative_passed_checks"] >= 5
    forks = {h: b for h, b in hashes_by_height([d for r in docs.values() for d in r]).items() if len(b) > 1}
    assert forks == {}


def test_reports_and_status_documents_are_accepted_by_the_exporters_parser(cluster: dict[str, SimProcess]) -> None:
    wait_until(lambda: all(len(n.reports()) >= 1 for n in cluster.values()), 15, "a report per node")
    for role, node in cluster.items():
        status = node.status()
        assert status_problems(status) == [], role
        assert parse_document(status).node_id == f"live-{role}"
        for path in sorted(node.report_dir.glob("epoch-*.json"))[:-1]:  # the newest may be mid-write
            parsed = parse_report(path.read_bytes())
            assert parsed.missing == () and parsed.role == role, parsed


def test_sigstop_on_the_sequencer_stalls_the_followers_committed_heights(cluster: dict[str, SimProcess]) -> None:
    wait_until(lambda: in_step(cluster), 10, "heights in step")
    os.kill(cluster["sequencer"].pid, signal.SIGSTOP)
    try:
        time.sleep(0.5)  # messages already in flight land first
        stalled = {r: cluster[r].height() for r in ("storage", "observer")}
        time.sleep(1.5)
        assert {r: cluster[r].height() for r in stalled} == stalled
    finally:
        os.kill(cluster["sequencer"].pid, signal.SIGCONT)
    wait_until(lambda: all(cluster[r].height() > stalled[r] + 3 for r in stalled), 10, "followers resume")


def test_sigstop_on_a_follower_shows_as_lag_in_the_sequencers_peer_heads(cluster: dict[str, SimProcess]) -> None:
    wait_until(lambda: in_step(cluster), 10, "heights in step")
    os.kill(cluster["storage"].pid, signal.SIGSTOP)
    try:
        time.sleep(2)
        seq_report_count = len(cluster["sequencer"].reports())
        wait_until(lambda: len(cluster["sequencer"].reports()) > seq_report_count, 5, "a report during the pause")
        cons = cluster["sequencer"].reports()[-1]["node_snapshot"]["consensus"]
    finally:
        os.kill(cluster["storage"].pid, signal.SIGCONT)
    storage_head = next(p for p in cons["peer_heads"] if p["node_id"] == "live-storage")
    assert cons["committed_height"] - storage_head["height"] >= 15, cons
    wait_until(lambda: in_step(cluster), 10, "storage catches up")


def test_a_network_cut_makes_followers_lag_and_they_catch_up_after_it_heals(cluster: dict[str, SimProcess]) -> None:
    reason = netcut.available()
    if reason:
        pytest.skip(reason)
    wait_until(lambda: in_step(cluster), 10, "heights in step")
    seq = cluster["sequencer"]
    table = netcut.cut(netcut.table_tag(os.getpid(), "simtest", seq.gossip_port), (seq.gossip_port,))
    try:
        time.sleep(2)
        h = heights(cluster)
        assert seq.proc is not None and seq.proc.poll() is None  # a cut is not a pause: it keeps running
        assert h["sequencer"] - max(h["storage"], h["observer"]) >= 10, h
    finally:
        netcut.heal(table)
    wait_until(lambda: in_step(cluster), 10, "followers catch up after heal")


def test_a_restarted_node_resumes_height_epochs_and_challenge_counters(cluster: dict[str, SimProcess]) -> None:
    storage = cluster["storage"]
    wait_until(lambda: len(storage.reports()) >= 2, 10, "storage reports")
    assert storage.stop() == 0  # SIGTERM: persist and exit 0
    last = storage.reports()[-1]
    height = storage_height = last["node_snapshot"]["consensus"]["committed_height"]
    checks = last["distfs_probe_cursor_state"]["cumulative_total_checks"]
    store = storage.work / "output" / "node-distfs" / "live-storage" / "store"
    assert len(list(store.iterdir())) > 1
    storage.start().wait_ready()
    assert storage.height() >= height
    index = last["settlement_report"]["epoch_index"]
    wait_until(lambda: storage.reports()[-1]["settlement_report"]["epoch_index"] > index, 10, "next report")
    after = [d for d in storage.reports() if d["settlement_report"]["epoch_index"] > index][0]
    assert after["settlement_report"]["epoch_index"] == index + 1
    assert after["node_snapshot"]["consensus"]["committed_height"] >= storage_height
    assert after["distfs_probe_cursor_state"]["cumulative_total_checks"] > checks
    assert after["reward_settlement_transport"]["settlement_apply_attempts_total"] == 1  # resets, like the real node
    wait_until(lambda: in_step(cluster), 10, "restarted node back in step")
