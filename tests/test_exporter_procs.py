"""Process stats straight from /proc against psutil's reading of the same real processes,
a reused pid told apart by start time, the outside-lag sweep against its definition, and
node directory sizes without a cap."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.collector import Setup, SoakCollector, Source
from exporter.procs import DiskSizer, proc_stats, walk
from exporter.topolag import behind, behind_reference
from tests.test_exporter_ingest import Scraper


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    # A few threads and open files, so every figure is non-trivial.
    code = ("import threading, time, tempfile; fs = [tempfile.TemporaryFile() for _ in range(7)]; "
            "[threading.Thread(target=time.sleep, args=(60,), daemon=True).start() for _ in range(3)]; "
            "print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_proc_stats_read_the_same_figures_psutil_does(sleeper: subprocess.Popen[bytes]) -> None:
    st = proc_stats(sleeper.pid)
    p = psutil.Process(sleeper.pid)
    with p.oneshot():
        rss, fds, threads, created = p.memory_info().rss, p.num_fds(), p.num_threads(), p.create_time()
        cpu = p.cpu_times()
    assert st.up and st.rss == rss and st.fds == fds and st.threads == threads == 4
    assert st.start_time == pytest.approx(created, abs=0.01)
    assert st.cpu_s == pytest.approx(cpu.user + cpu.system, abs=0.05) and st.cpu_s > 0
    assert st.fds >= 10


def test_a_gone_or_zombie_process_is_down(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.02)  # exited, not reaped yet: a zombie
    assert not proc_stats(proc.pid).up
    proc.wait()
    assert not proc_stats(proc.pid).up and not proc_stats(None).up


def test_a_pid_reused_by_a_new_process_counts_as_a_restart(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    """The kernel hands a pid out again only after it wraps; the start time tells the two
    processes apart, so a restart that happens to get the same pid is still counted."""
    c = SoakCollector(Setup(run_id="r1", topology="t1", sources=(Source("n", pid=str(sleeper.pid)),)))
    s = Scraper(c)
    assert s.value("soak_process_restarts_total", node="n", cause="crash") == 0
    src = c.setup.sources[0]
    ticks = proc_stats(sleeper.pid).start_ticks
    assert c.restarts(src, (sleeper.pid, ticks)) == {"chaos": 0, "crash": 0}  # the same process
    assert c.restarts(src, (sleeper.pid, ticks + 5)) == {"chaos": 0, "crash": 1}  # same pid, later start
    assert s.value("soak_process_restarts_total", node="n", cause="crash") == 2  # and back to the real one


TIMES = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]),
                       st.lists(st.tuples(TIMES, st.integers(0, 6)), max_size=6), max_size=5))
def test_the_outside_lag_sweep_equals_its_definition(raw: dict[str, list[tuple[float, int]]]) -> None:
    """exporter/topolag.behind (a sweep, O(n log n)) against behind_reference (every pair):
    equal times, regressions, empty trails, a single node."""
    trails = {node: sorted(readings, key=lambda r: r[0]) for node, readings in raw.items()}  # arrival order
    assert behind(trails) == behind_reference(trails)


def test_a_directory_past_the_old_50000_entry_cap_is_walked_whole_and_the_count_exported(tmp_path: Path) -> None:
    work = tmp_path / "work"
    for d in range(11):
        (work / f"d{d}").mkdir(parents=True)
        for f in range(5000):
            os.close(os.open(work / f"d{d}" / f"f{f}", os.O_CREAT | os.O_WRONLY, 0o644))
    (work / "d10" / "f4999").write_bytes(b"x" * 12345)  # the last entries count too
    size = walk(str(work))
    assert size is not None and size.entries == 11 * 5000 + 11 and size.bytes == 12345
    s = Scraper(SoakCollector(Setup(run_id="r1", topology="t1", sources=(Source("n", work_dir=str(work)),))))
    deadline = time.monotonic() + 30   # the first walk is waited for briefly, then served by a later scrape
    while s.value("soak_node_disk_bytes", node="n") is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert s.value("soak_node_disk_bytes", node="n") == 12345
    assert s.value("soak_node_disk_entries", node="n") == 55011


def test_disk_sizes_are_walked_in_the_background_and_refreshed(tmp_path: Path) -> None:
    sizer = DiskSizer(refresh_s=0.2)
    sizer.begin_scrape()
    assert sizer.size(str(tmp_path / "missing")) is None
    (tmp_path / "a").write_bytes(b"x" * 10)
    assert sizer.size(str(tmp_path)).bytes == 10  # type: ignore[union-attr]
    (tmp_path / "b").write_bytes(b"x" * 5)
    assert sizer.size(str(tmp_path)).bytes == 10  # type: ignore[union-attr]  # served from the last walk
    deadline = time.monotonic() + 5
    while sizer.size(str(tmp_path)).bytes != 15 and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.05)
    assert sizer.size(str(tmp_path)).bytes == 15  # type: ignore[union-attr]
