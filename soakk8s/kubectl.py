"""``soak-k8s apply|status|delete``: a rendered directory against a real cluster, through
``kubectl`` (argv lists, never a shell). Apply order: every object but the chaos, then wait
until every node pod is ready (progress on stderr), then the chaos workflow, so the plan's
offsets count from the nodes' start as in a local run."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from soakcore.errors import EvaluationError, UsageError
from soakk8s.render import CHAOS_DIR, load_dir

FIELD_MANAGER = "soak-k8s"
REQUEST_TIMEOUT = "15s"


class Kubectl:
    def __init__(self, context: str | None = None, binary: str = "kubectl",
                 out: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> None:
        path = shutil.which(binary)
        if path is None:
            raise UsageError(f"{binary} not found on PATH: install kubectl (https://kubernetes.io/docs/tasks/tools/) "
                             "and point it at your cluster (KUBECONFIG or ~/.kube/config)")
        self.argv0 = [path, *(["--context", context] if context else []), f"--request-timeout={REQUEST_TIMEOUT}"]
        self.out = out

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.argv0, *args], capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            lines = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()
            raise EvaluationError(f"kubectl {' '.join(args[:2])}: {lines[-1]}")
        return proc

    def check_cluster(self) -> None:
        """One request to the API server: a clear error when there is no cluster to talk to."""
        proc = self.run("version", "-o", "json", check=False)
        try:
            server = json.loads(proc.stdout or "{}").get("serverVersion")
        except ValueError:
            server = None
        if not server:
            lines = (proc.stderr.strip() or "no server version in the reply").splitlines()
            raise EvaluationError(f"no Kubernetes cluster reachable with kubectl's current context: {lines[-1]}")


def _files(objects: list[tuple[Path, dict[str, Any]]], skip_kinds: tuple[str, ...] = ()) -> list[str]:
    return [a for p, o in objects if o["kind"] not in skip_kinds for a in ("-f", str(p))]


def _namespace(objects: list[tuple[Path, dict[str, Any]]], where: Path) -> str:
    for _, o in objects:
        if o["kind"] == "Namespace":
            return str(o["metadata"]["name"])
    raise UsageError(f"{where}: no Namespace object: not a directory rendered by soak-k8s render")


def _selector(objects: list[tuple[Path, dict[str, Any]]]) -> str:
    pm = next(o for _, o in objects if o["kind"] == "PodMonitor")
    return ",".join(f"{k}={v}" for k, v in pm["spec"]["selector"]["matchLabels"].items())


def wait_ready(k: Kubectl, namespace: str, selector: str, expected: int, timeout_s: float,
               poll_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        proc = k.run("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
        pods = json.loads(proc.stdout).get("items", [])
        ready = [p["metadata"]["name"] for p in pods
                 if any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in p.get("status", {}).get("conditions", []))]
        line = f"pods ready {len(ready)}/{expected}" + (f": {', '.join(sorted(ready))}" if ready else "")
        if line != last:
            k.out(f"soak-k8s: {line}")
            last = line
        if len(ready) >= expected:
            return
        if time.monotonic() >= deadline:
            raise EvaluationError(f"only {len(ready)} of {expected} node pods ready after {timeout_s:g}s "
                                  f"(kubectl describe pods -n {namespace} -l {selector})")
        time.sleep(poll_s)


def apply(k: Kubectl, directory: Path, timeout_s: float, poll_s: float = 5.0) -> None:
    objects = load_dir(directory)
    chaos = load_dir(directory / CHAOS_DIR) if (directory / CHAOS_DIR).is_dir() else []
    namespace = _namespace(objects, directory)
    k.check_cluster()
    k.out(f"soak-k8s: applying {len(objects)} objects to namespace {namespace}")
    k.run("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", *_files(objects))
    expected = sum(1 for _, o in objects if o["kind"] == "StatefulSet")
    wait_ready(k, namespace, _selector(objects), expected, timeout_s, poll_s)
    if chaos:
        k.run("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", *_files(chaos))
        k.out(f"soak-k8s: chaos started: {', '.join(o['metadata']['name'] for _, o in chaos)}")


def status(k: Kubectl, directory: Path) -> str:
    objects = load_dir(directory)
    namespace = _namespace(objects, directory)
    k.check_cluster()
    kinds = "statefulsets,pods,services,podmonitors.monitoring.coreos.com,workflows.chaos-mesh.org"
    topology = [o for _, o in objects if o["kind"] == "PodMonitor"][0]["metadata"]["labels"]
    selector = ",".join(f"{key}={v}" for key, v in topology.items() if key.endswith(("/name", "/topology")))
    return k.run("get", kinds, "-n", namespace, "-l", selector, "-o", "wide").stdout


def delete(k: Kubectl, directory: Path) -> None:
    """Everything rendered but the Namespace (other topologies may live in it); the nodes'
    PersistentVolumeClaims stay (their stores and reports), as a local run directory does."""
    objects = load_dir(directory)
    chaos = load_dir(directory / CHAOS_DIR) if (directory / CHAOS_DIR).is_dir() else []
    k.check_cluster()
    for group in (chaos, objects):
        files = _files(group, skip_kinds=("Namespace",))
        if files:
            k.run("delete", "--ignore-not-found", "--wait=false", *files)
    k.out("soak-k8s: deleted (PersistentVolumeClaims data-* kept; the Namespace too)")
