"""Hostile report folders (issue 14.3/14.4, 16.4), through the real collector on real files:
epoch order, duplicates, out-of-range and blank reports, clock steps, numbering that starts
over, FIFOs, symlink loops and unreadable entries. Every scrape runs in a thread with a
deadline, so a read that blocks fails the test instead of hanging it."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.collector import Setup, SoakCollector
from exporter.procs import read_pid
from exporter.reports import parse_document
from exporter.state import OrderedSeries
from soakcore.runstate import NodeState, RunState, write_run_state
from tests.test_exporter_ingest import FIXTURES, Scraper, doc, scraper

BASE_S = 1_700_000_000.0  # arrival (mtime) of epoch 0; epoch N arrives N*10 s later


def put(folder: Path, epoch: int, height: int, *, name: str | None = None, arrive: float | None = None,
        ahead_s: float = 0.0, **extra: Any) -> Path:
    """A report whose observed_at matches its arrival (plus ``ahead_s``: the node's clock error)."""
    arrive = BASE_S + epoch * 10 if arrive is None else arrive
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"epoch-{epoch}.json")
    path.write_text(json.dumps(doc(epoch, height, at_ms=int((arrive + ahead_s) * 1000), **extra)))
    os.utime(path, (arrive, arrive))
    return path


def within(s: Scraper, seconds: float = 5.0) -> Scraper:
    """Scrape once in a thread; a scrape that does not return in time fails the test."""
    done: list[object] = []
    t = threading.Thread(target=lambda: done.append(list(s.registry.collect())), daemon=True)
    t.start()
    t.join(seconds)
    assert done, f"a scrape blocked for more than {seconds}s"
    return s


def errors(s: Scraper, node: str = "n") -> dict[str, float]:
    out = {}
    for reason in ("partial", "invalid_json", "schema", "too_large", "io", "duplicate"):
        out[reason] = s.value("soak_report_errors_total", node=node, reason=reason)
    return {k: v for k, v in out.items() if v}


# -- 14.4: epoch order --------------------------------------------------------------------
def test_a_late_report_of_an_older_epoch_is_placed_in_its_epoch_not_judged_against_a_newer_one(
        tmp_path: Path) -> None:
    s = scraper({"n": tmp_path})
    put(tmp_path, 0, 10, total=100, failed=1)
    put(tmp_path, 2, 30, total=300, failed=3)
    assert s.value("soak_consensus_committed_height", node="n") == 30
    put(tmp_path, 1, 20, total=200, failed=2, arrive=BASE_S + 25)  # written after epoch 2
    assert s.value("soak_consensus_height_regressions_total", node="n") == 0
    assert s.value("soak_reports_total", node="n") == 3
    # The gauges stay with the newest epoch; the cumulative DistFS counters are not reset by it.
    assert s.value("soak_consensus_committed_height", node="n") == 30
    assert s.value("soak_report_last_epoch_index", node="n") == 2
    assert s.value("soak_distfs_checks_total", node="n", result="failed") == 3
    assert s.value("soak_distfs_checks_total", node="n", result="passed") == 297
    # A late report that really is higher than the epoch after it: a regression in epoch order.
    put(tmp_path, 4, 50)
    put(tmp_path, 3, 60, arrive=BASE_S + 45)
    assert s.value("soak_consensus_height_regressions_total", node="n") == 1
    # A fresh exporter over the same files arrives at exactly the same counters.
    assert scraper({"n": tmp_path}).counters() == s.counters()


def test_two_names_of_one_epoch_are_a_duplicate_and_the_canonical_name_is_the_report(tmp_path: Path) -> None:
    put(tmp_path, 0, 5)
    put(tmp_path, 1, 11)
    put(tmp_path, 1, 99, name="epoch-01.json")
    put(tmp_path, 1, 98, name="epoch-001.json")
    s = within(scraper({"n": tmp_path}))
    assert s.value("soak_reports_total", node="n") == 2
    assert errors(s) == {"duplicate": 2}
    assert s.value("soak_consensus_committed_height", node="n") == 11
    assert s.value("soak_report_errors_total", node="n", reason="duplicate") == 2  # counted once each


@pytest.mark.parametrize("change", [
    {"node_snapshot": {"node_id": "x", "consensus": {"committed_height": 2**64}}},
    {"node_snapshot": {"node_id": "x", "consensus": {"committed_height": 7, "peer_heads": [
        {"node_id": "p", "height": 2**64 + 5, "block_hash": None}]}}},
    {"node_snapshot": {"node_id": "x"}},  # no consensus block
    {"node_snapshot": None},
])
def test_out_of_range_heights_and_reports_without_consensus_are_schema_errors_keeping_last_values(
        tmp_path: Path, change: dict[str, Any]) -> None:
    put(tmp_path, 0, 40)
    s = scraper({"n": tmp_path})
    bad = {**doc(1, 41), **change}
    (tmp_path / "epoch-1.json").write_text(json.dumps(bad))
    assert errors(s) == {"schema": 1}
    assert s.value("soak_consensus_committed_height", node="n") == 40
    assert s.value("soak_reports_total", node="n") == 1


# -- 16.4: clocks ---------------------------------------------------------------------------
def test_one_report_stamped_an_hour_ahead_is_a_clock_step_and_never_freezes_the_node(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = scraper({"n": tmp_path})
    for epoch in range(3):
        put(tmp_path, epoch, 10 + epoch)
    put(tmp_path, 3, 13, ahead_s=3600)
    ahead = s.value("soak_report_clock_offset_seconds", node="n")
    for epoch in range(4, 11):  # seven more, each with the invariant broken
        path = put(tmp_path, epoch, 10 + epoch)
        d = json.loads(path.read_text())
        d["reward_asset_invariant_status"] = {"ok": False, "violation_count": epoch}
        path.write_text(json.dumps(d))
        os.utime(path, (BASE_S + epoch * 10, BASE_S + epoch * 10))
    assert s.value("soak_reward_invariant_ok", node="n") == 0
    assert s.value("soak_reward_invariant_violations", node="n") == 10
    assert s.value("soak_consensus_committed_height", node="n") == 20
    assert ahead == pytest.approx(3600)
    assert s.value("soak_report_clock_offset_seconds", node="n") == pytest.approx(0)
    assert s.value("soak_report_clock_steps_total", node="n") == 2  # an hour ahead, and back
    assert "n: clock step: the node's time is +3600.0s from the reading's arrival here" in caplog.text
    assert s.value("soak_report_last_observed_timestamp_seconds", node="n") == BASE_S + 100
    # Progress and arrival on this machine's clock (file mtimes), not the node's.
    assert s.value("soak_consensus_last_progress_timestamp_seconds", node="n") == BASE_S + 100
    assert s.value("soak_report_last_arrival_timestamp_seconds", node="n") == BASE_S + 100


def test_a_status_document_stamped_ahead_never_freezes_the_reports_after_it(tmp_path: Path) -> None:
    status = json.loads((FIXTURES / "status" / "g2-chain-status.json").read_text())
    s = scraper({"n": tmp_path})
    put(tmp_path, 0, 5, arrive=time.time() - 5)
    assert s.value("soak_consensus_committed_height", node="n") == 5
    now = time.time()
    status["observed_at_unix_ms"] = int((now + 3600) * 1000)
    s.collector.views["n"].observe_status(parse_document(status), now)
    assert s.value("soak_consensus_committed_height", node="n") == 2210
    put(tmp_path, 1, 2300, arrive=now + 1)
    assert s.value("soak_consensus_committed_height", node="n") == 2300
    assert s.value("soak_report_clock_steps_total", node="n") == 2


def test_a_wiped_folder_whose_numbering_starts_again_is_read_and_counters_stay_monotonic(tmp_path: Path) -> None:
    s = scraper({"n": tmp_path})
    for epoch in range(5):
        put(tmp_path, epoch, 10 + epoch, total=100 * (epoch + 1), failed=epoch)
    before = s.counters()
    shutil.rmtree(tmp_path)
    put(tmp_path, 0, 100, arrive=BASE_S + 100, total=10, failed=1)
    put(tmp_path, 1, 101, arrive=BASE_S + 110, total=20, failed=2)
    after = s.counters()
    assert s.value("soak_consensus_committed_height", node="n") == 101
    assert s.value("soak_reports_total", node="n") == 7
    assert s.value("soak_report_numbering_restarts_total", node="n") == 1
    assert s.value("soak_distfs_checks_total", node="n", result="failed") == 4 + 2  # banked, never reset
    assert all(after[k] >= v for k, v in before.items()), (before, after)


def test_a_new_node_rewriting_epoch_files_in_place_is_read_by_identity_and_content(tmp_path: Path) -> None:
    s = scraper({"n": tmp_path})
    for epoch in range(5):
        put(tmp_path, epoch, 10 + epoch)
    old = BASE_S
    os.utime(tmp_path, (old, old))
    assert s.value("soak_reports_total", node="n") == 5
    # Rewritten in place: the directory's mtime does not move, only the files change.
    put(tmp_path, 0, 3, arrive=BASE_S + 200)
    os.utime(tmp_path, (old, old))
    assert s.value("soak_consensus_committed_height", node="n") == 3
    assert s.value("soak_report_numbering_restarts_total", node="n") == 1
    put(tmp_path, 1, 4, arrive=BASE_S + 210)
    os.utime(tmp_path, (old, old))
    assert s.value("soak_consensus_committed_height", node="n") == 4
    assert s.value("soak_reports_total", node="n") == 7
    # Touched without new content: the same report, not a new one.
    os.utime(tmp_path / "epoch-1.json", (BASE_S + 300, BASE_S + 300))
    os.utime(tmp_path / "epoch-3.json", (BASE_S + 300, BASE_S + 300))
    os.utime(tmp_path)
    assert s.value("soak_reports_total", node="n") == 7
    assert s.value("soak_report_numbering_restarts_total", node="n") == 1


def test_a_node_counts_from_its_start_until_its_first_report(tmp_path: Path) -> None:
    state = tmp_path / "run_state.json"
    nodes = tuple(NodeState(n, n, f"x-{n}", str(tmp_path / n), str(tmp_path), started_at=started)
                  for n, started in (("a", 1_650_000_000.5), ("b", None)))
    write_run_state(state, RunState("r1", "t1", "soak_smoke", "s", {}, nodes))
    before = time.time()
    s = Scraper(SoakCollector(Setup(), run_state=state))
    assert s.value("soak_report_last_arrival_timestamp_seconds", node="a") == 1_650_000_000.5
    assert before <= s.value("soak_report_last_arrival_timestamp_seconds", node="b") <= time.time()
    assert s.value("soak_consensus_last_progress_timestamp_seconds", node="a") is None
    put(tmp_path / "a", 0, 1, arrive=1_650_000_100.0)
    assert s.value("soak_report_last_arrival_timestamp_seconds", node="a") == 1_650_000_100.0
    assert s.value("soak_consensus_last_progress_timestamp_seconds", node="a") == 1_650_000_100.0


# -- 14.3: nothing blocks, one bad entry loses nothing else -------------------------------
def test_fifos_symlink_loops_and_unreadable_entries_are_io_errors_and_the_good_reports_stay(
        tmp_path: Path) -> None:
    put(tmp_path, 0, 10)
    os.mkfifo(tmp_path / "epoch-1.json")                    # present at start
    os.symlink("epoch-2.json", tmp_path / "epoch-2.json")   # a loop onto itself
    os.symlink("loop-b", tmp_path / "epoch-3.json")
    os.symlink("epoch-3.json", tmp_path / "loop-b")          # a loop of two
    (tmp_path / "epoch-4.json").mkdir()                      # a directory
    os.symlink("gone.json", tmp_path / "epoch-5.json")       # dangling
    put(tmp_path, 6, 16)
    s = within(scraper({"n": tmp_path}))
    assert s.value("soak_reports_total", node="n") == 2
    assert errors(s) == {"io": 5}
    assert s.value("soak_consensus_committed_height", node="n") == 16
    assert s.value("soak_exporter_scrape_error") == 0
    os.mkfifo(tmp_path / "epoch-7.json")                    # created later
    put(tmp_path, 8, 18)
    within(s)
    within(s)
    assert errors(s) == {"io": 6}  # counted once, never again
    assert s.value("soak_consensus_committed_height", node="n") == 18
    assert s.value("soak_reports_total", node="n") == 3


def test_a_fifo_as_run_state_or_pidfile_never_blocks_a_scrape(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "node.pid")
    done: list[object] = []
    t = threading.Thread(target=lambda: done.append(read_pid(str(tmp_path / "node.pid"))), daemon=True)
    t.start()
    t.join(5)
    assert done == [None]
    state = tmp_path / "run_state.json"
    write_run_state(state, RunState("r1", "t1", "soak_smoke", "s", {}, ()))
    s = within(Scraper(SoakCollector(Setup(), run_state=state)))
    assert s.value("soak_exporter_scrape_error") == 0
    state.unlink()
    os.mkfifo(state)
    assert within(s).value("soak_exporter_scrape_error") == 1


def test_a_node_whose_folder_cannot_be_read_is_counted_and_the_others_are_served(tmp_path: Path) -> None:
    put(tmp_path / "good", 0, 3)
    put(tmp_path / "bad", 0, 7)
    s = scraper({"bad": tmp_path / "bad", "good": tmp_path / "good"})
    assert s.value("soak_exporter_scrape_error") == 0
    shutil.rmtree(tmp_path / "bad")
    (tmp_path / "bad").write_text("not a folder")
    put(tmp_path / "good", 1, 4)
    assert s.value("soak_exporter_scrape_error") == 1  # every scrape that fails a node is counted
    assert s.value("soak_exporter_ingest_failures_total", node="bad") == 2
    assert s.value("soak_consensus_committed_height", node="bad") == 7  # last good values kept
    assert s.value("soak_consensus_committed_height", node="good") == 4
    (tmp_path / "bad").unlink()
    assert s.value("soak_exporter_scrape_error") == 0  # a folder not made yet is no failure
    assert s.value("soak_exporter_ingest_failures_total", node="bad") == 4
    assert s.value("soak_exporter_ingest_failures_total", node="good") == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_counters_are_the_same_whatever_order_reports_arrive_in_and_never_decrease(
        values: list[int], rnd: Any) -> None:
    """OrderedSeries: the drop count and banked counter depend on the set of reports only."""
    def fill(order: list[int]) -> tuple[int, int, int]:
        series, seen = OrderedSeries(), []
        for epoch in order:
            series.insert((0, epoch), values[epoch])
            seen.append((series.drops, series.banked, series.value))
        assert all(b[0] >= a[0] and b[1] >= a[1] and b[2] >= a[2] for a, b in zip(seen, seen[1:])), seen
        return series.drops, series.banked, series.value
    in_order = list(range(len(values)))
    shuffled = in_order[:]
    rnd.shuffle(shuffled)
    expected_drops = sum(b < a for a, b in zip(values, values[1:]))
    expected_banked = sum(a for a, b in zip(values, values[1:]) if b < a)
    assert fill(in_order) == fill(shuffled) == (expected_drops, expected_banked, expected_banked + values[-1])
