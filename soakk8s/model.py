"""What one rendered soak is: its settings, the names of its objects and their labels.

Object names are DNS-1123 labels built from validated ids (``triad_distributed`` becomes
``triad-distributed``); label values keep the ids as they are (underscores are legal there), so
the exporter's ``topology`` label and the pods' ``agent-world-soak/topology`` label agree.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from alerts.profiles import Profile

APP = "agent-world-soak"
LABEL_PREFIX = "agent-world-soak"
DATA_MOUNT = PurePosixPath("/soak")          # the node pod's data volume (work dirs, reports)
CONFIG_MOUNT = PurePosixPath("/etc/soak")    # the G2 topology key (Secret), copied into the work dir
PID_DIR = PurePosixPath("/run/soak")         # emptyDir: the launcher writes the node's pid here
EXPORTER_PORT = 9465
NODE_CONTAINER = "node"
EXPORTER_CONTAINER = "exporter"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def dns_name(*parts: str) -> str:
    """A DNS-1123 label from validated ids: lower case, ``_`` and ``.`` as ``-``, at most 63."""
    name = "-".join(re.sub(r"[^a-z0-9-]", "-", p.lower()) for p in parts)
    name = re.sub(r"-+", "-", name).strip("-")[:63].rstrip("-")
    if not _DNS_LABEL.match(name):
        raise ValueError(f"cannot make a Kubernetes name of {parts!r}")
    return name


@dataclass(frozen=True)
class K8sSettings:
    profile: Profile
    topology: str
    node_kind: str                  # g1 | g2
    image: str                      # the node container's image (the node binary or the simulator)
    exporter_image: str             # the sidecar's image: agent-world-soak installed (soak-exporter)
    namespace: str
    run_id: str
    duration_secs: float
    seed: int
    node_bin: str | None = None     # the binary inside the image; None: the simulator (python3 -m ...)
    epoch_secs: float = 10
    tick_ms: int = 200
    base_port: int = 5610
    scenario: str = "triad_p2p_bootstrap"
    storage: str = "1Gi"            # each node pod's data volume (PersistentVolumeClaim)
    monitor_labels: dict[str, str] = field(default_factory=dict)  # the operator's selectors
    webhook_url: str = "http://alert-sink.soak.svc:9095/alerts"

    @property
    def prefix(self) -> str:
        return dns_name("soak", self.topology)

    def node_name(self, node: str) -> str:
        """The node's StatefulSet, Service and pod-name stem."""
        return dns_name("soak", self.topology, node)

    def service_host(self, node: str) -> str:
        return f"{self.node_name(node)}.{self.namespace}.svc"

    def labels(self, node: str | None = None, component: str = "node") -> dict[str, str]:
        out = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component,
               f"{LABEL_PREFIX}/run-id": self.run_id, f"{LABEL_PREFIX}/topology": self.topology}
        if node is not None:
            out[f"{LABEL_PREFIX}/node"] = node
        return out

    def node_selector(self, node: str) -> dict[str, str]:
        """Matches exactly the pod of ``node`` (StatefulSets, Services, Chaos Mesh selectors)."""
        return {"app.kubernetes.io/name": APP, f"{LABEL_PREFIX}/topology": self.topology,
                f"{LABEL_PREFIX}/node": node}


def meta(name: str, s: K8sSettings, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "namespace": s.namespace, "labels": labels}
    out.update(extra)
    return out
