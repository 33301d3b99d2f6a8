"""The chaos plan as Chaos Mesh objects: each event through its row of ``soakcore.actions``
(whose ``chaos_mesh`` names the counterpart), played by one ``Workflow`` at the plan's offsets
(``Serial``: a ``Suspend`` of ``at_sec``, then the fault with ``deadline`` = its window).
Continuous chaos is the seed's event sequence (``runner.plan.continuous_events``, the same
MINSTD picks as a local run) played the same way. Not a ``Schedule``: a Schedule creates the
same object at every tick, and its first tick comes one interval after it is created, while
the seed picks another node and action every time; only the concrete sequence reproduces it.

What has no counterpart (docs/kubernetes.md):
- ``pause``: Chaos Mesh cannot SIGSTOP a process. It is played as a partition of the node from
  every other node of the topology for ``duration_secs``: like a stopped process, the node is
  silent to its peers and keeps its memory and its store; unlike one, it keeps ticking.
- ``challenge_pressure`` is a file the simulator reads: no Chaos Mesh object.
- network faults of ``triad`` (G1): its three nodes are one process talking over loopback,
  which Chaos Mesh's tc/iptables rules on the pod's interface never see.
These events are listed as skipped, with the reason, and the workflow plays the rest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from runner.plan import ChaosEvent
from soakk8s.model import DATA_MOUNT, LABEL_PREFIX, NODE_CONTAINER, K8sSettings, dns_name, meta

API = "chaos-mesh.org/v1alpha1"
RESTART_GRACE_SECS = 5      # restart is SIGTERM: the pod gets this long before SIGKILL
MIN_DEADLINE_SECS = 1.0     # a one-shot fault (pod-kill) still needs a positive deadline
# corrupt_store: the node's store under its work dir (G1 node-distfs/<id>, G2 chain-runtime/<id>)
STORE_PATH = "output/*/*/store/**/*"
EMBEDDED = {"PodChaos": "podChaos", "NetworkChaos": "networkChaos", "TimeChaos": "timeChaos", "IOChaos": "ioChaos"}


def go_duration(secs: float) -> str:
    """A Go ``time.ParseDuration`` string: whole seconds as ``12s``, else milliseconds."""
    return f"{int(secs)}s" if secs == int(secs) else f"{round(secs * 1000)}ms"


@dataclass(frozen=True)
class Fault:
    """One event as Chaos Mesh: the kind, its spec (without duration) and how long it lasts."""
    event: ChaosEvent
    kind: str
    spec: dict[str, Any]
    secs: float
    note: str = ""


@dataclass(frozen=True)
class Skipped:
    event: ChaosEvent
    reason: str


class Mapper:
    """Turns the events of one topology into Faults; ``nodes`` are the topology's node labels."""

    def __init__(self, s: K8sSettings, nodes: tuple[str, ...], work_dir: Callable[[str], str]) -> None:
        self.s, self.nodes, self.work_dir = s, nodes, work_dir

    def selector(self, nodes: tuple[str, ...]) -> dict[str, Any]:
        base = {k: v for k, v in self.s.node_selector(nodes[0]).items() if not k.endswith("/node")}
        return {"namespaces": [self.s.namespace], "labelSelectors": base,
                "expressionSelectors": [{"key": f"{LABEL_PREFIX}/node", "operator": "In", "values": list(nodes)}]}

    def _pod(self, ev: ChaosEvent) -> dict[str, Any]:
        return {"mode": "all", "selector": self.selector((ev.node,))}

    def _network(self, ev: ChaosEvent, action: str, peers: tuple[str, ...] | None = None,
                 direction: str = "both", **extra: Any) -> Fault | Skipped:
        peers = peers or tuple(n for n in self.nodes if n != ev.node)
        if not peers:
            return Skipped(ev, f"{ev.node} has no peer pod: the {self.s.topology} nodes are one process talking "
                               "over loopback, which Chaos Mesh does not reach")
        spec = {"action": action, **self._pod(ev), "direction": direction,
                "target": {"mode": "all", "selector": self.selector(peers)}, **extra}
        return Fault(ev, "NetworkChaos", spec, ev.duration_secs)

    def fault(self, ev: ChaosEvent) -> Fault | Skipped:
        p = dict(ev.params)
        down = max(ev.down_secs, MIN_DEADLINE_SECS)
        if ev.action == "restart":
            return Fault(ev, "PodChaos", {"action": "pod-kill", **self._pod(ev), "gracePeriod": RESTART_GRACE_SECS},
                         down, "the StatefulSet recreates the pod at once: down_secs is not kept")
        if ev.action == "kill":
            return Fault(ev, "PodChaos", {"action": "container-kill", **self._pod(ev),
                                          "containerNames": [NODE_CONTAINER]},
                         down, "the kubelet restarts the container (with its back-off): down_secs is not kept")
        if ev.action in ("disconnect", "pause"):
            out = self._network(ev, "partition")
            if ev.action == "pause" and isinstance(out, Fault):
                return Fault(ev, out.kind, out.spec, out.secs, "no SIGSTOP in Chaos Mesh: the node is partitioned "
                             "from every peer instead (silent, state kept, but still running)")
            return out
        if ev.action == "partition":
            return self._network(ev, "partition", p.get("peers"), p.get("direction", "both"))
        if ev.action == "loss":
            return self._network(ev, "loss", loss={"loss": f"{p.get('percent', 10):g}", "correlation": "0"})
        if ev.action == "delay":
            # As the local action: what the node sends is held back (one way, to every peer).
            return self._network(ev, "delay", direction="to", delay={"latency": go_duration(p.get("delay_ms", 100) / 1000),
                                                     "jitter": go_duration(p.get("jitter_ms", 0) / 1000),
                                                     "correlation": "0"})
        if ev.action == "bandwidth":
            rate = int(p.get("rate_kbit", 1024))
            bucket = max(1, min(rate * 125, 2**31 - 1))   # one second of the rate, as the local bucket
            return self._network(ev, "bandwidth", bandwidth={"rate": f"{rate}kbit", "limit": bucket,
                                                             "buffer": bucket})
        if ev.action == "clock_skew":
            return Fault(ev, "TimeChaos", {**self._pod(ev), "timeOffset": go_duration(p.get("offset_ms", 2000) / 1000),
                                           "containerNames": [NODE_CONTAINER]}, ev.duration_secs)
        if ev.action == "corrupt_store":
            return self._corrupt(ev, p.get("mode", "flip"))
        return Skipped(ev, f"{ev.action} has no Chaos Mesh counterpart (application-level)")

    def _corrupt(self, ev: ChaosEvent, mode: str) -> Fault:
        """Never healed locally: the IOChaos lasts to the end of the run. It damages reads of the
        store while it lasts (``blobs`` is not kept: every store file read is affected)."""
        spec = {"action": "mistake" if mode == "flip" else "fault", **self._pod(ev),
                "volumePath": str(DATA_MOUNT), "path": f"{self.work_dir(ev.node)}/{STORE_PATH}",
                "containerNames": [NODE_CONTAINER], "percent": 100}
        if mode == "flip":
            spec.update(methods=["READ"], mistake={"filling": "random", "maxOccurrences": 1, "maxLength": 64})
        else:
            spec.update(methods=["OPEN"], errno=2)   # ENOENT: the blob is gone
        return Fault(ev, "IOChaos", spec, max(self.s.duration_secs - ev.at_sec, MIN_DEADLINE_SECS),
                     "reads of the store fail until the run ends; blobs is not kept")


def _template_names(faults: list[Fault]) -> dict[str, str]:
    """Event id -> a unique DNS-1123 template name."""
    out: dict[str, str] = {}
    for f in faults:
        base = dns_name("ev", f.event.id)[:50]
        name, i = base, 1
        while name in out.values():
            i += 1
            name = f"{base}-{i}"
        out[f.event.id] = name
    return out


def workflow_spec(faults: list[Fault]) -> dict[str, Any]:
    """``entry`` runs every event in parallel; each is a Serial of Suspend(at_sec) and the fault."""
    names = _template_names(faults)
    templates: list[dict[str, Any]] = [{"name": "plan", "templateType": "Parallel",
                                        "children": [f"{names[f.event.id]}-at" for f in faults]}]
    for f in faults:
        name = names[f.event.id]
        children = [name]
        if f.event.at_sec > 0:
            templates.append({"name": f"{name}-wait", "templateType": "Suspend",
                              "deadline": go_duration(f.event.at_sec)})
            children.insert(0, f"{name}-wait")
        templates.append({"name": f"{name}-at", "templateType": "Serial", "children": children})
        templates.append({"name": name, "templateType": f.kind, "deadline": go_duration(f.secs),
                          EMBEDDED[f.kind]: f.spec})
    return {"entry": "plan", "templates": templates}


def workflow(s: K8sSettings, faults: list[Fault], name: str = "plan") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Workflow",
            "metadata": meta(f"{s.prefix}-{name}", s, s.labels(component="chaos")),
            "spec": workflow_spec(faults)}
