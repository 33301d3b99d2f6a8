"""Topology files: any node command as an argv list (never a shell string), validated whole.

    name: duo                      # topology label (1-64 of A-Z a-z 0-9 _ . -)
    nodes:
      - node: alpha                # runner label, also the node's directory name
        role: sequencer            # free text, exported as soak_node_info{role}
        node_id: duo-alpha         # id the node writes in its reports (default: node)
        argv: [/opt/bin/node, --report-dir, "{report_dir}", --port, "7001"]
        gossip_ports: [7001]       # UDP ports a disconnect cuts (may be empty: then it is skipped)
        replication_ports: [7101]  # TCP listen ports a disconnect cuts too (optional)
        status_url: http://127.0.0.1:7101/v1/chain/status    # optional G2 endpoint
        critical: true             # consensus-critical: a fault on it pauses the stall clock
                                   # (default: true for role sequencer, else false)

Placeholders replaced inside argv items: {report_dir} {work_dir} {epoch_secs} {tick_ms} {seed}.
The process runs with cwd = its own ``<run>/<topology>/nodes/<node>/work``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


from soakcore.errors import InputError, UsageError
from soakcore.files import load_document
from soakcore.ids import validate_name

PLACEHOLDERS = ("report_dir", "work_dir", "epoch_secs", "tick_ms", "seed")
NODE_FIELDS = {"node", "role", "node_id", "argv", "gossip_ports", "replication_ports", "status_url", "critical"}


@dataclass(frozen=True)
class CustomNode:
    node: str
    role: str
    node_id: str
    argv: tuple[str, ...]
    gossip_ports: tuple[int, ...]
    status_url: str | None = None
    critical: bool = False
    replication_ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class CustomTopology:
    name: str
    source: Path
    nodes: tuple[CustomNode, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(n.node for n in self.nodes)


def is_topology_file(value: str) -> bool:
    return Path(value).suffix in (".yaml", ".yml", ".json")


def _named(kind: str, value: object, path: Path, field: str) -> str:
    try:
        return validate_name(kind, value)
    except UsageError as exc:
        raise InputError(path, field, str(exc)) from None


def _node(raw: Any, path: Path, i: int) -> CustomNode:
    where = f"nodes[{i}]"
    if not isinstance(raw, dict):
        raise InputError(path, where, "expected an object")
    unknown = sorted(set(raw) - NODE_FIELDS)
    if unknown:
        raise InputError(path, f"{where}.{unknown[0]}", "unknown field")
    argv = raw.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(x, str) and x for x in argv):
        raise InputError(path, f"{where}.argv", "expected a non-empty list of strings (an argv list, not a "
                         "shell string)")
    ports = _ports(raw, "gossip_ports", "UDP", path, where)
    replication = _ports(raw, "replication_ports", "TCP", path, where)
    status_url = raw.get("status_url")
    if status_url is not None and not (isinstance(status_url, str) and status_url.startswith("http")):
        raise InputError(path, f"{where}.status_url", f"expected an http URL, got {status_url!r}")
    node = _named("node", raw.get("node"), path, f"{where}.node")
    role = raw.get("role", node)
    if not isinstance(role, str) or not role:
        raise InputError(path, f"{where}.role", f"expected a string, got {role!r}")
    critical = raw.get("critical", role == "sequencer")
    if not isinstance(critical, bool):
        raise InputError(path, f"{where}.critical", f"expected true or false, got {critical!r}")
    return CustomNode(node, role, _named("node id", raw.get("node_id", node), path, f"{where}.node_id"),
                      tuple(argv), ports, status_url, critical, replication)


def _ports(raw: dict[str, Any], key: str, proto: str, path: Path, where: str) -> tuple[int, ...]:
    ports = raw.get(key, [])
    if not isinstance(ports, list) or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536
                                              for p in ports):
        raise InputError(path, f"{where}.{key}", f"expected a list of {proto} ports, got {ports!r}")
    return tuple(ports)


def load_topology_file(path: Path, reserved: tuple[str, ...]) -> CustomTopology:
    """Load and validate a whole topology file; ``reserved`` are the built-in topology names."""
    doc = load_document(path)
    if not isinstance(doc, dict):
        raise InputError(path, "<root>", "expected an object with name and nodes")
    name = _named("topology", doc.get("name"), path, "name")
    if name in reserved:
        raise InputError(path, "name", f"{name!r} is a built-in topology; choose another name")
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise InputError(path, "nodes", "expected a non-empty list")
    nodes = tuple(_node(raw, path, i) for i, raw in enumerate(raw_nodes))
    labels = [n.node for n in nodes]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup:
        raise InputError(path, "nodes[].node", f"duplicate node {dup!r}")
    return CustomTopology(name, path.resolve(), nodes)


def expand(argv: tuple[str, ...], values: dict[str, str]) -> tuple[str, ...]:
    """Replace {placeholder}s inside argv items; no shell, no other interpretation."""
    out = []
    for item in argv:
        for key in PLACEHOLDERS:
            item = item.replace("{" + key + "}", values[key])
        out.append(item)
    return tuple(out)
