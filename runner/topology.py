"""Topologies as data: which node processes, their ports, directories and argv.

G1 (``world_viewer_live``'s flags): the simulator by default, the real binary with
``--node-bin``. G2 (``oasis7_chain_runtime``, ``--node-kind g2``): ``python3 -m simulator.g2``
or the real binary, three processes per topology with the upstream script's argv
(runner/g2.py). Or any node commands from a topology file (``runner.topofile``). No shell
anywhere.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from runner import g2
from runner.topofile import CustomTopology, expand
from soakcore.ids import validate_name

TOPOLOGY_NODES: dict[str, tuple[str, ...]] = {
    "triad": ("triad",),
    "triad_distributed": ("sequencer", "storage", "observer"),
}
ROLES = g2.ROLES
# Real G1 nodes also replicate over TCP on gossip port + 100 (FORMATS.md); a cut drops those too.
REPLICATION_PORT_OFFSET = 100
DEFAULT_EPOCH_SECS = {"g1": 10, "g2": g2.DEFAULT_EPOCH_SECS}


def topology_nodes(kind: str = "g1") -> dict[str, tuple[str, ...]]:
    """Node labels of each built-in topology: G2 runs three processes in both."""
    return dict(TOPOLOGY_NODES) if kind == "g1" else {t: ROLES for t in TOPOLOGY_NODES}


@dataclass(frozen=True)
class NodeSpec:
    node: str            # runner label
    role: str
    node_id: str         # the node's own id (as it writes it in reports)
    argv: tuple[str, ...]
    work_dir: Path
    report_dir: Path
    log_dir: Path
    gossip_ports: tuple[int, ...]  # UDP ports a network cut must drop
    status_url: str | None
    # Consensus-critical: a fault on it can stop the topology committing (pauses the stall
    # clock). The sequencer; in triad the one process; topology files may say otherwise.
    critical: bool = False
    replication_ports: tuple[int, ...] = ()  # TCP listen ports a network cut must drop too
    health_url: str | None = None   # readiness: 200 here, then status_url with running true
    shared_key: Path | None = None  # the topology's config.toml, copied into work_dir before start


@dataclass(frozen=True)
class LaunchSettings:
    scenario: str
    bind_host: str
    base_port: int
    tick_ms: int
    epoch_secs: float
    node_bin: str | None
    seed: int
    status_endpoints: bool
    extra_args: dict[str, tuple[str, ...]]   # node label -> extra argv (e.g. fault switches)
    node_kind: str = "g1"                    # "g1" world_viewer_live, "g2" oasis7_chain_runtime
    # Where a node reaches another node (label -> host); default bind_host (one machine).
    # Kubernetes (soakk8s) gives each node's Service name, binding 0.0.0.0 itself.
    peer_hosts: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable             # the interpreter that runs the simulator

    def peer_host(self, node: str) -> str:
        return self.peer_hosts.get(node, self.bind_host)


def _program(s: LaunchSettings) -> list[str]:
    if s.node_bin:
        return [s.node_bin]
    return [s.python, "-m", "simulator.g2" if s.node_kind == "g2" else "simulator"]


def build_topology(name: str, index: int, run_id: str, topo_dir: Path, s: LaunchSettings) -> tuple[NodeSpec, ...]:
    if s.node_kind == "g2":
        return build_g2(name, index, run_id, topo_dir, s)
    base = s.base_port + 100 * index
    # Both parsers take the epoch as a positive integer (validated in runner/cli.py).
    common = [s.scenario, "--topology", name, "--no-llm", "--reward-runtime-enable",
              "--reward-runtime-epoch-duration-secs", str(int(s.epoch_secs)), "--node-tick-ms", str(s.tick_ms)]
    if not s.node_bin:
        common += ["--seed", str(s.seed + index)]
    node_base = f"soak-{run_id}-{index}"
    specs = []
    if name == "triad":
        ports = (base, base + 1, base + 2)
        # --bind is the viewer's TCP port; gossip is UDP on --triad-gossip-base-port P..P+2 (FORMATS.md).
        specs.append(_spec("triad", "sequencer", f"{node_base}-sequencer", topo_dir, s, common + [
            "--node-id", node_base, "--bind", f"{s.bind_host}:{base}", "--triad-gossip-base-port", str(base)],
            ports, base + 50))
    else:
        gossip = {role: base + 10 + i for i, role in enumerate(ROLES)}
        for i, role in enumerate(ROLES):
            # Each process binds its own role's address and sends to the others'.
            peers = [a for r in ROLES for a in (f"--triad-{r}-gossip",
                                                f"{s.bind_host if r == role else s.peer_host(r)}:{gossip[r]}")]
            specs.append(_spec(role, role, f"{node_base}-{role}", topo_dir, s, common + [
                "--node-role", role, "--node-id", node_base, "--bind", f"{s.bind_host}:{gossip[role]}", *peers],
                (gossip[role],), base + 60 + i))
    return tuple(specs)


def node_specs(name: str, index: int, run_id: str, topo_dir: Path, s: LaunchSettings,
               custom_topologies: tuple[CustomTopology, ...] = ()) -> tuple[NodeSpec, ...]:
    """The nodes of topology ``name`` (built-in, or one of the topology files), as the run launches them."""
    custom = next((c for c in custom_topologies if c.name == name), None)
    return build_custom(custom, topo_dir, s) if custom else build_topology(name, index, run_id, topo_dir, s)


def build_custom(custom: CustomTopology, topo_dir: Path, s: LaunchSettings) -> tuple[NodeSpec, ...]:
    """Node specs from a topology file: its argv lists with placeholders filled in."""
    specs = []
    for n in custom.nodes:
        node_dir = topo_dir / "nodes" / n.node
        values = {"report_dir": str(node_dir / "report"), "work_dir": str(node_dir / "work"),
                  "epoch_secs": f"{s.epoch_secs:g}", "tick_ms": str(s.tick_ms), "seed": str(s.seed)}
        specs.append(NodeSpec(n.node, n.role, n.node_id, expand(n.argv, values), node_dir / "work",
                              node_dir / "report", node_dir, n.gossip_ports, n.status_url, n.critical,
                              n.replication_ports))
    return tuple(specs)


def build_g2(name: str, index: int, run_id: str, topo_dir: Path, s: LaunchSettings) -> tuple[NodeSpec, ...]:
    """Three oasis7_chain_runtime processes with the upstream script's argv (runner/g2.py), each
    in its own working directory holding a copy of the topology's one config.toml."""
    nodes = g2.layout(name, index, run_id, s.base_port)
    world = g2.world_id(name, run_id)
    specs = []
    for n in nodes:
        validate_name("node id", n.node_id)   # it becomes a path (the node's report directory)
        node_dir = topo_dir / "nodes" / n.label
        argv = [*_program(s), *g2.node_args(n, nodes, world, s.bind_host, s.tick_ms, int(s.epoch_secs),
                                            s.peer_hosts)]
        if not s.node_bin:
            argv += ["--seed", str(s.seed + index)]
        argv += list(s.extra_args.get(n.label, ()))
        status = f"http://{s.bind_host}:{n.status}"
        specs.append(NodeSpec(n.label, n.label, n.node_id, tuple(argv), node_dir / "work",
                              g2.report_dir(node_dir / "work", n.node_id), node_dir, (n.gossip,),
                              f"{status}/v1/chain/status", critical=n.label == "sequencer",
                              replication_ports=(n.replication,), health_url=f"{status}/healthz",
                              shared_key=topo_dir / g2.CONFIG_FILE))
    return tuple(specs)


def _spec(node: str, role: str, node_id: str, topo_dir: Path, s: LaunchSettings, args: list[str],
          ports: tuple[int, ...], status_port: int) -> NodeSpec:
    replication = tuple(p + REPLICATION_PORT_OFFSET for p in ports) if s.node_bin else ()
    node_dir = topo_dir / "nodes" / node
    report_dir = node_dir / "report"
    argv = [*_program(s), *args, "--reward-runtime-report-dir", str(report_dir)]
    status_url = None
    if s.status_endpoints and not s.node_bin:
        argv += ["--status-listen", f"{s.bind_host}:{status_port}"]
        status_url = f"http://{s.bind_host}:{status_port}/v1/chain/status"
    argv += list(s.extra_args.get(node, ()))
    return NodeSpec(node, role, node_id, tuple(argv), node_dir / "work", report_dir, node_dir, ports, status_url,
                    critical=role == "sequencer", replication_ports=replication)
