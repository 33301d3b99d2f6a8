"""The topology as workloads: one StatefulSet (one pod) per node process, a Service per node
for gossip (UDP), replication (TCP) and status (HTTP), the G2 topology key as a Secret.

The node argv comes from ``runner.topology.node_specs``, the code the local runner launches
with: only the hosts differ (the node binds 0.0.0.0 and reaches a peer at its Service name;
``soakk8s.launch`` turns those names into the Services' cluster IPs before it execs the node,
because both generations parse peer addresses as IP literals). Each pod also runs the
exporter as a sidecar (shared process namespace: it reads the node's /proc through the pid
the launcher writes) and keeps its work directory on a PersistentVolumeClaim, so a killed pod
comes back with its store and reports as a relaunched local process does.
"""
from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any

from runner import g2
from runner.topology import LaunchSettings, NodeSpec, node_specs
from soakk8s.model import (CONFIG_MOUNT, DATA_MOUNT, EXPORTER_CONTAINER, EXPORTER_PORT, NODE_CONTAINER, PID_DIR,
                           K8sSettings, meta)

FAULTS_MOUNT = PurePosixPath("/etc/soak-faults")
FAULTS_FILE = "faults.json"
FAULT_READER = "soak-fault-reader"   # the sidecar's ServiceAccount: get on Chaos Mesh workflows

PYTHON = "python3"   # the interpreter inside the images
BIND_ALL = "0.0.0.0"
TERMINATION_GRACE_SECS = 10


def launch_settings(s: K8sSettings, nodes: tuple[str, ...]) -> LaunchSettings:
    return LaunchSettings(s.scenario, BIND_ALL, s.base_port, s.tick_ms, s.epoch_secs, s.node_bin, s.seed,
                          status_endpoints=False, extra_args={}, node_kind=s.node_kind,
                          peer_hosts={n: s.service_host(n) for n in nodes}, python=PYTHON)


def specs(s: K8sSettings, nodes: tuple[str, ...]) -> tuple[NodeSpec, ...]:
    """The node specs of the topology, as the runner builds them, under the pod's data volume."""
    return node_specs(s.topology, 0, s.run_id, Path(DATA_MOUNT / s.topology), launch_settings(s, nodes))


def _status_port(spec: NodeSpec) -> int | None:
    return urllib.parse.urlparse(spec.status_url).port if spec.status_url else None


def _pidfile(spec: NodeSpec) -> str:
    return str(PID_DIR / f"{spec.node}.pid")


def _launcher(spec: NodeSpec, s: K8sSettings, nodes: tuple[str, ...], prepare: bool) -> list[str]:
    argv = [PYTHON, "-m", "soakk8s.launch", "--work-dir", str(spec.work_dir), "--report-dir", str(spec.report_dir)]
    if s.node_kind == "g2":
        argv += ["--key", str(CONFIG_MOUNT / g2.CONFIG_FILE)]
    if prepare:
        return [*argv, "--prepare"]
    argv += ["--pidfile", _pidfile(spec)]
    for n in nodes:
        if n != spec.node:
            argv += ["--resolve", s.service_host(n)]
    return [*argv, "--"]


def _exporter(spec: NodeSpec, s: K8sSettings) -> dict[str, Any]:
    """soak-exporter behind ``soakk8s.faultstate``, which writes its run-state: the node and the
    windows of the faults Chaos Mesh makes on it, as the local runner does."""
    argv = [PYTHON, "-m", "soakk8s.faultstate", "--run-id", s.run_id, "--topology", s.topology,
            "--profile", s.profile.name, "--scenario", s.scenario, "--node", spec.node, "--role", spec.role,
            "--node-id", spec.node_id, "--namespace", s.namespace, "--report-dir", str(spec.report_dir),
            "--work-dir", str(spec.work_dir), "--pidfile", _pidfile(spec), "--faults", str(FAULTS_MOUNT / FAULTS_FILE),
            "--run-state", str(PID_DIR / "run_state.json")]
    port = _status_port(spec)
    if port is not None:
        argv += ["--status-url", f"http://127.0.0.1:{port}/v1/chain/status"]
    if spec.critical:
        argv.append("--critical")
    argv += ["--", "--listen", f"{BIND_ALL}:{EXPORTER_PORT}"]
    return {"name": EXPORTER_CONTAINER, "image": s.exporter_image, "command": argv,
            "ports": [{"name": "metrics", "containerPort": EXPORTER_PORT, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": 10},
            "volumeMounts": [{"name": "data", "mountPath": str(DATA_MOUNT)},
                             {"name": "run", "mountPath": str(PID_DIR)},
                             {"name": "faults", "mountPath": str(FAULTS_MOUNT), "readOnly": True}]}


def _ports(spec: NodeSpec) -> list[dict[str, Any]]:
    """Named ports of the node: gossip UDP, replication TCP, status HTTP."""
    out = [{"name": f"gossip-{i}" if len(spec.gossip_ports) > 1 else "gossip", "port": p, "protocol": "UDP"}
           for i, p in enumerate(spec.gossip_ports)]
    out += [{"name": f"replication-{i}" if len(spec.replication_ports) > 1 else "replication", "port": p,
             "protocol": "TCP"} for i, p in enumerate(spec.replication_ports)]
    port = _status_port(spec)
    if port is not None:
        out.append({"name": "status", "port": port, "protocol": "TCP"})
    return out


def statefulset(spec: NodeSpec, s: K8sSettings, nodes: tuple[str, ...]) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [{"name": "data", "mountPath": str(DATA_MOUNT)}, {"name": "run", "mountPath": str(PID_DIR)}]
    volumes: list[dict[str, Any]] = [{"name": "run", "emptyDir": {}},
                                     {"name": "faults", "configMap": {"name": faults_name(s)}}]
    if s.node_kind == "g2":
        mounts.append({"name": "topology-key", "mountPath": str(CONFIG_MOUNT), "readOnly": True})
        volumes.append({"name": "topology-key", "secret": {"secretName": secret_name(s), "defaultMode": 0o400}})
    node: dict[str, Any] = {
        "name": NODE_CONTAINER, "image": s.image, "command": _launcher(spec, s, nodes, prepare=False),
        "args": list(spec.argv), "workingDir": str(spec.work_dir), "volumeMounts": mounts,
        "ports": [{"name": p["name"], "containerPort": p["port"], "protocol": p["protocol"]} for p in _ports(spec)]}
    port = _status_port(spec)
    if port is not None and spec.health_url:
        node["readinessProbe"] = {"httpGet": {"path": urllib.parse.urlparse(spec.health_url).path, "port": port},
                                  "periodSeconds": 5}
    prepare = {"name": "prepare", "image": s.exporter_image, "command": _launcher(spec, s, nodes, prepare=True),
               "volumeMounts": mounts}
    name = s.node_name(spec.node)
    labels = s.labels(spec.node)
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta(name, s, labels),
            "spec": {"serviceName": name, "replicas": 1, "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": s.node_selector(spec.node)},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"shareProcessNamespace": True, "serviceAccountName": FAULT_READER,
                                           "terminationGracePeriodSeconds": TERMINATION_GRACE_SECS,
                                           "initContainers": [prepare], "containers": [node, _exporter(spec, s)],
                                           "volumes": volumes}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                         "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": s.storage}}}}]}}


def service(spec: NodeSpec, s: K8sSettings) -> dict[str, Any]:
    """A stable address (cluster IP) for the node's ports: peers resolve it once at launch."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": meta(s.node_name(spec.node), s, s.labels(spec.node)),
            "spec": {"selector": s.node_selector(spec.node),
                     "ports": [{**p, "targetPort": p["port"]} for p in _ports(spec)]}}


def secret_name(s: K8sSettings) -> str:
    return f"{s.prefix}-config"


def key_secret(s: K8sSettings, private_key: bytes) -> dict[str, Any]:
    """The topology's one ``config.toml`` (runner.g2): every G2 node derives every validator's key from it."""
    text = g2.root_key_text(private_key)
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta(secret_name(s), s, s.labels()),
            "data": {g2.CONFIG_FILE: base64.b64encode(text.encode()).decode()}}


def faults_name(s: K8sSettings) -> str:
    return f"{s.prefix}-faults"


def faults_config(s: K8sSettings, faults: list[dict[str, Any]]) -> dict[str, Any]:
    """The planned faults of the topology (``soakk8s.faultstate.PlannedFault``), for the sidecars."""
    text = "[\n" + ",\n".join(json.dumps(f) for f in faults) + ("\n" if faults else "") + "]\n"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(faults_name(s), s, s.labels(component="chaos")),
            "data": {FAULTS_FILE: text}}


def fault_reader(s: K8sSettings) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding: the sidecars read their workflow's start time."""
    labels = {"app.kubernetes.io/name": "agent-world-soak", "app.kubernetes.io/component": "faultstate"}
    ref = {"kind": "ServiceAccount", "name": FAULT_READER, "namespace": s.namespace}
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(FAULT_READER, s, labels)},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(FAULT_READER, s, labels),
             "rules": [{"apiGroups": ["chaos-mesh.org"], "resources": ["workflows"], "verbs": ["get"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(FAULT_READER, s, labels),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FAULT_READER},
             "subjects": [ref]}]
