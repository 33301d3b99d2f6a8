"""The run's observing stack: exporter, Prometheus, Alertmanager and the alert webhook,
all on free 127.0.0.1 ports with their data inside the run directory."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from alerts import generate
from alerts.generate import render_alertmanager_config
from soakcore.errors import EvaluationError
from soakcore.services import (LOCALHOST, AlertWebhook, Service, free_port, http_get_json, start_alertmanager,
                               start_prometheus, terminate, wait_http_ok)

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "prometheus" / "prometheus.yml.tmpl"
RULES = REPO / "alerts" / "rules.yml"


def run_rules() -> str:
    """The rules this run's Prometheus loads: alerts/rules.yml, with runbook links that open on
    this machine (file:// of the checkout's RUNBOOK.md) while the repository's web address is
    still the placeholder (alerts/generate.py REPOSITORY_WEB_URL)."""
    if ".invalid/" not in generate.DEFAULT_RUNBOOK_BASE_URL:
        return RULES.read_text()
    return generate.render((REPO / "alerts" / "RUNBOOK.md").as_uri())[generate.RULES]


@dataclass
class Stack:
    run_dir: Path
    interval_s: float
    prometheus_url: str | None = None      # given: use an existing Prometheus
    alertmanager_url: str | None = None
    exporter_port: int = field(default_factory=free_port)
    exporter_host: str = LOCALHOST          # --exporter-listen: where the exporter binds
    services: list[Service] = field(default_factory=list)
    webhook: AlertWebhook | None = None
    exporter: subprocess.Popen[bytes] | None = None
    query_error: str | None = None         # why the last query() failed

    @property
    def prometheus_interval(self) -> str:
        """The poll interval as a Prometheus duration (whole units only: 1500ms, not 1.5s)."""
        return f"{round(self.interval_s * 1000)}ms"

    @property
    def exporter_target(self) -> str:
        """Where this run's Prometheus scrapes the exporter (a wildcard bind is reached locally)."""
        host = LOCALHOST if self.exporter_host in ("0.0.0.0", "") else self.exporter_host
        return f"{host}:{self.exporter_port}"

    def start(self) -> None:
        if self.prometheus_url is not None:
            self._use_existing_prometheus()
            return
        if self.alertmanager_url is None:
            self._start_alertmanager()
        (self.run_dir / "rules.yml").write_text(run_rules())
        assert self.alertmanager_url is not None
        config = Template(TEMPLATE.read_text()).substitute(
            interval=self.prometheus_interval, rules_file=str(self.run_dir / "rules.yml"),
            alertmanager=f"'{urllib.parse.urlparse(self.alertmanager_url).netloc}'", exporter=self.exporter_target)
        (self.run_dir / "prometheus.yml").write_text(config)
        prom = start_prometheus(self.run_dir / "prometheus.yml", self.run_dir / "prometheus")
        self.services.append(prom)
        self.prometheus_url = prom.url

    def _start_alertmanager(self) -> None:
        self.webhook = AlertWebhook(self.run_dir / "alerts.log").start()
        am_dir = self.run_dir / "alertmanager"
        am_dir.mkdir(exist_ok=True)
        (am_dir / "alertmanager.yml").write_text(render_alertmanager_config(self.webhook.url))
        am = start_alertmanager(am_dir / "alertmanager.yml", am_dir / "data")
        self.services.append(am)
        self.alertmanager_url = am.url

    def _use_existing_prometheus(self) -> None:
        """An existing Prometheus sends alerts where it is configured to, so no local Alertmanager
        is started; the user must point it at this run's exporter (a fixed --exporter-port helps)."""
        (self.run_dir / "alerts.log").touch()
        print(f"soak-run: using Prometheus at {self.prometheus_url}; it must scrape this run's exporter and load "
              f"the gate rules. Add to its prometheus.yml, then reload it (POST /-/reload):\n"
              f"  rule_files: ['{RULES}']\n"
              f"  scrape_configs:\n    - job_name: soak-exporter\n"
              f"      scrape_interval: {self.prometheus_interval}\n"
              f"      static_configs: [{{targets: ['{self.exporter_target}']}}]\n"
              f"  alerts go to {self.alertmanager_url or 'the Alertmanagers that Prometheus is configured with'}",
              file=sys.stderr)

    def start_exporter(self, run_state: Path, log_path: Path) -> None:
        self.stop_exporter()
        argv = [sys.executable, "-m", "exporter", "--listen", f"{self.exporter_host}:{self.exporter_port}",
                "--run-state", str(run_state)]
        with open(log_path, "ab") as log:
            self.exporter = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
        wait_http_ok(f"http://{self.exporter_target}/metrics", 20.0, self.exporter)

    def wait_queryable(self, run_id: str, topology: str, timeout: float, stop: threading.Event) -> None:
        """Until Prometheus answers with this topology's exporter series: data is really there.
        An interrupt ends the wait at once (the run is then judged on what was collected)."""
        query = f'soak_run_info{{run_id="{run_id}",topology="{topology}"}}'
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.query(query) or stop.is_set():
                return
            stop.wait(0.5)
        raise EvaluationError(f"Prometheus at {self.prometheus_url} has no {query} after {timeout:.0f}s")

    def query(self, promql: str) -> list[dict] | None:  # type: ignore[type-arg]
        """The instant vector; None when Prometheus could not be asked or did not answer like
        Prometheus (``query_error`` then says why): unknown is never an empty answer."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            result = http_get_json(url, timeout=3.0)["data"]["result"]
            if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
                raise TypeError("data.result is not a list of samples")
        except (EvaluationError, KeyError, TypeError) as exc:
            self.query_error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, EvaluationError) else str(exc)
            return None
        self.query_error = None
        return result

    def stop_exporter(self) -> None:
        terminate(self.exporter)

    def stop(self) -> None:
        self.stop_exporter()
        for service in reversed(self.services):
            service.stop()
        if self.webhook is not None:
            self.webhook.stop()
