"""soak-run against an existing Prometheus (--prometheus-url): no local Prometheus or
Alertmanager is started, the user is told the scrape job, and the verdict uses that server."""
from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT
from soakcore.services import Service, free_port, http_get_json, start_prometheus
from soakrun import soak_ports, start_soak

CONFIG = """global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ['{rules}']
scrape_configs:
  - job_name: soak-exporter
    static_configs: [{{targets: ['127.0.0.1:{port}']}}]
"""


@pytest.fixture
def existing_prometheus(tmp_path: Path) -> Iterator[tuple[Service, int]]:
    port = free_port()
    config = tmp_path / "existing" / "prometheus.yml"
    config.parent.mkdir()
    config.write_text(CONFIG.format(rules=ROOT / "alerts" / "rules.yml", port=port))
    prom = start_prometheus(config, tmp_path / "existing" / "data")
    try:
        yield prom, port
    finally:
        prom.stop()


def test_an_existing_prometheus_is_used_and_the_user_told_how_to_scrape_the_exporter(
        tmp_path: Path, existing_prometheus: tuple[Service, int]) -> None:
    prom, port = existing_prometheus
    # The drain (judging breaches that begin at the window's end) is not what this test is about.
    run = start_soak("soak", tmp_path, soak_ports(), ["--topology", "triad", "--duration-secs", "12",
                                                   "--prometheus-url", prom.url, "--exporter-port", str(port),
                                                   "--drain-secs", "2", "--allow-weak-gates"])
    try:
        code = run.wait(120)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    log = (run.out_dir / "runner.log").read_text()
    assert code in (0, 1), log[-3000:]
    assert "job_name: soak-exporter" in log and f"127.0.0.1:{port}" in log
    d = run.run_dir
    assert not (d / "prometheus.yml").exists() and not (d / "alertmanager").exists(), "no local stack"
    top = run.summary()["topologies"][0]
    assert top["report_samples"] > 0, "the verdict must come from the existing Prometheus' data"
    query = urllib.parse.urlencode({"query": f'count_over_time(soak_run_info{{run_id="{d.name}"}}[5m])'})
    series = http_get_json(f"{prom.url}/api/v1/query?{query}")
    assert series["data"]["result"], "the existing Prometheus scraped this run's exporter"


def test_the_runs_rules_link_runbooks_that_open_on_this_machine() -> None:
    import re

    from runner.stack import run_rules
    links = set(re.findall(r"runbook_url: (\S+)", run_rules()))
    assert links
    for link in links:
        url = urllib.parse.urlparse(link)
        assert url.scheme in ("file", "https"), link
        if url.scheme == "file":
            text = Path(urllib.parse.unquote(url.path)).read_text()
            assert f'<a id="{url.fragment}"></a>' in text, link
