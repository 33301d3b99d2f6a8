"""Golden exposition for fixture report folders, and promtool on the real output.

Regenerate the golden files after an intended change: ``UPDATE_GOLDEN=1 pytest tests/test_exporter_golden.py``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import Setup, SoakCollector, Source
from soakcore.services import PROMTOOL_BIN, find_binary

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
GOLDEN = Path(__file__).parent / "golden" / "exporter"
FOLDERS = ("g1_storage", "g1_sequencer", "g2_slim", "partial", "wrong_types", "empty", "huge", "non_utf8",
           "symlink_outside", "unknown_fields")
STARTED_S = 1771927000.0   # the node's start (run state): last arrival before any report
ARRIVAL_S = 1771927263.5   # every fixture file's mtime: its arrival on the exporter's clock


def _materialize(name: str, tmp_path: Path) -> Path:
    """The fixture folder in a scratch copy; huge and symlink cases are made here, not checked in."""
    folder = tmp_path / name
    if name == "huge":
        folder.mkdir()
        with open(folder / "epoch-0.json", "wb") as fh:
            fh.truncate(17 * 1024 * 1024)  # sparse: past the 16 MiB limit without writing it
    elif name == "symlink_outside":
        folder.mkdir()
        shutil.copy(FIXTURES / "g1_storage" / "epoch-3.json", tmp_path / "outside.json")
        (folder / "epoch-3.json").symlink_to(tmp_path / "outside.json")
    else:
        shutil.copytree(FIXTURES / name, folder)
    for path in folder.iterdir():  # arrival times (mtimes) fixed: the exposition has no wall clock in it
        os.utime(path, (ARRIVAL_S, ARRIVAL_S))
    return folder


def exposition(folder: Path) -> str:
    """One scrape of a collector over ``folder`` with settle 0 (a bad file is final at once)."""
    setup = Setup(run_id="golden", topology="fixture", profile="soak_smoke", scenario="fixture",
                  thresholds={"max_stall_secs": 300.0},
                  sources=(Source("n", "storage", report_dir=str(folder), started_at=STARTED_S),))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SoakCollector(setup, settle_s=0.0))
    text = generate_latest(registry).decode()
    # Values read from the wall clock at scrape time are left out (the HELP/TYPE lines stay).
    wall_clock = ("soak_exporter_scrape_duration_seconds{", "soak_consensus_stall_seconds{", "soak_report_gap_seconds{")
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith(wall_clock))


@pytest.mark.parametrize("name", FOLDERS)
def test_fixture_folder_exposition_matches_its_golden_file(name: str, tmp_path: Path) -> None:
    text = exposition(_materialize(name, tmp_path))
    golden = GOLDEN / f"{name}.prom"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("name", ["g1_storage", "huge", "unknown_fields"])
def test_promtool_check_metrics_has_no_complaint_about_real_output(name: str, tmp_path: Path) -> None:
    text = exposition(_materialize(name, tmp_path))
    done = subprocess.run([find_binary(PROMTOOL_BIN), "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=30)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done


def test_bad_files_are_counted_under_their_reason_and_good_neighbours_still_count(tmp_path: Path) -> None:
    expected = {"partial": "partial", "wrong_types": "schema", "empty": "partial", "huge": "too_large",
                "non_utf8": "invalid_json", "symlink_outside": "io"}
    for name, reason in expected.items():
        lines = exposition(_materialize(name, tmp_path)).splitlines()
        assert f'soak_report_errors_total{{node="n",reason="{reason}",run_id="golden",topology="fixture"}} 1.0' \
            in lines, name
    partial = exposition(tmp_path / "partial").splitlines()
    assert 'soak_reports_total{node="n",run_id="golden",topology="fixture"} 1.0' in partial
