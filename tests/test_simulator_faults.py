"""Each fault switch produces its real misbehaviour, seen in the reports, the status document
or the process itself. Several triad processes run side by side to keep the suite short."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from simulator.node import block_hash
from simulator.schema import report_problems
from simulator.testing import SimProcess, triad

RUN_SECS = 5.0
CASES = {
    "resources": ["--fault-leak-bytes-per-sec", "20000000", "--fault-fd-leak-per-sec", "40",
                  "--fault-disk-bytes-per-sec", "2000000", "--fault-invariant-at-sec", "2.5"],
    "stall": ["--fault-stall-at-sec", "1.5", "--fault-partial-report"],
    "regress": ["--fault-regress-at-sec", "2.5", "--fault-regress-by", "1000", "--fault-slow-write-ms", "400"],
    "fork": ["--fault-fork-at-sec", "1.5", "--fault-distfs-fail-ratio", "0.5",
             "--fault-distfs-fail-reason", "HASH_MISMATCH"],
    "crash": ["--fault-crash-at-sec", "2", "--fault-crash-code", "7", "--seed", "9"],
    "healthy": [],
}


class PartialReader(threading.Thread):
    """Reads report files the way an exporter would, and notes every partial file it sees."""

    def __init__(self, dirs: list[Path]) -> None:
        super().__init__(daemon=True)
        self.dirs, self.partial, self.done = dirs, {str(d): 0 for d in dirs}, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.03):
            for d in self.dirs:
                for path in d.glob("epoch-*.json"):
                    text = path.read_text(errors="replace")
                    try:
                        json.loads(text)
                    except ValueError:
                        self.partial[str(d)] += bool(text)


class Observed:
    def __init__(self, procs: dict[str, SimProcess], reader: PartialReader) -> None:
        self.procs, self.reader = procs, reader
        self.samples: dict[str, list[tuple[int, int, int]]] = {}  # rss, fds, disk bytes
        self.heights: dict[str, list[int]] = {name: [] for name in procs}
        self.exit_codes: dict[str, int | None] = {}


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def sample(obs: Observed) -> None:
    res = obs.procs["resources"]
    ps = psutil.Process(res.pid)
    obs.samples.setdefault("resources", []).append((ps.memory_info().rss, ps.num_fds(), disk_bytes(res.work)))
    for name, proc in obs.procs.items():
        if name != "crash":
            obs.heights[name].append(proc.height())


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    root = tmp_path_factory.mktemp("sim-faults")
    procs = {name: triad(root, name, args) for name, args in CASES.items()}
    reader = PartialReader([procs["stall"].report_dir, procs["regress"].report_dir])
    obs = Observed(procs, reader)
    try:
        for proc in procs.values():
            proc.start()
        for name, proc in procs.items():
            if name != "crash":
                proc.wait_ready()
        reader.start()
        (procs["fork"].work / "challenge_pressure.json").write_text(json.dumps(
            {"until_unix_ms": int(time.time() * 1000) + 60_000, "challenges_per_tick": 6}))
        end = time.monotonic() + RUN_SECS
        while time.monotonic() < end:
            sample(obs)
            time.sleep(0.25)
        assert procs["crash"].proc is not None
        obs.exit_codes["crash"] = procs["crash"].proc.wait(10)
        yield obs
    finally:
        reader.done.set()
        for proc in procs.values():
            proc.stop()


def test_leak_switches_grow_memory_fds_and_disk(observed: Observed) -> None:
    first, last = observed.samples["resources"][1], observed.samples["resources"][-1]
    assert last[0] - first[0] > 40_000_000, (first, last)  # ~20 MB/s for ~4 s
    assert last[1] - first[1] > 80, (first, last)
    assert last[2] - first[2] > 4_000_000, (first, last)


def test_a_healthy_node_does_not_grow_fds_or_disk_like_a_leak(observed: Observed) -> None:
    healthy = observed.procs["healthy"]
    fds = psutil.Process(healthy.pid).num_fds()
    assert fds < 30 and disk_bytes(healthy.work) < 500_000
    assert all(report_problems(d) == [] for d in healthy.reports())


def test_invariant_switch_breaks_the_reward_asset_invariant_from_its_time(observed: Observed) -> None:
    docs = observed.procs["resources"].reports()
    status = [d["reward_asset_invariant_status"] for d in docs]
    assert status[0] == {"ok": True, "violation_count": 0}
    assert status[-1]["ok"] is False and status[-1]["violation_count"] > 0
    assert docs[-1]["reward_asset_invariant_report"]["violations"][0]["code"]


def test_stall_switch_stops_committed_height_while_the_process_runs(observed: Observed) -> None:
    h = observed.heights["stall"]
    assert h[-1] == h[len(h) // 2] > 0, h
    assert observed.heights["healthy"][-1] > observed.heights["healthy"][len(h) // 2]
    assert observed.procs["stall"].proc.poll() is None  # type: ignore[union-attr]


def test_regress_switch_lowers_committed_height_once(observed: Observed) -> None:
    h = observed.heights["regress"]
    drops = [(a, b) for a, b in zip(h, h[1:]) if b < a]
    assert len(drops) == 1 and drops[0][1] == 0, h
    reports = [d["node_snapshot"]["consensus"]["committed_height"] for d in observed.procs["regress"].reports()]
    assert reports[-1] < max(reports), reports


def test_fork_switch_makes_a_node_commit_another_hash_at_a_height_its_peers_committed(observed: Observed) -> None:
    doc = observed.procs["fork"].reports()[-1]
    cons, world = doc["node_snapshot"]["consensus"], doc["node_snapshot"]["world_id"]
    assert cons["last_block_hash"] == block_hash(world, cons["committed_height"])
    storage = next(p for p in cons["peer_heads"] if p["node_id"] == "fork-storage")
    assert storage["height"] > 0 and storage["block_hash"] != block_hash(world, storage["height"])
    healthy = observed.procs["healthy"].reports()[-1]["node_snapshot"]
    assert all(p["block_hash"] == block_hash(healthy["world_id"], p["height"])
               for p in healthy["consensus"]["peer_heads"])


def test_distfs_switch_fails_challenges_at_its_ratio_with_its_reason(observed: Observed) -> None:
    cursor = observed.procs["fork"].reports()[-1]["distfs_probe_cursor_state"]
    total, failed = cursor["cumulative_total_checks"], cursor["cumulative_failed_checks"]
    assert 0.3 < failed / total < 0.7, cursor
    assert cursor["cumulative_failure_reasons"] == {"HASH_MISMATCH": failed}
    assert cursor["cumulative_passed_checks"] + failed == total


def test_challenge_pressure_file_runs_more_checks_per_tick(observed: Observed) -> None:
    pressed = observed.procs["fork"].reports()[-1]["distfs_probe_cursor_state"]
    normal = observed.procs["healthy"].reports()[-1]["distfs_probe_cursor_state"]
    assert pressed["cumulative_total_checks"] > 3 * pressed["rounds_executed"] // 2
    assert normal["cumulative_total_checks"] == normal["rounds_executed"]
    assert normal["cumulative_failed_checks"] == 0


def test_crash_switch_exits_with_its_code(observed: Observed) -> None:
    assert observed.exit_codes["crash"] == 7


def test_partial_and_slow_report_writes_are_seen_half_written_by_a_reader(observed: Observed) -> None:
    for name in ("stall", "regress"):
        proc = observed.procs[name]
        assert observed.reader.partial[str(proc.report_dir)] >= 1, name
        assert all(report_problems(d) == [] for d in proc.reports())


def test_the_blob_store_is_the_same_for_the_same_seed_and_differs_for_another(observed: Observed) -> None:
    def index(name: str) -> str:
        return (observed.procs[name].work / "output" / "node-distfs" / f"{name}-storage" / "store"
                / "index.json").read_text()
    assert index("healthy") == index("resources") != index("crash")
