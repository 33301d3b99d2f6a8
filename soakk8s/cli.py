"""soak-k8s: render a soak as Kubernetes, Chaos Mesh and Prometheus Operator objects, and apply,
watch or delete them with kubectl (docs/kubernetes.md)."""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from alerts.profiles import TOPOLOGIES, get_profile, PROFILES
from runner import g2
from runner.cli import _continuous, add_continuous_flags, duration
from runner.plan import continuous_events, load_plan
from runner.topology import DEFAULT_EPOCH_SECS, topology_nodes
from soakcore.errors import UsageError, run_cli
from soakcore.ids import validate_name
from soakk8s import kubectl, render
from soakk8s.model import K8sSettings

EPILOG = """examples:
  soak-k8s render --profile soak_smoke --topology triad_distributed --node-kind g1 \\
      --image registry.example/agent-world-soak:1 --chaos-plan examples/chaos-network.json --out k8s/td
  soak-k8s apply k8s/td          # nodes first, wait until ready, then the chaos workflow
  soak-k8s status k8s/td
  soak-check --prometheus http://prometheus.monitoring.svc:9090 --since 30m --run-id RUN_ID
  soak-k8s delete k8s/td

exit codes: 0 done, 2 bad arguments (nothing written or applied), 3 kubectl or the cluster failed."""
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="soak-k8s", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="write the objects of one topology's soak into --out")
    a = r.add_argument
    a("--profile", default="soak_smoke", choices=list(PROFILES), help="thresholds and default duration")
    a("--topology", required=True, choices=TOPOLOGIES)
    a("--node-kind", choices=g2.NODE_KINDS, default="g1", help="g1 world_viewer_live flags, g2 oasis7_chain_runtime")
    a("--image", required=True, help="node container image (python3 and agent-world-soak in it, and the node binary)")
    a("--exporter-image", help="exporter sidecar image (default: --image)")
    a("--node-bin", help="the node binary's path inside the image (default: the simulator, python3 -m simulator[.g2])")
    a("--namespace", default="soak", help="namespace of every object (default: %(default)s)")
    a("--run-id", help="run id label of every series (default: the time, YYYYmmdd-HHMMSS)")
    a("--duration-secs", type=duration, help="the run's length (default: the profile's); corrupt_store lasts to it")
    a("--seed", type=int, help="seed of the simulator and of continuous chaos (default: from the clock)")
    a("--epoch-secs", type=int, help="reward epoch passed to nodes (default 10 for g1, 60 for g2)")
    a("--tick-ms", type=int, default=200)
    a("--base-port", type=int, default=5610, help="node ports as a local run's topology 0")
    a("--scenario", default="triad_p2p_bootstrap")
    a("--storage", default="1Gi", help="each node pod's PersistentVolumeClaim (default: %(default)s)")
    a("--monitor-label", type=_label, action="append", metavar="KEY=VALUE",
      help="label the Prometheus Operator selects PodMonitors and PrometheusRules by "
           "(default: release=kube-prometheus-stack)")
    a("--webhook-url", default="http://alert-sink.soak.svc:9095/alerts", help="Alertmanager webhook receiver")
    a("--chaos-plan", type=Path, help="JSON or YAML plan (the local runner's format)")
    a("--enable-chaos", action="store_true", help="continuous chaos when no plan is given (as soak-run)")
    add_continuous_flags(a)
    a("--out", type=Path, required=True, help="an empty or new directory")
    for name, what in (("apply", "apply a rendered directory, wait for the node pods, then start its chaos"),
                       ("status", "the rendered soak's workloads, pods and chaos in the cluster"),
                       ("delete", "delete what a rendered directory created (not its namespace or volumes)")):
        c = sub.add_parser(name, help=what)
        c.add_argument("dir", type=Path)
        c.add_argument("--context", help="kubectl context (default: the current one)")
        if name == "apply":
            c.add_argument("--timeout-secs", type=duration, default=600, help="wait this long for the node pods")
    return p


def settings(a: argparse.Namespace, now: float) -> K8sSettings:
    profile = get_profile(a.profile)
    if not _DNS_LABEL.match(a.namespace):
        raise UsageError(f"--namespace {a.namespace!r}: expected a DNS-1123 label (a-z 0-9 -, at most 63)")
    run_id = validate_name("run id", a.run_id or time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)))
    epoch = a.epoch_secs if a.epoch_secs is not None else DEFAULT_EPOCH_SECS[a.node_kind]
    for flag, value in (("--epoch-secs", epoch), ("--tick-ms", a.tick_ms)):
        if value <= 0:
            raise UsageError(f"{flag} {value}: must be positive")
    if not 0 < a.base_port <= 65535 - 200:
        raise UsageError(f"--base-port {a.base_port}: out of range")
    return K8sSettings(profile=profile, topology=a.topology, node_kind=a.node_kind, image=a.image,
                       exporter_image=a.exporter_image or a.image, namespace=a.namespace, run_id=run_id,
                       duration_secs=a.duration_secs or profile.duration_secs,
                       seed=a.seed if a.seed is not None else int(now) % 100000, node_bin=a.node_bin,
                       epoch_secs=epoch, tick_ms=a.tick_ms, base_port=a.base_port, scenario=a.scenario,
                       storage=a.storage, monitor_labels=dict(a.monitor_label or [("release", "kube-prometheus-stack")]),
                       webhook_url=a.webhook_url)


def do_render(a: argparse.Namespace) -> int:
    s = settings(a, time.time())
    nodes = topology_nodes(s.node_kind)
    plan = load_plan(a.chaos_plan, nodes, s.duration_secs) if a.chaos_plan else ()
    cont = _continuous(a, s.seed, s.duration_secs)
    events = continuous_events(cont, s.topology, 0, nodes[s.topology], s.duration_secs) if cont else ()
    r = render.render(s, plan, events, os.urandom(32))
    for path in render.write(r, a.out):
        print(f"wrote {path}")
    for f in r.faults:
        note = f" ({f.note})" if f.note else ""
        print(f"chaos {f.event.id}: {f.event.action} on {f.event.node} at {f.event.at_sec:g}s -> {f.kind}{note}")
    for sk in r.skipped:
        print(f"chaos {sk.event.id}: {sk.event.action} on {sk.event.node} skipped: {sk.reason}")
    print(f"run id {s.run_id}: soak-k8s apply {a.out}; then soak-check --prometheus URL --run-id {s.run_id}")
    return 0


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        a = build_parser().parse_args(argv)
        if a.command == "render":
            return do_render(a)
        k = kubectl.Kubectl(a.context)
        if a.command == "apply":
            kubectl.apply(k, a.dir, a.timeout_secs)
        elif a.command == "status":
            sys.stdout.write(kubectl.status(k, a.dir))
        else:
            kubectl.delete(k, a.dir)
        return 0
    run_cli("soak-k8s", body)


if __name__ == "__main__":
    main()
