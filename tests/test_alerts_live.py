"""A gate fires end to end with real processes: exporter -> Prometheus (the generated rules)
-> Alertmanager (the generated config) -> webhook -> alerts.log, and how long that takes."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from string import Template
from typing import Any, Callable, Iterator, TypeVar

import pytest

from alerts.generate import DEFAULT_RUNBOOK_BASE_URL, render_alertmanager_config
from soakcore.services import (AlertWebhook, Service, free_port, http_get_json, read_alerts_log,
                               start_alertmanager, start_prometheus, terminate, wait_http_ok)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "fixtures" / "agent_world" / "g1-sequencer-epoch-3.json"
PROMETHEUS_TEMPLATE = ROOT / "prometheus" / "prometheus.yml.tmpl"
T = TypeVar("T")


def write_report(report_dir: Path, epoch: int, invariant_ok: bool) -> None:
    """A real G1 epoch report, written atomically so the exporter never sees half of it."""
    doc = json.loads(EXAMPLE.read_text())
    doc["settlement_report"]["epoch_index"] = epoch
    doc["observed_at_unix_ms"] = int(time.time() * 1000)
    doc["reward_asset_invariant_status"] = {"ok": invariant_ok, "violation_count": 0 if invariant_ok else 1}
    tmp = report_dir / f".epoch-{epoch}.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.rename(report_dir / f"epoch-{epoch}.json")


class Stack:
    """Webhook, Alertmanager, exporter and Prometheus; ``stop()`` stops what was started."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.report_dir = base / "report"
        self.report_dir.mkdir()
        self.services: list[Service] = []
        self.exporter: subprocess.Popen[bytes] | None = None
        self.exporter_target = f"127.0.0.1:{free_port()}"
        self.webhook = AlertWebhook(base / "alerts.log")

    def start(self) -> None:
        self.webhook.start()
        (self.base / "alertmanager.yml").write_text(render_alertmanager_config(self.webhook.url))
        am = start_alertmanager(self.base / "alertmanager.yml", self.base / "am-data")
        self.services.append(am)
        exporter = self.exporter_target
        argv = [sys.executable, "-m", "exporter", "--listen", exporter, "--node", f"n1={self.report_dir}",
                "--run-id", "r1", "--topology", "triad", "--profile", "soak_smoke"]
        with open(self.base / "exporter.log", "wb") as log:
            self.exporter = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_http_ok(f"http://{exporter}/metrics", 20.0, self.exporter)
        config = Template(PROMETHEUS_TEMPLATE.read_text()).substitute(
            interval="1s", rules_file=str(ROOT / "alerts" / "rules.yml"),
            alertmanager=f"'{am.url.removeprefix('http://')}'", exporter=exporter)
        (self.base / "prometheus.yml").write_text(config)
        self.services.append(start_prometheus(self.base / "prometheus.yml", self.base / "prom-data"))

    @property
    def prometheus_url(self) -> str:
        return self.services[-1].url

    def stop(self) -> None:
        terminate(self.exporter)
        for service in reversed(self.services):
            service.stop()
        self.webhook.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    if not EXAMPLE.is_file():
        pytest.fail(f"missing {EXAMPLE}")
    s = Stack(tmp_path)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def wait_for(predicate: Callable[[], list[T]], timeout: float, what: str) -> list[T]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def test_a_broken_reward_invariant_reaches_the_webhook_with_its_labels_and_annotations(stack: Stack) -> None:
    write_report(stack.report_dir, 0, invariant_ok=True)
    query = f"{stack.prometheus_url}/api/v1/query?query=soak_reward_invariant_ok"
    wait_for(lambda: http_get_json(query)["data"]["result"], 30, "Prometheus to scrape the healthy report")
    time.sleep(3)  # a few healthy rule evaluations: nothing may be delivered for them
    log = stack.base / "alerts.log"

    write_report(stack.report_dir, 1, invariant_ok=False)
    breached = time.time()

    def delivered() -> list[dict[str, Any]]:
        return [e for e in read_alerts_log(log)
                if e["labels"].get("alertname") == "SoakRewardInvariantViolated" and e["status"] == "firing"]
    (entry, *_) = wait_for(delivered, 60, "SoakRewardInvariantViolated in alerts.log")
    latency = entry["received_at"] - breached
    print(f"\nbreach-to-webhook delivery: {latency:.1f}s")

    assert entry["labels"] == {"alertname": "SoakRewardInvariantViolated", "severity": "critical",
                               "gate": "reward_invariant_violated", "run_id": "r1", "topology": "triad",
                               "node": "n1", "job": "soak-exporter", "instance": stack.exporter_target}
    assert entry["annotations"] == {
        "summary": "Reward-asset invariant violated on n1",
        "description": "reward_asset_invariant_status.ok is false on n1. Never exempt.",
        "runbook_url": f"{DEFAULT_RUNBOOK_BASE_URL}#soakrewardinvariantviolated"}
    # Scrape 1s + evaluation 1s + group_wait 5s: generous bound for a loaded 2-core machine.
    assert 0 < latency < 30
    others = {e["labels"].get("alertname") for e in read_alerts_log(log)} - {"SoakRewardInvariantViolated"}
    assert others == set(), f"healthy gates fired: {others}"


def test_a_dead_exporter_trips_the_dead_mans_switch_at_the_webhook(stack: Stack) -> None:
    write_report(stack.report_dir, 0, invariant_ok=True)
    query = f'{stack.prometheus_url}/api/v1/query?query=up{{job="soak-exporter"}}==1'
    wait_for(lambda: http_get_json(query)["data"]["result"], 30, "Prometheus to scrape the exporter")
    assert stack.exporter is not None
    stack.exporter.terminate()
    stack.exporter.wait(10)
    stopped = time.time()

    def delivered() -> list[dict[str, Any]]:
        return [e for e in read_alerts_log(stack.base / "alerts.log")
                if e["labels"].get("alertname") == "SoakExporterDown" and e["status"] == "firing"]
    (entry, *_) = wait_for(delivered, 90, "SoakExporterDown in alerts.log")
    latency = entry["received_at"] - stopped
    print(f"\nexporter-stop-to-webhook delivery: {latency:.1f}s")
    assert entry["labels"] == {"alertname": "SoakExporterDown", "severity": "critical", "gate": "exporter_down"}
    assert entry["annotations"]["runbook_url"] == f"{DEFAULT_RUNBOOK_BASE_URL}#soakexporterdown"
    # The rule's for is 30s: delivery cannot come sooner, and group_wait adds about 5s.
    assert 30 <= latency < 75
