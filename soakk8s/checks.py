"""Rules the Chaos Mesh admission webhook enforces that the CRD schemas do not carry
(``api/v1alpha1/*_webhook.go``; listed in tests/fixtures/k8s/crds/README.md's source): render
checks its own objects with them before writing, so an object the cluster would refuse is a
bug found offline. Each function returns the errors as ``"<where>: <reason>"`` lines."""
from __future__ import annotations

import re
from typing import Any

# Go time.ParseDuration: a sequence of decimal numbers with units, optional sign; or "0".
_GO_DURATION = re.compile(r"^[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+)$")
_RATE = re.compile(r"^[0-9]+(kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps|tbps|bit)$")   # networkchaos Rate
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
FLOW_TYPES = ("Serial", "Parallel", "Suspend", "Task", "Schedule", "StatusCheck")
CHAOS_FIELDS = {"PodChaos": "podChaos", "NetworkChaos": "networkChaos", "TimeChaos": "timeChaos",
                "IOChaos": "ioChaos", "StressChaos": "stressChaos", "DNSChaos": "dnsChaos",
                "HTTPChaos": "httpChaos", "JVMChaos": "jvmChaos", "KernelChaos": "kernelChaos"}


def go_duration_ok(text: object) -> bool:
    return isinstance(text, str) and bool(_GO_DURATION.match(text))


def _float_str(value: object) -> bool:
    try:
        float(str(value))
        return isinstance(value, str)
    except ValueError:
        return False


def chaos_spec_errors(kind: str, spec: dict[str, Any], where: str) -> list[str]:
    """One chaos spec (standalone or embedded in a workflow template)."""
    errors = []
    mode, value = spec.get("mode"), spec.get("value")
    if mode == "fixed" and not (isinstance(value, str) and value.isdigit() and int(value) > 0):
        errors.append(f"{where}.value: mode fixed needs an integer > 0")
    if mode in ("fixed-percent", "random-max-percent") and not (_float_str(value) and 0 < float(str(value)) <= 100):
        errors.append(f"{where}.value: mode {mode} needs a percentage in (0, 100]")
    if "duration" in spec and not go_duration_ok(spec["duration"]):
        errors.append(f"{where}.duration: {spec['duration']!r} is not a Go duration")
    if kind == "NetworkChaos":
        action = spec.get("action")
        if action != "partition" and spec.get("direction") in ("from", "both") and not spec.get("target"):
            errors.append(f"{where}.direction: {spec['direction']} needs a target")
        rate = spec.get("bandwidth", {}).get("rate")
        if rate is not None and not _RATE.match(str(rate)):
            errors.append(f"{where}.bandwidth.rate: {rate!r} is not an integer with a unit (kbit, mbit, bps ...)")
        for key in ("latency", "jitter"):
            if key in spec.get("delay", {}) and not go_duration_ok(spec["delay"][key]):
                errors.append(f"{where}.delay.{key}: {spec['delay'][key]!r} is not a Go duration")
        for block, keys in (("loss", ("loss", "correlation")), ("delay", ("correlation",)),
                            ("duplicate", ("duplicate", "correlation")), ("corrupt", ("corrupt", "correlation"))):
            for key in keys:
                if key in spec.get(block, {}) and not _float_str(spec[block][key]):
                    errors.append(f"{where}.{block}.{key}: {spec[block][key]!r} is not a number string")
    if kind == "PodChaos" and spec.get("action") == "container-kill" and not spec.get("containerNames"):
        errors.append(f"{where}.containerNames: container-kill needs containerNames")
    if kind == "TimeChaos" and not go_duration_ok(spec.get("timeOffset")):
        errors.append(f"{where}.timeOffset: {spec.get('timeOffset')!r} is not a Go duration")
    if kind == "IOChaos" and spec.get("action") == "fault" and not spec.get("errno"):
        errors.append(f"{where}.errno: action fault needs a non-zero errno")
    return errors


def workflow_errors(spec: dict[str, Any], where: str = "spec") -> list[str]:
    """``workflow_webhook.go``: entry and children exist, names unique DNS-1123 subdomains,
    Suspend has a deadline, a chaos template uses deadline (never its own duration)."""
    errors = []
    templates = spec.get("templates") or []
    names = [t.get("name") for t in templates]
    for i, t in enumerate(templates):
        at, name, kind = f"{where}.templates[{i}]", t.get("name"), t.get("templateType")
        if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            errors.append(f"{at}.name: {name!r} is not a DNS-1123 subdomain")
        if names.count(name) > 1:
            errors.append(f"{at}.name: {name!r} is not unique")
        if kind not in FLOW_TYPES and kind not in CHAOS_FIELDS:
            errors.append(f"{at}.templateType: unknown {kind!r}")
        for child in t.get("children") or []:
            if child not in names:
                errors.append(f"{at}.children: {child!r} names no template")
        if "deadline" in t and not go_duration_ok(t["deadline"]):
            errors.append(f"{at}.deadline: {t['deadline']!r} is not a Go duration")
        if kind == "Suspend" and "deadline" not in t:
            errors.append(f"{at}.deadline: a Suspend template needs one")
        if kind in CHAOS_FIELDS:
            embedded = t.get(CHAOS_FIELDS[kind])
            if not isinstance(embedded, dict):
                errors.append(f"{at}.{CHAOS_FIELDS[kind]}: missing for templateType {kind}")
                continue
            if "duration" in embedded:
                errors.append(f"{at}.{CHAOS_FIELDS[kind]}.duration: a workflow chaos template uses deadline")
            errors += chaos_spec_errors(kind, embedded, f"{at}.{CHAOS_FIELDS[kind]}")
    if spec.get("entry") not in names:
        errors.append(f"{where}.entry: {spec.get('entry')!r} names no template")
    return errors


def object_errors(obj: dict[str, Any]) -> list[str]:
    """The webhook rules of any rendered object (none for kinds without a webhook here)."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    where = f"{kind}/{obj.get('metadata', {}).get('name')}: spec"
    if kind == "Workflow":
        return workflow_errors(spec, where)
    if kind in CHAOS_FIELDS:
        return chaos_spec_errors(str(kind), spec, where)
    return []
