"""The rendered core objects against Kubernetes' own schemas (kubernetes-validate --strict), and
the Chaos Mesh and Prometheus Operator objects against the real CRDs
(tests/fixtures/k8s/crds/, with their sources), closed against unknown fields (the API server
would prune a typo silently), plus the webhook-only rules (``soakk8s.checks``), each shown to
reject what the cluster would refuse."""
from __future__ import annotations

import copy
import functools
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from conftest import FIXTURES
from soakk8s import checks, render
from test_k8s_render import CASES, render_case

CORE_KINDS = ("Namespace", "ServiceAccount", "Role", "RoleBinding", "Secret", "Service", "StatefulSet", "ConfigMap")

CRDS = FIXTURES / "k8s" / "crds"
CRD_FILES = {"Workflow": "chaos-mesh/chaos-mesh.org_workflows.yaml",
             "NetworkChaos": "chaos-mesh/chaos-mesh.org_networkchaos.yaml",
             "PodChaos": "chaos-mesh/chaos-mesh.org_podchaos.yaml",
             "TimeChaos": "chaos-mesh/chaos-mesh.org_timechaos.yaml",
             "IOChaos": "chaos-mesh/chaos-mesh.org_iochaos.yaml",
             "PrometheusRule": "prometheus-operator/monitoring.coreos.com_prometheusrules.yaml",
             "PodMonitor": "prometheus-operator/monitoring.coreos.com_podmonitors.yaml"}
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def close(schema: Any) -> Any:
    """Every object that lists its properties refuses others; Go's ``^(?i)...`` pattern becomes
    ``(?i)^...`` (Python wants inline flags first)."""
    if isinstance(schema, dict):
        out = {k: close(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        if isinstance(out.get("pattern"), str) and out["pattern"].startswith("^(?i)"):
            out["pattern"] = "(?i)^" + out["pattern"][len("^(?i)"):]
        return out
    if isinstance(schema, list):
        return [close(v) for v in schema]
    return schema


def test_core_kinds_of_every_case_pass_kubernetes_validate_strict_and_a_typo_does_not(tmp_path: Path) -> None:
    files = []
    for kind, topology in CASES:   # one kubernetes-validate call over every file (it is slowish)
        render.write(render_case(kind, topology), tmp_path / f"{kind}-{topology}")
        files += [str(p) for p in sorted((tmp_path / f"{kind}-{topology}").glob("*.yaml"))
                  if yaml.safe_load(p.read_text())["kind"] in CORE_KINDS]
    sts = next(Path(f) for f in files if "statefulset" in f)
    bad = yaml.safe_load(sts.read_text())
    bad["spec"]["template"]["spec"]["containers"][0]["workingdir"] = bad["spec"]["template"]["spec"]["containers"][0].pop("workingDir")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(bad))
    proc = subprocess.run(["kubernetes-validate", "--strict", "--quiet", *files, str(tmp_path / "typo.yaml")],
                          capture_output=True, text=True, timeout=120)
    report = proc.stdout + proc.stderr
    assert len(files) >= 4 * 6
    assert "typo.yaml" in report and "workingdir" in report, report
    failed = [line for line in report.splitlines() if "ERROR" in line and "typo.yaml" not in line]
    assert not failed, report


@functools.lru_cache(maxsize=None)
def validator(kind: str) -> jsonschema.protocols.Validator:
    crd = yaml.load((CRDS / CRD_FILES[kind]).read_text(), Loader=Loader)
    (version,) = crd["spec"]["versions"]
    assert crd["spec"]["names"]["kind"] == kind
    return jsonschema.Draft7Validator(close(version["schema"]["openAPIV3Schema"]))


def schema_errors(obj: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(obj["kind"]).iter_errors(obj)]


@pytest.fixture(scope="module")
def crd_objects() -> list[dict[str, Any]]:
    out = []
    for kind, topology in CASES:
        r = render_case(kind, topology)
        out += [o for o in r.objects + r.chaos_objects if o["kind"] in CRD_FILES]
    return out


def test_every_rendered_crd_object_passes_its_closed_schema_and_the_webhook_rules(crd_objects: list) -> None:
    kinds = {o["kind"] for o in crd_objects}
    assert kinds == {"Workflow", "PrometheusRule", "PodMonitor"}
    for obj in crd_objects:
        assert schema_errors(obj) == [], obj["metadata"]["name"]
        assert checks.object_errors(obj) == [], obj["metadata"]["name"]


def test_each_embedded_fault_also_passes_its_standalone_kinds_schema(crd_objects: list) -> None:
    seen = set()
    for wf in (o for o in crd_objects if o["kind"] == "Workflow"):
        for t in wf["spec"]["templates"]:
            field = checks.CHAOS_FIELDS.get(t["templateType"])
            if field:
                seen.add(t["templateType"])
                obj = {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": t["templateType"],
                       "metadata": {"name": t["name"], "namespace": "soak"}, "spec": {**t[field], "duration": t["deadline"]}}
                assert schema_errors(obj) == [], t["name"]
                assert checks.object_errors(obj) == [], t["name"]
    assert seen == {"PodChaos", "NetworkChaos", "TimeChaos", "IOChaos"}


def _workflow(crd_objects: list) -> dict[str, Any]:
    return copy.deepcopy(next(o for o in crd_objects if o["kind"] == "Workflow" and "triad-distributed" in
                              o["metadata"]["name"]))


def _fault(wf: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in wf["spec"]["templates"] if t["name"] == name)


def test_a_typo_the_api_server_would_prune_is_refused_by_the_closed_schema(crd_objects: list) -> None:
    wf = _workflow(crd_objects)
    delay = _fault(wf, "ev-delay")["networkChaos"]["delay"]
    delay["latncy"] = delay.pop("latency")
    assert any("latncy" in e for e in schema_errors(wf))
    rule = copy.deepcopy(next(o for o in crd_objects if o["kind"] == "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["recrod"] = "x"
    assert any("recrod" in e for e in schema_errors(rule))
    monitor = copy.deepcopy(next(o for o in crd_objects if o["kind"] == "PodMonitor"))
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "5s"
    assert any("intervall" in e for e in schema_errors(monitor))
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "5 s"   # the schema's duration pattern
    assert any("5 s" in e for e in schema_errors(monitor))


BROKEN = [  # what the webhook refuses and the schema lets through -> a fragment of the error
    ("entry", lambda wf: wf["spec"].update(entry="nothing"), "entry"),
    ("child", lambda wf: _fault(wf, "plan")["children"].append("ev-missing"), "names no template"),
    ("name", lambda wf: _fault(wf, "ev-loss").update(name="Ev_Loss"), "DNS-1123"),
    ("unique", lambda wf: _fault(wf, "ev-loss").update(name="ev-delay"), "not unique"),
    ("suspend", lambda wf: _fault(wf, "ev-loss-wait").pop("deadline"), "needs one"),
    ("deadline", lambda wf: _fault(wf, "ev-loss").update(deadline="15"), "Go duration"),
    ("duration", lambda wf: _fault(wf, "ev-loss")["networkChaos"].update(duration="15s"), "uses deadline"),
    ("direction", lambda wf: _fault(wf, "ev-loss")["networkChaos"].pop("target"), "needs a target"),
    ("rate", lambda wf: _fault(wf, "ev-bandwidth")["networkChaos"]["bandwidth"].update(rate="512 kbit/s"), "unit"),
    ("loss", lambda wf: _fault(wf, "ev-loss")["networkChaos"]["loss"].update(loss="ten"), "number string"),
    ("offset", lambda wf: _fault(wf, "ev-clock-skew")["timeChaos"].update(timeOffset="-1.5"), "Go duration"),
    ("container", lambda wf: _fault(wf, "ev-kill")["podChaos"].pop("containerNames"), "containerNames"),
    ("errno", lambda wf: _fault(wf, "ev-corrupt-delete")["ioChaos"].pop("errno"), "errno"),
    ("type", lambda wf: _fault(wf, "ev-loss").update(templateType="NetChaos"), "unknown"),
]


@pytest.mark.parametrize("what, breaks, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_the_webhook_checks_refuse_what_chaos_mesh_would(what: str, breaks: Any, message: str,
                                                         crd_objects: list) -> None:
    wf = _workflow(crd_objects)
    assert checks.object_errors(wf) == []
    breaks(wf)
    errors = checks.object_errors(wf)
    assert any(message in e for e in errors), errors


def test_go_durations_parse_as_time_ParseDuration_does() -> None:
    good = ["0", "10s", "1.5s", "150ms", "-1500ms", "1m30s", "2h", "300us"]
    bad = ["", "10", "s", "1.5", "10 s", "1d", "--1s"]
    assert [d for d in good if not checks.go_duration_ok(d)] == []
    assert [d for d in bad if checks.go_duration_ok(d)] == []
