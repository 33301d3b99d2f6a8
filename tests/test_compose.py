"""docker-compose.yml, checked without a Docker engine: valid against the Compose
Specification's schema (what `docker compose config` checks) after interpolation, every mount
exists in the repo, every port binds 127.0.0.1, no default admin password, healthchecks, the
configs it mounts pass the real promtool and amtool, Alertmanager's receiver comes from the
environment, and the default receiver (alert-log) logs what it is sent."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

from soakcore.services import AMTOOL_BIN, PROMTOOL_BIN, find_binary, free_port

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
# The port of `soak-run --exporter-listen HOST:PORT` that the compose Prometheus scrapes
# (README, prometheus/compose-prometheus.yml).
EXPORTER_PORT = 9464
SCHEMA = json.loads((ROOT / "tests" / "fixtures" / "compose-spec.json").read_text())
ENV = {"GRAFANA_ADMIN_PASSWORD": "s3cret-from-env"}


class Unset(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: ``$$``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}`` and ``$VAR`` in every string of the file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(5)
        op, arg = m.group(2), m.group(3) or ""
        have = env.get(name)
        empty = have is None or (have == "" and op and op.startswith(":"))
        if op in (":-", "-"):
            return arg if empty else have  # type: ignore[return-value]
        if op in (":?", "?"):
            if empty:
                raise Unset(f"{name}: {arg}")
            return have  # type: ignore[return-value]
        return have or ""
    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:[^}])*))?()\}|\$([A-Za-z_][A-Za-z0-9_]*)", one, value)


def mounts(service: str) -> dict[PurePosixPath, Path]:
    """Container path -> repo path of a service's bind mounts (named volumes and the
    container-written ``.tmp/`` folders left out)."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./") and not source.startswith("./.tmp/"):
            out[PurePosixPath(target)] = ROOT / source
    return out


def host_path(service: str, container_path: str) -> Path:
    """The repo file a service sees at ``container_path``, through the longest matching mount."""
    path = PurePosixPath(container_path)
    for target, source in sorted(mounts(service).items(), key=lambda m: -len(m[0].parts)):
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{service}: {container_path} is not inside any bind mount")


def container_config(service: str, flag: str, default: str) -> str:
    for arg in SERVICES[service].get("command", []):
        if arg.startswith(f"{flag}="):
            return str(arg.split("=", 1)[1])
        if f" {flag}=" in arg:   # a shell command line
            return str(arg.split(f" {flag}=", 1)[1].split()[0])
    return default


def prometheus_config() -> dict[str, Any]:
    path = host_path("prometheus", container_config("prometheus", "--config.file", "/etc/prometheus/prometheus.yml"))
    return dict(yaml.safe_load(path.read_text()))


def test_compose_runs_prometheus_alertmanager_grafana_and_the_alert_log() -> None:
    images = {name: svc["image"].split(":")[0] for name, svc in SERVICES.items()}
    assert images == {"prometheus": "prom/prometheus", "alertmanager": "prom/alertmanager",
                      "grafana": "grafana/grafana", "alert-log": "python"}
    major = int(SERVICES["grafana"]["image"].split(":")[1].split(".")[0])
    assert major >= 12, "a current Grafana"


def test_the_file_is_valid_compose_once_interpolated_and_a_broken_one_is_not() -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    doc = interpolate(COMPOSE, ENV)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []
    # The schema really checks: a misspelled key or a wrong type is refused.
    broken = json.loads(json.dumps(doc))
    broken["services"]["grafana"]["ports"] = "127.0.0.1:3000:3000"
    broken["services"]["prometheus"]["volume"] = []
    assert len(list(validator.iter_errors(broken))) >= 2


def test_grafana_has_no_default_admin_password() -> None:
    with pytest.raises(Unset, match="GRAFANA_ADMIN_PASSWORD"):
        interpolate(COMPOSE, {})
    with pytest.raises(Unset):
        interpolate(COMPOSE, {"GRAFANA_ADMIN_PASSWORD": ""})
    env = interpolate(COMPOSE, ENV)["services"]["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == ENV["GRAFANA_ADMIN_PASSWORD"]
    assert "admin}" not in TEXT and ":-admin" not in TEXT


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies() -> None:
    for name, svc in SERVICES.items():
        check = svc.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*?)['\s\]\)]", " ".join(check["test"]) + " ")
        assert url, f"{name}: the healthcheck asks no local HTTP endpoint"
        published = {p.rsplit(":", 1)[1] for p in svc["ports"]}
        assert url.group(1) in published, f"{name}: healthcheck port {url.group(1)} is not the service's"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"} and "healthcheck" in SERVICES[dep], (name, dep)


def test_every_mounted_host_path_exists_in_the_repo() -> None:
    for service in SERVICES:
        for volume in SERVICES[service].get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./.tmp/"):
                # Written by the container (alert-log's log): created at start, ignored by git.
                assert not volume.endswith(":ro"), volume
                assert ".tmp/" in (ROOT / ".gitignore").read_text()
                continue
            if source.startswith("./"):
                path = ROOT / source
                assert path.exists(), f"{service}: mount source {path} for {target} does not exist"
                assert ROOT in path.resolve().parents, f"{service}: {path} is outside the repo"


def test_every_published_port_binds_localhost_only() -> None:
    published = [(name, port) for name, svc in SERVICES.items() for port in svc.get("ports", [])]
    assert {name for name, _ in published} == set(SERVICES)
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_the_compose_prometheus_config_and_its_rules_pass_promtool(tmp_path: Path) -> None:
    config = prometheus_config()
    rule_files = [host_path("prometheus", rule) for rule in config["rule_files"]]
    assert rule_files == [ROOT / "alerts" / "rules.yml"], "compose Prometheus must load alerts/rules.yml"
    # promtool resolves rule files on this machine: point them at the repo copies it mounts.
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump({**config, "rule_files": [str(p) for p in rule_files]}))
    check = subprocess.run([find_binary(PROMTOOL_BIN), "check", "config", str(local)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"Checking {rule_files[0]}" in check.stdout, "promtool did not check the rule file"


def test_compose_prometheus_scrapes_the_host_exporter_as_job_soak_exporter() -> None:
    jobs = {job["job_name"]: job for job in prometheus_config()["scrape_configs"]}
    assert list(jobs) == ["soak-exporter"]
    targets = [t for sc in jobs["soak-exporter"]["static_configs"] for t in sc["targets"]]
    assert targets == [f"host.docker.internal:{EXPORTER_PORT}"]
    assert "host.docker.internal:host-gateway" in SERVICES["prometheus"]["extra_hosts"]


def test_compose_prometheus_sends_alerts_to_the_compose_alertmanager() -> None:
    targets = [t for am in prometheus_config()["alerting"]["alertmanagers"]
               for sc in am["static_configs"] for t in sc["targets"]]
    container_ports = {p.rsplit(":", 1)[1] for p in SERVICES["alertmanager"]["ports"]}
    assert [t.split(":") for t in targets] == [["alertmanager", p] for p in sorted(container_ports)]


def alertmanager_start_script(tmp_path: Path, env: dict[str, str]) -> tuple[Path, str]:
    """Run the part of Alertmanager's start command that writes its config, on this machine
    (container paths mapped to the repo and ``tmp_path``); (the config it wrote, the rest)."""
    svc = interpolate(SERVICES["alertmanager"], env)
    assert svc["entrypoint"] == ["/bin/sh", "-c"]
    script = svc["command"][0]
    render, _, start = script.partition("exec ")
    render, start = render.strip().removesuffix("&&"), "exec " + start
    render = render.replace("/etc/alertmanager/alertmanager.yml", str(host_path(
        "alertmanager", "/etc/alertmanager/alertmanager.yml"))).replace("/tmp/alertmanager.yml",
                                                                           str(tmp_path / "am.yml"))
    done = subprocess.run(["/bin/sh", "-c", render], env={**os.environ, **svc["environment"]}, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    return tmp_path / "am.yml", start


@pytest.mark.parametrize("webhook", [None, "https://hooks.example.test/soak?token=a&b=1",
                                     "http://127.0.0.1:8080/a\\b/c#frag"])
def test_alertmanager_delivers_to_the_webhook_from_the_environment(tmp_path: Path, webhook: str | None) -> None:
    env = {**ENV, **({"ALERT_WEBHOOK_URL": webhook} if webhook else {})}
    config, start = alertmanager_start_script(tmp_path, env)
    assert "exec /bin/alertmanager --config.file=/tmp/alertmanager.yml" in start
    check = subprocess.run([find_binary(AMTOOL_BIN), "check-config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    receivers = {r["name"]: r for r in yaml.safe_load(config.read_text())["receivers"]}
    (hook,) = receivers["soak-webhook"]["webhook_configs"]
    port = SERVICES["alert-log"]["environment"]["ALERT_LOG_LISTEN"].rsplit(":", 1)[1]
    assert hook["url"] == (webhook or f"http://alert-log:{port}/alerts")


def test_the_alert_log_service_writes_each_alert_as_a_line_and_as_json(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "alerts.log"
    proc = subprocess.Popen([sys.executable, str(host_path("alert-log", SERVICES["alert-log"]["command"][1]))],
                            env={**os.environ, "ALERT_LOG": str(log), "ALERT_LOG_LISTEN": f"127.0.0.1:{port}"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
                break
            except OSError:
                time.sleep(0.05)
        notification = {"status": "firing", "alerts": [{
            "status": "firing", "labels": {"alertname": "SoakConsensusStalled", "severity": "critical",
                                           "run_id": "r1", "topology": "triad"},
            "annotations": {"summary": "No committed-height progress in triad", "runbook_url": "https://x/#y"},
            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}]}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/alerts", json.dumps(notification).encode(),
                                         {"Content-Type": "application/json"})
        assert urllib.request.urlopen(request, timeout=5).status == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    (line,) = out.splitlines()
    assert "FIRING" in line and "SoakConsensusStalled [critical] run=r1 topology=triad" in line
    assert "No committed-height progress in triad" in line
    (entry,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert entry["labels"]["alertname"] == "SoakConsensusStalled" and entry["status"] == "firing"


def test_the_grafana_datasource_points_at_the_compose_prometheus_service() -> None:
    provisioning = host_path("grafana", "/etc/grafana/provisioning")
    docs = [yaml.safe_load(p.read_text()) for p in sorted((provisioning / "datasources").glob("*.yml"))]
    sources = [ds for doc in docs for ds in doc["datasources"]]
    assert len(sources) == 1 and sources[0]["type"] == "prometheus" and sources[0]["isDefault"]
    container_port = SERVICES["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert sources[0]["url"] == f"http://prometheus:{container_port}"


def test_grafana_provisions_the_dashboards_from_where_they_are_mounted() -> None:
    provisioning = host_path("grafana", "/etc/grafana/provisioning")
    docs = [yaml.safe_load(p.read_text()) for p in sorted((provisioning / "dashboards").glob("*.yml"))]
    paths = [prov["options"]["path"] for doc in docs for prov in doc["providers"]]
    assert paths, "no dashboard provider"
    for path in paths:
        assert host_path("grafana", path) == ROOT / "grafana" / "dashboards"
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path("grafana", home).is_file()


def test_anonymous_grafana_users_can_only_view_and_the_admin_password_comes_from_env() -> None:
    grafana_env = SERVICES["grafana"]["environment"]
    assert grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
