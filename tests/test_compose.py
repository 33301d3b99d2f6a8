"""docker-compose.yml, checked without a Docker engine: every mount exists in the repo, every
port binds 127.0.0.1, and the configs it mounts pass the real promtool and amtool."""
from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from soakcore.services import AMTOOL_BIN, PROMTOOL_BIN, find_binary

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
EXPORTER_PORT = 9465  # soak-exporter's default --listen port, documented in docs/dashboards.md


def mounts(service: str) -> dict[PurePosixPath, Path]:
    """Container path -> repo path of a service's bind mounts (named volumes left out)."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
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
    return default


def prometheus_config() -> dict[str, Any]:
    path = host_path("prometheus", container_config("prometheus", "--config.file", "/etc/prometheus/prometheus.yml"))
    return dict(yaml.safe_load(path.read_text()))


def test_compose_runs_prometheus_alertmanager_and_grafana() -> None:
    images = {name: svc["image"].split(":")[0] for name, svc in SERVICES.items()}
    assert images == {"prometheus": "prom/prometheus", "alertmanager": "prom/alertmanager",
                      "grafana": "grafana/grafana"}


def test_every_mounted_host_path_exists_in_the_repo() -> None:
    for service in SERVICES:
        for target, source in mounts(service).items():
            assert source.exists(), f"{service}: mount source {source} for {target} does not exist"
            assert ROOT in source.resolve().parents, f"{service}: {source} is outside the repo"


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


def test_the_mounted_alertmanager_config_passes_amtool() -> None:
    path = host_path("alertmanager", container_config("alertmanager", "--config.file",
                                                      "/etc/alertmanager/alertmanager.yml"))
    assert path == ROOT / "alerts" / "alertmanager.yml"
    check = subprocess.run([find_binary(AMTOOL_BIN), "check-config", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


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
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD")
