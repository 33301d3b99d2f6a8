"""The metric catalog (soakcore/catalog.py) against everything that names a metric: the
exporter's exposition (golden files and a scrape where every metric has data), the alert rules,
the dashboards, the checker's queries, the design contract's table and docs/metrics.md."""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from alerts.profiles import PROFILES
from exporter.collector import Setup, SoakCollector
from soakcore.catalog import BASE_LABELS, BY_NAME, CATALOG, LABEL_VALUES, NAMES, markdown
from soakcore.runstate import ChaosCount, ChaosWindow, NodeState, RunState, write_run_state
from simulator.net import serve_http
from soakcore.services import PROMTOOL_BIN, find_binary
from tests.test_grafana_promql import expressions, metric_names

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "exporter"
FIXTURES = ROOT / "tests" / "fixtures" / "reports"
DESIGN = ROOT / "tests" / "fixtures" / "DESIGN.md"
G2_HEAD = ROOT / "tests" / "fixtures" / "agent_world" / "g2-chain-status-head.json"
# The metrics this work added or found undocumented: each must stay in the catalog.
RECENT = {"soak_chaos_exempt_until_timestamp_seconds", "soak_consensus_stall_seconds",
          "soak_consensus_height_regressions_excused_total", "soak_consensus_height_behind_topology",
          "soak_report_gap_seconds", "soak_report_last_arrival_timestamp_seconds",
          "soak_report_clock_offset_seconds", "soak_report_clock_steps_total",
          "soak_report_numbering_restarts_total", "soak_exporter_ingest_failures_total",
          "soak_report_last_epoch_index", "soak_report_missing_fields", "soak_node_disk_entries"}


def families(text: str) -> Iterator[tuple[str, str, str, list[tuple[str, dict[str, str]]]]]:
    """(sample-name family, type, help, [(sample name, labels)]) per family of a text exposition."""
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        yield name, fam.type, fam.documentation, [(s.name, s.labels) for s in fam.samples]


def assert_matches_catalog(text: str, where: str) -> set[str]:
    seen = set()
    for name, kind, help_, samples in families(text):
        m = BY_NAME.get(name)
        assert m is not None, f"{where}: {name} is not in the catalog"
        assert (kind, help_) == (m.type, m.help), f"{where}: {name}"
        for sample, labels in samples:
            assert sample == m.name, f"{where}: {sample}"
            assert set(labels) == set(m.all_labels), f"{where}: {name} labels {sorted(labels)} != {m.all_labels}"
            for label, value in labels.items():
                allowed = LABEL_VALUES.get((name, label))
                assert allowed is None or value in allowed, f"{where}: {name}{{{label}={value!r}}}"
        seen.add(name)
    return seen


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.prom")), ids=lambda p: p.stem)
def test_every_golden_exposition_uses_catalog_names_types_help_and_label_sets(golden: Path) -> None:
    assert len(assert_matches_catalog(golden.read_text(), golden.name)) >= 15


@pytest.fixture
def full_scrape(tmp_path: Path) -> Iterator[str]:
    """A scrape where every catalog metric has data: a run state with thresholds, a live
    process, a work dir, G1 reports, a G2 node's status (HEAD schema), open and closed fault
    windows, chaos counts."""
    report = tmp_path / "report"
    shutil.copytree(FIXTURES / "g1_storage", report)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "blob").write_bytes(b"x" * 100)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    server = serve_http(("127.0.0.1", 0), {"/v1/chain/status": lambda: json.loads(G2_HEAD.read_text())},
                        {"error": "not found"}, "status")
    now = time.time()
    try:
        nodes = (NodeState("storage", "storage", "x-storage", str(report), str(tmp_path / "work"), proc.pid,
                           started_at=now - 100, critical=True),
                 NodeState("observer", "observer", "x-observer", str(tmp_path / "none"), str(tmp_path / "work"),
                           status_url=f"http://127.0.0.1:{server.server_address[1]}/v1/chain/status"))
        windows = (ChaosWindow("storage", "pause", "e1", now - 5), ChaosWindow("observer", "kill", "e0", now - 60, now - 50))
        state = tmp_path / "run_state.json"
        write_run_state(state, RunState("r1", "t1", "soak_smoke", "triad", {"max_stall_secs": 300.0}, nodes, windows,
                                        (ChaosCount("storage", "pause", "completed", 2),)))
        collector = SoakCollector(Setup(), run_state=state, settle_s=0.0)
        collector.poll_status_once()
        yield collector.render().decode()
    finally:
        server.shutdown()
        proc.kill()
        proc.wait()


def test_a_full_scrape_serves_exactly_the_catalog_with_its_closed_label_values(full_scrape: str) -> None:
    assert assert_matches_catalog(full_scrape, "full scrape") == NAMES
    values: dict[tuple[str, str], set[str]] = {}
    for name, _, _, samples in families(full_scrape):
        for _, labels in samples:
            for label, value in labels.items():
                values.setdefault((name, label), set()).add(value)
    for key in (("soak_report_errors_total", "reason"), ("soak_consensus_status", "status"),
                ("soak_distfs_checks_total", "result"), ("soak_distfs_check_failures_total", "reason"),
                ("soak_process_restarts_total", "cause"), ("soak_chaos_active", "action")):
        assert values[key] == set(LABEL_VALUES[key]), key  # closed sets: every value, always
    assert 'soak_exporter_scrape_error{run_id="r1",topology="t1"} 0.0' in full_scrape


def test_promtool_check_metrics_is_silent_on_the_full_scrape(full_scrape: str) -> None:
    done = subprocess.run([find_binary(PROMTOOL_BIN), "check", "metrics"], input=full_scrape.encode(),
                          capture_output=True, timeout=30)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done


def test_catalog_entries_are_well_formed() -> None:
    assert len(NAMES) == len(CATALOG)
    for m in CATALOG:
        assert re.fullmatch(r"soak_[a-z0-9_]+", m.name) and m.type in ("gauge", "counter") and m.help, m
        assert (m.type == "counter") == m.name.endswith("_total"), m.name
        assert not set(m.labels) & set(BASE_LABELS) and len(set(m.labels)) == len(m.labels), m.name
        assert m.unit in ("", "seconds", "bytes") and (not m.unit or m.name.removesuffix("_total").endswith(m.unit))
    assert RECENT <= NAMES


def _rule_exprs() -> Iterator[tuple[str, str]]:
    doc = yaml.safe_load((ROOT / "alerts" / "rules.yml").read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule.get("record"), rule["expr"]


def _soak_names(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith("soak_")}


def test_every_metric_the_alert_rules_read_is_in_the_catalog() -> None:
    used = set()
    for where, expr in _rule_exprs():
        names = _soak_names(metric_names(expr))
        assert names <= NAMES, f"rules.yml {where}: {sorted(names - NAMES)}"
        used |= names
    assert len(used) >= 20


def test_every_metric_the_dashboards_read_is_in_the_catalog() -> None:
    dashboards = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        for where, expr in expressions(json.loads(path.read_text())):
            names = _soak_names(metric_names(expr))
            assert names <= NAMES, f"{path.name} {where}: {sorted(names - NAMES)}"


def test_every_soak_name_in_the_checkers_strings_is_a_catalog_metric() -> None:
    """Any ``soak_*`` word in a string of checker/*.py (queries, series selectors) is a
    metric, except the profile names (``soak_smoke``...)."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "checker").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for name in re.findall(r"(?<![\w:])soak_[a-z0-9_]+(?![\w:])", node.value):
                    found.setdefault(name, path.name)
    metrics = {n: f for n, f in found.items() if n not in PROFILES}
    unknown = {n: f for n, f in metrics.items() if n not in NAMES}
    assert not unknown, unknown
    assert len(metrics) >= 10


def _design_rows() -> Iterator[tuple[str, str, set[str]]]:
    for line in DESIGN.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`?soak_[a-z0-9_]+`?", cells[0]):
            labels = {part.split("=")[0].strip() for part in cells[2].split(",")} - {"", "(none)"}
            yield cells[0].strip("`"), cells[1].split()[0], labels


def test_the_catalog_covers_the_design_contracts_table_with_its_types_and_labels() -> None:
    rows = list(_design_rows())
    assert len(rows) >= 30
    for name, kind, labels in rows:
        m = BY_NAME.get(name)
        assert m is not None, f"DESIGN.md names {name}, the catalog does not"
        assert m.type == kind and set(m.labels) == labels, (name, m.type, m.labels, kind, labels)


def test_docs_metrics_md_is_generated_from_the_catalog_and_not_stale() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    assert text == markdown(), "docs/metrics.md is stale: run python3 -m soakcore.catalog"
    assert all(f"`{m.name}`" in text for m in CATALOG)
    done = subprocess.run([sys.executable, "-m", "soakcore.catalog", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_the_docs_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "metrics.md"
    stale.write_text(markdown().replace("soak_run_info", "soak_run_inf0"))
    done = subprocess.run([sys.executable, "-m", "soakcore.catalog", "--check", "--out", str(stale)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "stale" in done.stderr
