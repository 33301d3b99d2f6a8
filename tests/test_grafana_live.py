"""The overview dashboard against live data: a real exporter reading a real Agent World
report, scraped by a real Prometheus. The panels must show that run, and only that run."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
from typing import Any, Iterator

import pytest
import yaml

from alerts.gates import gate_by_name
from alerts.profiles import get_profile
from grafana.dashboards import OUT_DIR
from grafana.panels import filtered_gate_value, filtered_threshold, sel
from soakcore.services import LOCALHOST, Service, free_port, http_get_json, start_prometheus, wait_http_ok
from tests.conftest import EXAMPLES

RUN = {"$run_id": "dash-run", "$topology": "triad", "$node": "sequencer"}
PROFILE = "soak_smoke"


def query(prom: Service, expr: str, variables: dict[str, str] = RUN) -> list[dict[str, Any]]:
    for name, value in variables.items():
        expr = expr.replace(name, value)
    url = f"{prom.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return list(http_get_json(url)["data"]["result"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("live")
    report_dir = root / "report"
    report_dir.mkdir()
    shutil.copy(EXAMPLES / "g1-sequencer-epoch-3.json", report_dir / "epoch-3.json")
    port = free_port()
    argv = [sys.executable, "-m", "exporter", "--listen", f"{LOCALHOST}:{port}", "--node",
            f"sequencer={report_dir}", "--run-id", RUN["$run_id"], "--topology", RUN["$topology"],
            "--profile", PROFILE]
    with open(root / "exporter.log", "wb") as log:
        exporter = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    prom: Service | None = None
    try:
        wait_http_ok(f"http://{LOCALHOST}:{port}/metrics", 20.0, exporter)
        config = root / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "soak-exporter",
                                "static_configs": [{"targets": [f"{LOCALHOST}:{port}"]}]}]}))
        prom = start_prometheus(config, root / "data")
        deadline = time.monotonic() + 20
        while not query(prom, sel("soak_consensus_committed_height")) and time.monotonic() < deadline:
            time.sleep(0.3)
        yield prom
    finally:
        if prom is not None:
            prom.stop()
        exporter.terminate()
        exporter.wait(10)


def test_the_run_variable_lists_the_run_the_exporter_reports(live: Service) -> None:
    variables = json.loads((OUT_DIR / "agent-world-soak.json").read_text())["templating"]["list"]
    run_var = next(v for v in variables if v["name"] == "run_id")
    selector, label = run_var["query"][len("label_values("):-1].rsplit(",", 1)
    assert {s["metric"][label.strip()] for s in query(live, selector)} == {RUN["$run_id"]}


def test_the_committed_height_panel_shows_the_reported_height(live: Service) -> None:
    result = query(live, sel("soak_consensus_committed_height"))
    assert [(s["metric"]["node"], float(s["value"][1])) for s in result] == [("sequencer", 4120.0)]


def test_a_gate_panel_shows_the_gate_value_for_the_selected_run_only(live: Service) -> None:
    gate = gate_by_name("reward_invariant_violated")
    assert [float(s["value"][1]) for s in query(live, filtered_gate_value(gate))] == [0.0]
    other_run = {**RUN, "$run_id": "another-run"}
    assert query(live, filtered_gate_value(gate), other_run) == []


def test_a_gate_threshold_line_shows_the_active_profile_number(live: Service) -> None:
    key = "max_lag_p95"
    result = query(live, filtered_threshold(key))
    assert [float(s["value"][1]) for s in result] == [float(get_profile(PROFILE).thresholds[key])]
