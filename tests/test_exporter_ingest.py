"""Incremental ingest and derived state, through the real collector on real files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client import CollectorRegistry

from exporter.collector import Setup, SoakCollector, Source
from exporter.ingest import FULL_LIST_S, ReportDir
from soakcore.runstate import CHAOS_ACTIONS, ChaosCount, ChaosWindow, NodeState, RunState, write_run_state

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
EXAMPLES = Path(__file__).parent / "fixtures" / "agent_world"  # the real example documents
L = {"run_id": "r1", "topology": "t1"}


def doc(epoch: int, height: int, *, at_ms: int | None = None, block_hash: str | None = None,
        total: int | None = None, failed: int = 0) -> dict[str, Any]:
    """A slim G2-style epoch report (cumulative-since-start DistFS counters)."""
    d: dict[str, Any] = {"observed_at_unix_ms": at_ms or 1_700_000_000_000 + epoch * 1000,
                         "settlement_report": {"epoch_index": epoch},
                         "node_snapshot": {"node_id": "x-storage", "consensus": {
                             "committed_height": height, "last_block_hash": block_hash or f"h{height}"}}}
    if total is not None:
        d["distfs"] = {"total_checks": total, "failed_checks": failed}
    return d


def write(folder: Path, d: dict[str, Any], mtime: float | None = None) -> Path:
    """Write one report; ``mtime`` (its arrival on the exporter's clock) when given."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"epoch-{d['settlement_report']['epoch_index']}.json"
    path.write_text(json.dumps(d))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


class Scraper:
    """A collector on a private registry; ``value`` scrapes once and reads one sample."""

    def __init__(self, collector: SoakCollector) -> None:
        self.collector = collector
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {**L, **labels})

    def counters(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in self.registry.collect()
                if m.type == "counter" for s in m.samples if s.name.endswith("_total")}


def scraper(dirs: dict[str, Path], settle_s: float = 0.0) -> Scraper:
    setup = Setup(run_id="r1", topology="t1", sources=tuple(Source(n, report_dir=str(p)) for n, p in dirs.items()))
    return Scraper(SoakCollector(setup, settle_s=settle_s))


def test_a_partial_file_is_retried_and_counted_once_complete_not_as_an_error(tmp_path: Path) -> None:
    full = json.dumps(doc(0, 5)).encode()
    (tmp_path / "epoch-0.json").write_bytes(full[:20])
    now = [1000.0]
    rdir = ReportDir("n", tmp_path, settle_s=3.0, clock=lambda: now[0])
    assert rdir.poll() == ([], [])
    now[0] += 1
    (tmp_path / "epoch-0.json").write_bytes(full)
    reports, errors = rdir.poll()
    assert [a.report.committed_height for a in reports] == [5] and errors == []
    assert rdir.poll() == ([], [])  # parsed once, never again


def test_a_file_that_stays_invalid_is_counted_once_after_it_settles(tmp_path: Path) -> None:
    (tmp_path / "epoch-0.json").write_text('{"observed_at_unix_ms": "soon"}')
    now = [1000.0]
    rdir = ReportDir("n", tmp_path, settle_s=3.0, clock=lambda: now[0])
    assert rdir.poll() == ([], [])
    now[0] += 1
    assert rdir.poll() == ([], [])
    now[0] += 3
    assert rdir.poll() == ([], ["schema"])
    now[0] += 10
    assert rdir.poll() == ([], [])


def test_files_are_taken_in_numeric_epoch_order_not_name_order(tmp_path: Path) -> None:
    for epoch in (2, 9, 10, 11):
        write(tmp_path, doc(epoch, epoch * 10))
    s = scraper({"n": tmp_path})
    assert s.value("soak_consensus_height_regressions_total", node="n") == 0
    assert s.value("soak_report_last_epoch_index", node="n") == 11
    assert s.value("soak_reports_total", node="n") == 4


def test_a_quiet_directory_is_not_listed_again_so_cost_does_not_grow_with_history(tmp_path: Path) -> None:
    write(tmp_path, doc(0, 1))
    old = tmp_path.stat().st_mtime_ns - 60_000_000_000
    os.utime(tmp_path, ns=(old, old))
    rdir = ReportDir("n", tmp_path)
    assert len(rdir.poll()[0]) == 1
    write(tmp_path, doc(1, 2))
    os.utime(tmp_path, ns=(old, old))  # mtime unchanged: the listing is skipped
    assert rdir.poll() == ([], [])
    os.utime(tmp_path)  # the directory moved: listed again, the new file is found
    assert [a.epoch for a in rdir.poll()[0]] == [1]


def test_a_stray_out_of_sequence_file_is_found_by_the_periodic_full_listing(tmp_path: Path) -> None:
    now = [1000.0]
    rdir = ReportDir("n", tmp_path, clock=lambda: now[0])
    write(tmp_path, doc(0, 1))
    assert len(rdir.poll()[0]) == 1
    write(tmp_path, doc(1, 2))
    write(tmp_path, doc(50, 3))  # beside the expected epoch-1: not probed for
    now[0] += 5
    assert [a.epoch for a in rdir.poll()[0]] == [1]
    now[0] += FULL_LIST_S
    write(tmp_path, doc(2, 4))
    assert [a.epoch for a in rdir.poll()[0]] == [2, 50]


def test_one_node_with_only_bad_files_never_stops_the_other_nodes_metrics(tmp_path: Path) -> None:
    write(tmp_path / "good", doc(0, 3))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "epoch-0.json").write_bytes(b"[" * 100_000)
    (tmp_path / "bad" / "epoch-1.json").write_bytes(b"\x00\xff" * 10)
    s = scraper({"bad": tmp_path / "bad", "good": tmp_path / "good"})
    assert s.value("soak_consensus_committed_height", node="good") == 3
    assert s.value("soak_report_errors_total", node="bad", reason="invalid_json") == 2
    assert s.value("soak_exporter_scrape_error") == 0


def test_height_regression_is_counted_and_progress_time_moves_only_on_a_rise(tmp_path: Path) -> None:
    s = scraper({"n": tmp_path})
    assert s.value("soak_consensus_last_progress_timestamp_seconds", node="n") is None  # absent, not 0
    # Progress time is the arrival (file mtime, this machine's clock), not the node's observed_at.
    write(tmp_path, doc(0, 10, at_ms=1_000_000), mtime=1_700_000_100)
    write(tmp_path, doc(1, 12, at_ms=2_000_000), mtime=1_700_000_200)
    assert s.value("soak_consensus_last_progress_timestamp_seconds", node="n") == 1_700_000_200
    write(tmp_path, doc(2, 12, at_ms=3_000_000), mtime=1_700_000_300)
    write(tmp_path, doc(3, 8, at_ms=4_000_000), mtime=1_700_000_400)
    assert s.value("soak_consensus_last_progress_timestamp_seconds", node="n") == 1_700_000_200
    assert s.value("soak_consensus_height_regressions_total", node="n") == 1
    assert s.value("soak_consensus_committed_height", node="n") == 8


def test_two_nodes_with_different_hashes_at_one_height_count_one_mismatch(tmp_path: Path) -> None:
    write(tmp_path / "a", doc(0, 7, block_hash="aaa"))
    write(tmp_path / "b", doc(0, 7, block_hash="aaa"))
    s = scraper({"a": tmp_path / "a", "b": tmp_path / "b"})
    assert s.value("soak_consensus_hash_mismatches_total") == 0
    write(tmp_path / "a", doc(1, 8, block_hash="bbb"))
    write(tmp_path / "b", doc(1, 8, block_hash="ccc"))
    assert s.value("soak_consensus_hash_mismatches_total") == 1
    assert s.value("soak_consensus_hash_mismatches_total") == 1  # the same fork is not counted twice


def test_a_distfs_reset_on_node_restart_keeps_counters_rising_and_loses_no_failure(tmp_path: Path) -> None:
    s = scraper({"n": tmp_path})
    seen = []
    for epoch, (total, failed) in enumerate([(10, 1), (20, 3), (4, 1), (9, 2)]):  # node restarted after 20/3
        write(tmp_path, doc(epoch, epoch + 1, total=total, failed=failed))
        seen.append((s.value("soak_distfs_checks_total", node="n", result="failed"),
                     s.value("soak_distfs_checks_total", node="n", result="passed")))
    assert seen == [(1, 9), (3, 17), (4, 20), (5, 24)]


def test_an_exporter_restarted_mid_run_continues_every_counter_exactly(tmp_path: Path) -> None:
    dirs = {"a": tmp_path / "a", "b": tmp_path / "b"}
    first = scraper(dirs)
    script = [(10, 1), (20, 3), (4, 1), (9, 2), (15, 2), (3, 0)]
    for epoch, (total, failed) in enumerate(script):
        write(dirs["a"], doc(epoch, 100 - epoch if epoch == 3 else epoch + 1, total=total, failed=failed))
        write(dirs["b"], doc(epoch, epoch + 1, block_hash="fork" if epoch == 2 else None))
        (dirs["a"] / f"epoch-{epoch}.json.tmp").write_text("ignored")
        if epoch == 1:
            (dirs["b"] / "epoch-1.json").write_text("{broken")
        if epoch == 3:  # a fresh exporter over the same files, mid-run
            assert scraper(dirs).counters() == first.counters()
        else:
            first.counters()
    assert scraper(dirs).counters() == first.counters()
    assert first.value("soak_report_errors_total", node="b", reason="partial") == 1


def test_run_state_drives_nodes_restarts_chaos_and_thresholds(tmp_path: Path) -> None:
    state = tmp_path / "run_state.json"
    node = NodeState("storage", "storage", "x-storage", str(tmp_path / "rep"), str(tmp_path / "work"),
                     restarts={"chaos": 2, "crash": 1})
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "blob").write_bytes(b"x" * 5000)
    write_run_state(state, RunState("r1", "t1", "soak_smoke", "triad_p2p_bootstrap", {"max_stall_secs": 42.0},
                                    (node,), (ChaosWindow("storage", "pause", "e1", time.time() - 5),
                                              ChaosWindow("storage", "pause", "e0", time.time() - 60, time.time() - 55)),
                                    (ChaosCount("storage", "pause", "completed", 3),)))
    s = Scraper(SoakCollector(Setup(), run_state=state))
    assert s.value("soak_run_info", profile="soak_smoke", scenario="triad_p2p_bootstrap") == 1
    assert s.value("soak_gate_threshold", gate="max_stall_secs") == 42
    assert {a: s.value("soak_chaos_active", node="storage", action=a) for a in CHAOS_ACTIONS} == {
        a: float(a == "pause") for a in CHAOS_ACTIONS}
    assert s.value("soak_chaos_events_total", node="storage", action="pause", phase="completed") == 3
    assert s.value("soak_process_restarts_total", node="storage", cause="chaos") == 2
    assert s.value("soak_process_restarts_total", node="storage", cause="crash") == 1
    assert s.value("soak_node_disk_bytes", node="storage") == 5000
    assert s.value("soak_node_info", node="storage", role="storage", node_id="x-storage") == 1
    assert s.value("soak_exporter_scrape_error") == 0
    state.write_text("{not json")
    assert s.value("soak_exporter_scrape_error") == 1
    assert s.value("soak_gate_threshold", gate="max_stall_secs") == 42  # the last good state is kept


@pytest.fixture
def sleeper() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_without_run_state_a_new_pid_counts_as_a_crash_restart(tmp_path: Path, sleeper: list) -> None:
    pidfile = tmp_path / "node.pid"
    sleeper.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
    pidfile.write_text(str(sleeper[0].pid))
    s = Scraper(SoakCollector(Setup(run_id="r1", topology="t1", sources=(Source("n", pid=str(pidfile)),))))
    assert s.value("soak_process_up", node="n") == 1
    assert s.value("soak_process_resident_memory_bytes", node="n") > 0
    sleeper[0].kill()
    sleeper[0].wait()
    assert s.value("soak_process_up", node="n") == 0
    sleeper.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
    pidfile.write_text(str(sleeper[1].pid))
    assert s.value("soak_process_restarts_total", node="n", cause="crash") == 1
    assert s.value("soak_process_restarts_total", node="n", cause="chaos") == 0


@pytest.fixture
def status_server() -> Iterator[list[Any]]:
    body: list[Any] = [json.loads((FIXTURES / "status" / "g2-chain-status.json").read_text())]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            data = json.dumps(body[0]).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body.append(f"http://127.0.0.1:{server.server_address[1]}/v1/chain/status")
        yield body
    finally:
        server.shutdown()
        server.server_close()


def test_a_status_endpoint_freshens_gauges_but_never_moves_file_counters(tmp_path: Path, status_server: list) -> None:
    write(tmp_path, doc(7, 2000, at_ms=1772284800000, total=400, failed=3))
    setup = Setup(run_id="r1", topology="t1", sources=(Source("n", report_dir=str(tmp_path), status_url=status_server[1]),))
    s = Scraper(SoakCollector(setup, settle_s=0.0))
    assert s.value("soak_consensus_committed_height", node="n") == 2000
    before = time.time()
    s.collector.poll_status_once()
    after = time.time()
    assert s.value("soak_consensus_committed_height", node="n") == 2210
    assert s.value("soak_consensus_network_committed_height", node="n") == 2211
    assert s.value("soak_consensus_status", node="n", status="Committed") == 1
    # The poll's arrival on this machine's clock, not the document's observed_at.
    assert before <= s.value("soak_consensus_last_progress_timestamp_seconds", node="n") <= after
    assert s.value("soak_distfs_checks_total", node="n", result="failed") == 3
    assert s.value("soak_reports_total", node="n") == 1


def test_the_g2_status_at_head_with_lowercase_last_status_is_read_and_a_bad_one_is_counted(
        tmp_path: Path, status_server: list) -> None:
    status_server[0] = json.loads((EXAMPLES / "g2-chain-status-head.json").read_text())
    setup = Setup(run_id="r1", topology="t1", sources=(Source("n", report_dir=str(tmp_path), status_url=status_server[1]),))
    s = Scraper(SoakCollector(setup, settle_s=0.0))
    s.collector.poll_status_once()
    assert s.value("soak_consensus_status", node="n", status="Committed") == 1
    assert s.value("soak_consensus_committed_height", node="n") == 40
    assert s.value("soak_reward_invariant_ok", node="n") == 1
    assert s.value("soak_report_errors_total", node="n", reason="status") == 0
    status_server[0] = {"consensus": {"committed_height": "not a number"}}
    s.collector.poll_status_once()
    assert s.value("soak_report_errors_total", node="n", reason="status") == 1


def test_a_file_listed_as_regular_but_swapped_before_it_is_read_is_judged_by_what_it_is_now(tmp_path: Path) -> None:
    # The listing's entry type spares an lstat; an entry swapped between listing and reading
    # (a link out of the folder, a FIFO) must still be refused as the lstat path refuses it.
    folder, outside = tmp_path / "r", tmp_path / "outside"
    write(folder, doc(0, 1))
    write(outside, doc(1, 2))
    write(folder, doc(1, 2))
    os.mkfifo(folder / "epoch-2.json")
    rd = ReportDir("n", folder, settle_s=0.0)
    names = rd._new_names()
    assert set(names) == {"epoch-0.json", "epoch-1.json", "epoch-2.json"} and "epoch-2.json" not in rd._regular
    (folder / "epoch-1.json").unlink()
    (folder / "epoch-1.json").symlink_to(outside / "epoch-1.json")
    rd._regular.add("epoch-2.json")     # as if it had been a regular file when listed
    got = [rd._read(name, (index, len(name), name)) for name, index in sorted(names.items())]
    assert [type(g).__name__ for g in got] == ["Arrival", "str", "str"] and got[1:] == ["io", "io"]
    assert rd._regular == set()
