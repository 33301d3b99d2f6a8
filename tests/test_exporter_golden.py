"""Golden exposition for fixture report folders (the served bytes: ``SoakCollector.render``),
the same samples through prometheus_client (``collect`` + ``generate_latest``), OpenMetrics and
gzip over real HTTP, and promtool on the real output.

Regenerate the golden files after an intended change: ``UPDATE_GOLDEN=1 pytest tests/test_exporter_golden.py``.
"""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli import metrics_app
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


WALL_CLOCK = ("soak_exporter_scrape_duration_seconds{", "soak_consensus_stall_seconds{", "soak_report_gap_seconds{")


def collector(folder: Path) -> SoakCollector:
    """A collector over ``folder`` with settle 0 (a bad file is final at once)."""
    setup = Setup(run_id="golden", topology="fixture", profile="soak_smoke", scenario="fixture",
                  thresholds={"max_stall_secs": 300.0},
                  sources=(Source("n", "storage", report_dir=str(folder), started_at=STARTED_S),))
    return SoakCollector(setup, settle_s=0.0)


def without_wall_clock(text: str) -> str:
    """Values read from the wall clock at scrape time are left out (the HELP/TYPE lines stay)."""
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith(WALL_CLOCK))


def exposition(folder: Path) -> str:
    """One scrape, as served (text format 0.0.4)."""
    return without_wall_clock(collector(folder).render().decode())


@pytest.mark.parametrize("name", FOLDERS)
def test_fixture_folder_exposition_matches_its_golden_file(name: str, tmp_path: Path) -> None:
    text = exposition(_materialize(name, tmp_path))
    golden = GOLDEN / f"{name}.prom"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("name", FOLDERS)
def test_the_served_bytes_equal_prometheus_clients_own_rendering_of_the_same_samples(name: str, tmp_path: Path) -> None:
    c = collector(_materialize(name, tmp_path))
    served = without_wall_clock(c.render().decode())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(c)
    assert served == without_wall_clock(generate_latest(registry).decode())


def _serve(c: SoakCollector) -> tuple[str, object]:
    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            return
    server = make_server("127.0.0.1", 0, metrics_app(c), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/metrics", server


def _samples(families: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples  # type: ignore[attr-defined]
            if not s.name.startswith(("soak_exporter_scrape_duration", "soak_consensus_stall", "soak_report_gap"))}


def test_prometheus_gets_openmetrics_gzipped_with_the_same_samples_and_others_text(tmp_path: Path) -> None:
    c = collector(_materialize("g1_storage", tmp_path))
    url, server = _serve(c)
    try:
        accept = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                  "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")  # Prometheus 2.42's
        req = urllib.request.Request(url, headers={"Accept": accept, "Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
            assert resp.headers["Content-Encoding"] == "gzip"
            om = gzip.decompress(resp.read()).decode()
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            assert resp.headers.get("Content-Encoding") is None
            text = resp.read().decode()
    finally:
        server.shutdown()  # type: ignore[attr-defined]
        server.server_close()  # type: ignore[attr-defined]
    assert om.endswith("# EOF\n") and "# TYPE soak_reports counter\n" in om
    assert "# UNIT soak_report_last_observed_timestamp_seconds seconds\n" in om
    assert _samples(om_families(om)) == _samples(text_string_to_metric_families(text))
    assert len(_samples(text_string_to_metric_families(text))) > 40


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
