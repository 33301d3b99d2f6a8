"""The generated dashboards: fresh, built from the gates, and every query valid PromQL that
a real Prometheus accepts, over catalog metrics only."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import pytest

from alerts.gates import GATES, threshold
from grafana.dashboards import DASHBOARDS, OUT_DIR
from soakcore.errors import EvaluationError
from soakcore.services import Service, http_get_json, start_prometheus
from tests.test_grafana_promql import (PROMETHEUS_BUILTINS, catalog_metrics, expressions, metric_names, panels,
                                  substitute)

ROOT = Path(__file__).resolve().parent.parent


def load(name: str) -> dict[str, Any]:
    return json.loads((OUT_DIR / name).read_text())


@pytest.fixture(scope="module")
def empty_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A real Prometheus with nothing to scrape: it parses and evaluates every query."""
    root = tmp_path_factory.mktemp("prom")
    config = root / "prometheus.yml"
    config.write_text("global:\n  evaluation_interval: 1s\nscrape_configs: []\n")
    service = start_prometheus(config, root / "data")
    try:
        yield service
    finally:
        service.stop()


def test_checked_in_dashboard_json_matches_what_the_code_generates(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "grafana", "--out", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True)
    for name in DASHBOARDS:
        fresh, checked_in = (tmp_path / name).read_text(), (OUT_DIR / name).read_text()
        if fresh != checked_in:  # not assert ==: a diff of 100 kB of JSON helps nobody
            pytest.fail(f"grafana/dashboards/{name} is stale: run `python3 -m grafana`")
    assert sorted(p.name for p in OUT_DIR.glob("*.json")) == sorted(DASHBOARDS), "stray dashboard JSON"


def test_every_gate_has_a_verdict_panel_built_from_its_own_promql() -> None:
    stats = {p["title"]: p for p in panels(load("agent-world-soak.json")) if p["type"] == "stat"}
    for gate in GATES:
        panel = stats.get(gate.alert)
        assert panel is not None, f"no verdict panel for gate {gate.name}"
        exprs = {t["refId"]: t["expr"] for t in panel["targets"]}
        assert gate.value in exprs["value"], f"{gate.name}: panel does not use gate.value"
        if gate.threshold_key is None:
            assert set(exprs) == {"value"}
            assert panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["color"] == "red"
        else:
            assert threshold(gate.threshold_key) in exprs["threshold"], f"{gate.name}: threshold not from gates"


def test_a_gate_panel_takes_its_red_step_from_the_threshold_query() -> None:
    for panel in panels(load("agent-world-soak.json")):
        refs = {t["refId"] for t in panel.get("targets") or []}
        if panel["type"] != "stat" or "threshold" not in refs:
            continue
        config = [t for t in panel["transformations"] if t["id"] == "configFromData"]
        assert len(config) == 1, panel["title"]
        assert config[0]["options"]["configRefId"] == "threshold"
        assert config[0]["options"]["mappings"] == [{"fieldName": "threshold", "handlerKey": "threshold1"}]


def test_every_gate_has_a_trend_panel_with_its_threshold_line() -> None:
    series = {p["title"]: p for p in panels(load("agent-world-soak.json")) if p["type"] == "timeseries"}
    for gate in GATES:
        exprs = [t["expr"] for t in series[gate.alert]["targets"]]
        assert any(gate.value in e for e in exprs)
        assert gate.threshold_key is None or any(threshold(gate.threshold_key) in e for e in exprs)


def test_every_dashboard_query_reads_only_catalog_metrics() -> None:
    allowed = catalog_metrics() | PROMETHEUS_BUILTINS
    assert "soak_consensus_committed_height" in allowed, "DESIGN.md catalog not found or not parsed"
    for where, expr in expressions(load("agent-world-soak.json")):
        unknown = metric_names(expr) - allowed
        assert not unknown, f"{where} reads metrics outside the catalog: {sorted(unknown)}"


def test_every_dashboard_query_is_accepted_by_a_real_prometheus(empty_prometheus: Service) -> None:
    dashboard = load("agent-world-soak.json")
    queries = list(expressions(dashboard))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":  # label_values(SELECTOR, label): the selector must parse
            queries.append((f"variable {var['name']}", var["query"].split("(", 1)[1].rsplit(",", 1)[0]))
    assert len(queries) > len(GATES) * 2
    for where, expr in queries:
        url = f"{empty_prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": substitute(expr)})
        try:
            answer = http_get_json(url)
        except EvaluationError as exc:  # the 400 of a parse error
            pytest.fail(f"{where}: Prometheus rejected {expr!r}: {exc}")
        assert answer["status"] == "success", f"{where}: {answer}"


def test_the_overview_has_a_row_for_each_part_of_the_soak() -> None:
    rows = [p["title"].split(":")[0] for p in load("agent-world-soak.json")["panels"] if p["type"] == "row"]
    assert rows == ["Verdict", "Consensus", "DistFS storage challenges", "Reward invariant", "Processes",
                    "Chaos", "G2 nodes", "Exporter health and alerts", "Gate values over time"]


def test_no_two_panels_overlap_and_all_fit_the_grid() -> None:
    def cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        return {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(load("agent-world-soak.json")):
        for cell in cells(panel):
            assert cell not in taken, f"{panel['title']!r} overlaps {taken[cell]!r}"
            taken[cell] = panel["title"]


def test_regenerating_into_an_unwritable_place_is_a_one_line_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run = subprocess.run([sys.executable, "-m", "grafana", "--out", str(blocker / "x")], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "cannot write" in run.stderr


def test_every_gate_panel_links_to_its_runbook_section_and_to_its_alerts_in_alertmanager() -> None:
    from alerts.generate import DEFAULT_RUNBOOK_BASE_URL
    dashboard = load("agent-world-soak.json")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["runbook"]["query"] == DEFAULT_RUNBOOK_BASE_URL
    assert variables["alertmanager"]["type"] == "textbox" and variables["alertmanager"]["query"].startswith("http")
    runbook = (ROOT / "alerts" / "RUNBOOK.md").read_text()
    by_title: dict[str, list[dict[str, Any]]] = {}
    for panel in panels(dashboard):
        if panel["type"] in ("stat", "timeseries") and panel["title"] in {g.alert for g in GATES}:
            by_title.setdefault(panel["title"], []).append(panel)
    for gate in GATES:
        assert len(by_title[gate.alert]) == 2, gate.alert          # the verdict stat and the trend
        for panel in by_title[gate.alert]:
            urls = [link["url"] for link in panel["links"]]
            assert urls[0] == f"${{runbook}}#{gate.anchor}" and f'<a id="{gate.anchor}"></a>' in runbook
            assert urls[1].startswith("${alertmanager}/#/alerts?")
            assert urllib.parse.unquote(urls[1].split("filter=")[1]) == f'{{alertname="{gate.alert}"}}'
