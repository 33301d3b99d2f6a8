"""soak-k8s render: both generations and both topologies with every chaos action render to
objects (validated in tests/test_k8s_crds.py) whose rules are
alerts/rules.yml (promtool check, and the promtool rule tests against them), whose node argv
is the local runner's, whose chaos plays each plan event at its offset, and which match the
goldens under tests/golden/k8s/ (regenerate: SOAK_UPDATE_GOLDEN=1)."""
from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import FIXTURES, ROOT, assert_golden
from alerts.profiles import get_profile
from runner.plan import ChaosEvent, load_plan
from runner.topology import topology_nodes
from alerts.generate import HEADER
from soakcore.services import PROMTOOL_BIN, find_binary
from soakk8s import render
from soakk8s.chaos import go_duration
from soakk8s.model import K8sSettings

GOLDEN = ROOT / "tests" / "golden" / "k8s"
EVERY_ACTION = FIXTURES / "k8s" / "plan-every-action.json"
KEY = bytes(range(32))   # a fixed topology key: goldens stay stable
CASES = [(k, t) for k in ("g1", "g2") for t in ("triad", "triad_distributed")]


def plan_for(kind: str, topology: str) -> Path:
    # G1 triad is one node ("triad"): the repository's every-action plan; the others have three.
    return ROOT / "examples" / "chaos-every-action.json" if (kind, topology) == ("g1", "triad") else EVERY_ACTION


def settings(kind: str, topology: str, **over: Any) -> K8sSettings:
    base = dict(profile=get_profile("soak_smoke"), topology=topology, node_kind=kind, image="registry.example/soak:1",
                exporter_image="registry.example/soak:1", namespace="soak", run_id="20261127-120000",
                duration_secs=300.0, seed=7, epoch_secs=10 if kind == "g1" else 60,
                monitor_labels={"release": "kube-prometheus-stack"})
    return K8sSettings(**{**base, **over})  # type: ignore[arg-type]


def events(kind: str, topology: str) -> tuple[ChaosEvent, ...]:
    return load_plan(plan_for(kind, topology), topology_nodes(kind), 300.0)


def render_case(kind: str, topology: str) -> render.Rendered:
    return render.render(settings(kind, topology), events(kind, topology), (), KEY)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[render.Rendered, Path]]:
    out = {}
    for kind, topology in CASES:
        r = render_case(kind, topology)
        d = tmp_path_factory.mktemp(f"{kind}-{topology}")
        shutil.rmtree(d)
        render.write(r, d)
        out[(kind, topology)] = (r, d)
    return out


def _all(r: render.Rendered) -> list[dict[str, Any]]:
    return r.objects + r.chaos_objects


def test_prometheus_rule_groups_are_those_of_alerts_rules_yml(rendered: dict) -> None:
    checked = yaml.safe_load((ROOT / "alerts" / "rules.yml").read_text())["groups"]
    for r, _ in rendered.values():
        rule = next(o for o in r.objects if o["kind"] == "PrometheusRule")
        assert rule["spec"]["groups"] == checked


def test_promtool_checks_the_rule_groups_and_the_rule_tests_hold_for_them(rendered: dict, tmp_path: Path) -> None:
    r, _ = rendered[("g2", "triad_distributed")]
    groups = next(o for o in r.objects if o["kind"] == "PrometheusRule")["spec"]["groups"]
    rules = tmp_path / "k8s-rules.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000))
    # The extracted file is alerts/rules.yml byte for byte (but its header comment), so every
    # promtool rule test (tests/rules/*.yml, run by tests/test_alerts.py: minutes of CPU) holds
    # for it; one of them is run here against the extracted file itself.
    assert HEADER + rules.read_text() == (ROOT / "alerts" / "rules.yml").read_text()
    promtool = find_binary(PROMTOOL_BIN)
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    source = ROOT / "tests" / "rules" / "process.yml"
    assert "../../alerts/rules.yml" in source.read_text()
    (tmp_path / source.name).write_text(source.read_text().replace("../../alerts/rules.yml", str(rules)))
    proc = subprocess.run([promtool, "test", "rules", str(tmp_path / source.name)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _template(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in workflow["spec"]["templates"] if t["name"] == name)


@pytest.mark.parametrize("kind, topology", CASES)
def test_every_plan_event_has_its_chaos_mesh_object_at_its_offset(kind: str, topology: str, rendered: dict) -> None:
    r, _ = rendered[(kind, topology)]
    nodes = topology_nodes(kind)[topology]
    mine = [e for e in events(kind, topology) if e.applies_to(topology) and e.node in nodes]
    (workflow,) = r.chaos_objects
    entry = _template(workflow, workflow["spec"]["entry"])
    skipped = {s.event.id for s in r.skipped}
    assert len(entry["children"]) == len(mine) - len(skipped) > 0
    for ev in mine:
        if ev.id in skipped:
            continue
        serial = next(_template(workflow, c) for c in entry["children"]
                      if _template(workflow, c)["children"][-1].endswith(ev.id.replace("_", "-")))
        *wait, fault = [_template(workflow, c) for c in serial["children"]]
        assert [w["deadline"] for w in wait] == [go_duration(ev.at_sec)], ev.id
        assert wait[0]["templateType"] == "Suspend"
        expected = {"restart": "PodChaos", "kill": "PodChaos", "pause": "NetworkChaos", "disconnect": "NetworkChaos",
                    "partition": "NetworkChaos", "loss": "NetworkChaos", "delay": "NetworkChaos",
                    "bandwidth": "NetworkChaos", "clock_skew": "TimeChaos", "corrupt_store": "IOChaos"}[ev.action]
        assert fault["templateType"] == expected, ev.id
        secs = {"restart": max(ev.down_secs, 1), "kill": max(ev.down_secs, 1),
                "corrupt_store": 300.0 - ev.at_sec}.get(ev.action, ev.duration_secs)
        assert fault["deadline"] == go_duration(secs), ev.id
        spec = fault[{"PodChaos": "podChaos", "NetworkChaos": "networkChaos", "TimeChaos": "timeChaos", "IOChaos": "ioChaos"}[expected]]
        assert spec["selector"]["expressionSelectors"][0]["values"] == [ev.node]
    # What is skipped, and only that: application-level pressure; G1 triad's loopback network faults.
    expect_skipped = {e.id for e in mine if e.action == "challenge_pressure"}
    if (kind, topology) == ("g1", "triad"):
        expect_skipped |= {e.id for e in mine if e.action in ("pause", "disconnect")}
    assert skipped == expect_skipped


def test_partition_targets_only_its_peers_in_its_direction(rendered: dict) -> None:
    r, _ = rendered[("g2", "triad_distributed")]
    spec = _template(r.chaos_objects[0], "ev-partition")["networkChaos"]
    assert spec["action"] == "partition" and spec["direction"] == "to"
    assert spec["target"]["selector"]["expressionSelectors"][0]["values"] == ["storage"]
    assert spec["selector"]["expressionSelectors"][0]["values"] == ["observer"]


def _node_argv(r: render.Rendered, node: str) -> list[str]:
    sts = next(o for o in r.objects if o["kind"] == "StatefulSet" and o["metadata"]["name"].endswith(node))
    return sts["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize("kind", ["g1", "g2"])
def test_node_argv_is_the_local_runners_with_service_names_for_peers(kind: str, rendered: dict) -> None:
    from runner.topology import LaunchSettings, node_specs
    r, _ = rendered[(kind, "triad_distributed")]
    s = settings(kind, "triad_distributed")
    local = LaunchSettings(s.scenario, "0.0.0.0", s.base_port, s.tick_ms, s.epoch_secs, None, s.seed, False, {}, kind,
                           python="python3")
    for spec in node_specs("triad_distributed", 0, s.run_id, Path("/soak/triad_distributed"), local):
        argv = _node_argv(r, spec.node)
        # The one difference: where the local argv names a peer at the bind host, k8s names its Service.
        hosts = {n: s.service_host(n) for n in ("sequencer", "storage", "observer") if n != spec.node}
        expected = []
        for i, item in enumerate(spec.argv):
            flag = spec.argv[i - 1] if i else ""
            peer = next((n for n in hosts if flag in (f"--triad-{n}-gossip",)), None)
            if flag in ("--node-gossip-peer", "--replication-network-peer") or peer:
                port = item.rsplit(":", 1)[-1] if ":" in item else ""
                owner = peer or next(n for n in hosts if item.endswith(_port_of(r, n, flag)))
                item = item.replace("0.0.0.0", hosts[owner])
                assert port or "/tcp/" in item
            expected.append(item)
        assert argv == expected


def _port_of(r: render.Rendered, node: str, flag: str) -> str:
    svc = next(o for o in r.objects if o["kind"] == "Service" and o["metadata"]["name"].endswith(node))
    name = "gossip" if "gossip" in flag else "replication"
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == name)
    return f":{port}" if "gossip" in flag else f"/tcp/{port}"


def _golden_view(obj: dict[str, Any]) -> dict[str, Any]:
    """Generated elsewhere and changing with the gates (rules, dashboards, routing), or with the
    machine (the key's public half needs ``cryptography``): names only."""
    obj = copy.deepcopy(obj)
    if obj["kind"] == "PrometheusRule":
        obj["spec"]["groups"] = [g["name"] for g in obj["spec"]["groups"]]
    if obj["kind"] == "Secret" or obj["metadata"]["name"] == "soak-dashboards":
        for key in ("data", "stringData"):
            if key in obj:
                obj[key] = sorted(obj[key])
    return obj


@pytest.mark.parametrize("kind, topology", CASES)
def test_every_action_plan_renders_to_the_golden_objects(kind: str, topology: str, rendered: dict) -> None:
    r, _ = rendered[(kind, topology)]
    text = "".join(f"---\n# {render.file_name(i, o)}\n" + yaml.safe_dump(_golden_view(o), sort_keys=False, width=1000)
                   for group in (r.objects, r.chaos_objects) for i, o in enumerate(group, 1))
    assert_golden(GOLDEN / f"{kind}-{topology}.yaml", text)
