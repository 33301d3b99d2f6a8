"""The exporter against G2 status documents (HEAD schema, tests/fixtures/agent_world/
g2-chain-status-head.json) served over real HTTP: the new metrics with their names and labels,
a malformed or missing field counted as a status error for that node only, counters banked
across the node's restarts, and hash consistency by kind."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collector import Setup, SoakCollector, Source
from exporter.g2status import parse_g2
from exporter.reports import ReportError
from simulator.net import serve_http

HEAD = json.loads((Path(__file__).resolve().parent / "fixtures" / "agent_world" / "g2-chain-status-head.json")
                  .read_text())


class Docs:
    """Status documents served per node; tests swap them between polls."""

    def __init__(self) -> None:
        self.docs: dict[str, Any] = {}
        routes: dict[str, Callable[[], Any]] = {}
        for node in ("a", "b"):
            routes[f"/{node}/v1/chain/status"] = (lambda n: lambda: self.docs[n])(node)
        self.server = serve_http(("127.0.0.1", 0), routes, {"error": "not found"}, "status")

    def url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{node}/v1/chain/status"


@pytest.fixture
def docs() -> Iterator[Docs]:
    d = Docs()
    yield d
    d.server.shutdown()


def scrape(docs: Docs, collector: SoakCollector | None = None) -> tuple[SoakCollector, dict[tuple[str, frozenset], float]]:
    if collector is None:
        collector = SoakCollector(Setup(run_id="r", topology="t", sources=tuple(
            Source(n, "storage", status_url=docs.url(n)) for n in docs.docs)))
    collector.poll_status_once()
    samples = {}
    for fam in text_string_to_metric_families(collector.render().decode()):
        for s in fam.samples:
            labels = {k: v for k, v in s.labels.items() if k not in ("run_id", "topology")}
            samples[(s.name, frozenset(labels.items()))] = s.value
    return collector, samples


def value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def with_field(doc: dict[str, Any], path: str, new: Any) -> dict[str, Any]:
    """A copy of ``doc`` with the dotted ``path`` set to ``new`` (``...`` deletes it)."""
    out = copy.deepcopy(doc)
    *parents, key = path.split(".")
    obj = out
    for p in parents:
        obj = obj[p]
    if new is ...:
        del obj[key]
    else:
        obj[key] = new
    return out


def test_the_example_status_gives_every_g2_metric_with_its_labels_and_base_units(docs: Docs) -> None:
    docs.docs["a"] = HEAD
    _, s = scrape(docs)
    n = {"node": "a"}
    assert value(s, "soak_node_status_head_schema", **n) == 1
    assert value(s, "soak_node_alerts", **n, severity="warn", code="consensus_network_lag") == 1
    assert value(s, "soak_node_alerts", **n, severity="critical", code="runtime_last_error") == 0
    assert {st: value(s, "soak_replication_peers", **n, state=st) for st in ("connected", "active", "suspect")} == {
        "connected": 2, "active": 2, "suspect": 0}
    assert value(s, "soak_consensus_network_height_lag", **n) == 1
    assert value(s, "soak_consensus_last_commit_age_seconds", **n) == 9.87
    assert {st: value(s, "soak_consensus_finality_latency_seconds", **n, stat=st) for st in ("p50", "p95", "max")} \
        == {"p50": 0.59, "p95": 1.13, "max": 1.21}
    assert (value(s, "soak_consensus_pending_actions", **n), value(s, "soak_consensus_pending_actions_capacity", **n)) \
        == (0, 4096)
    assert value(s, "soak_consensus_inbound_timing_rejections_total", **n, kind="attestation_stale_slot") == 1
    assert value(s, "soak_consensus_missed_slots_total", **n) == 0
    assert value(s, "soak_storage_bytes", **n, dir="replication_root") == 318664
    assert value(s, "soak_storage_orphan_blobs", **n) == 0
    assert value(s, "soak_storage_last_gc_result", **n, result="not_available") == 1
    assert value(s, "soak_storage_last_gc_result", **n, result="failed") == 0
    assert value(s, "soak_replication_recent_errors", **n) == 0
    assert value(s, "soak_gossip_udp_datagrams_total", **n, direction="inbound") == 1480
    assert value(s, "soak_gossip_udp_payload_bytes_total", **n, direction="outbound") == 921876
    assert value(s, "soak_replication_libp2p_messages_total", **n, direction="outbound") == 164
    assert value(s, "soak_replication_libp2p_payload_bytes_total", **n, direction="inbound") == 402112
    assert value(s, "soak_report_errors_total", **n, reason="status") == 0


def test_a_malformed_or_missing_field_is_a_status_error_of_that_node_and_the_others_are_still_served(
        docs: Docs) -> None:
    docs.docs["a"] = HEAD
    docs.docs["b"] = with_field(HEAD, "observability.connected_peer_count", "two")
    c, s = scrape(docs)
    assert value(s, "soak_report_errors_total", node="b", reason="status") == 1
    assert value(s, "soak_report_errors_total", node="a", reason="status") == 0
    assert value(s, "soak_replication_peers", node="a", state="connected") == 2
    assert value(s, "soak_replication_peers", node="b", state="connected") is None   # never a stale or made-up value
    # the consensus readings of b still count (its document is readable otherwise)
    assert value(s, "soak_consensus_committed_height", node="b") == 40
    assert value(s, "soak_node_status_head_schema", node="b") == 1
    docs.docs["b"] = with_field(HEAD, "storage.bytes_by_dir", ...)
    c, s = scrape(docs, c)
    assert value(s, "soak_report_errors_total", node="b", reason="status") == 2
    docs.docs["b"] = HEAD   # good again: served again
    c, s = scrape(docs, c)
    assert value(s, "soak_replication_peers", node="b", state="connected") == 2
    assert value(s, "soak_report_errors_total", node="b", reason="status") == 2


@pytest.mark.parametrize(("path", "new", "message"), [
    ("observability.alerts", {"severity": "critical"}, "observability.alerts: expected a list"),
    ("consensus.recent_finality_latency.p95_latency_ms", -1, "p95_latency_ms: expected an integer"),
    ("storage.last_gc_result", "maybe", "storage.last_gc_result: expected one of"),
    ("traffic.udp_gossip.totals.inbound", ..., "traffic.udp_gossip.totals.inbound: missing"),
    ("consensus.missed_slot_count", None, "consensus.missed_slot_count: expected an integer"),
])
def test_each_bad_field_is_named_with_its_path(path: str, new: Any, message: str) -> None:
    with pytest.raises(ReportError) as err:
        parse_g2(with_field(HEAD, path, new))
    assert err.value.reason == "status" and message in str(err.value)


def test_unknown_alert_codes_and_severities_stay_in_the_closed_label_sets(docs: Docs) -> None:
    docs.docs["a"] = with_field(HEAD, "observability.alerts", [
        {"severity": "critical", "code": "runtime_last_error", "summary": "x"},
        {"severity": "fatal", "code": "brand_new_code", "summary": "y"}])
    _, s = scrape(docs)
    assert value(s, "soak_node_alerts", node="a", severity="critical", code="runtime_last_error") == 1
    assert value(s, "soak_node_alerts", node="a", severity="other", code="other") == 1


def test_counters_that_reset_when_the_node_restarts_are_banked(docs: Docs) -> None:
    docs.docs["a"] = HEAD
    c, s = scrape(docs)
    restarted = with_field(HEAD, "traffic.udp_gossip.totals.inbound.datagrams", 10)
    restarted = with_field(restarted, "consensus.inbound_timing_rejections.attestation_stale_slot", 0)
    docs.docs["a"] = restarted
    c, s = scrape(docs, c)
    assert value(s, "soak_gossip_udp_datagrams_total", node="a", direction="inbound") == 1490
    assert value(s, "soak_consensus_inbound_timing_rejections_total", node="a", kind="attestation_stale_slot") == 1
    docs.docs["a"] = with_field(restarted, "traffic.udp_gossip", None)   # no gossip socket: nothing new, kept
    c, s = scrape(docs, c)
    assert value(s, "soak_gossip_udp_datagrams_total", node="a", direction="inbound") == 1490


def test_a_g1_status_document_yields_no_g2_series_and_no_error(docs: Docs) -> None:
    docs.docs["a"] = {k: v for k, v in HEAD.items() if k not in ("observability", "storage", "replication", "traffic")}
    _, s = scrape(docs)
    assert value(s, "soak_node_status_head_schema", node="a") is None
    assert not any(name == "soak_node_alerts" for name, _ in s)
    assert value(s, "soak_report_errors_total", node="a", reason="status") == 0


def _executed(doc: dict[str, Any], height: int, block: str, root: str) -> dict[str, Any]:
    doc = with_field(doc, "consensus.last_execution_height", height)
    doc = with_field(doc, "consensus.last_execution_block_hash", block)
    return with_field(doc, "consensus.last_execution_state_root", root)


def test_two_state_roots_for_one_executed_block_diverge_but_a_forked_block_is_the_fork_gates(docs: Docs) -> None:
    docs.docs["a"] = _executed(HEAD, 40, "e40", "root-1")
    c, s = scrape(docs)
    docs.docs["a"] = _executed(HEAD, 40, "e40", "root-2")   # the same block re-run: another root
    c, s = scrape(docs, c)
    assert value(s, "soak_consensus_hash_divergences_total", kind="execution_state_root") == 1
    assert value(s, "soak_consensus_hash_divergences_total", kind="execution_block_hash") == 0
    docs.docs["a"] = _executed(HEAD, 41, "e41", "root-3")
    c, s = scrape(docs, c)
    docs.docs["a"] = _executed(HEAD, 41, "e41-fork", "root-4")   # another block at 41: not a state-root divergence
    c, s = scrape(docs, c)
    assert value(s, "soak_consensus_hash_divergences_total", kind="execution_state_root") == 1
    assert value(s, "soak_consensus_hash_divergences_total", kind="execution_block_hash") == 1
    assert value(s, "soak_consensus_hash_heights_total", kind="execution_state_root") == 3
    assert value(s, "soak_consensus_hash_mismatches_total") == 0   # the block hash at 40 never changed
