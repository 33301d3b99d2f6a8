"""The exporter sidecar's run-state in a cluster: the node, and the windows of the faults Chaos
Mesh makes on it, so the exporter excuses them as it excuses the local runner's.

Locally the runner writes ``run_state.json`` (soakcore.runstate) as it makes each fault. Here
Chaos Mesh makes them, so the sidecar writes the file itself, once a second:
- the node: its pid from the launcher's pidfile, its directories and status URL, whether it
  is consensus-critical, and its restarts by cause: a new pid while one of the node's
  ``restart``/``kill`` windows (plus grace) holds is ``chaos``, any other is ``crash``;
- the node's fault windows: the rendered plan (``faults.json``: event, workflow, action,
  offset, length) anchored at its workflow's ``status.startTime``, read from the API server
  (a Role allows ``get`` on workflows). A fault that replaces the process lasts, as locally,
  until the node runs again: its window ends when a new pid is seen (Kubernetes restarts a
  killed pod or container when it will, not after ``down_secs``), at most RELAUNCH_WAIT_S
  after its planned end. The windows are the plan's, not observed injections: a fault Chaos
  Mesh failed to make is still excused (docs/kubernetes.md).

``python3 -m soakk8s.faultstate ... -- EXPORTER FLAGS`` writes the file, keeps it current in a
thread and runs ``soak-exporter --run-state FILE EXPORTER FLAGS`` in this process.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from alerts.profiles import get_profile
from soakcore.actions import ACTIONS
from soakcore.runstate import ChaosCount, ChaosWindow, NodeState, RunState, write_run_state

RELAUNCH_WAIT_S = 300.0     # a killed node not seen again this long after its planned end: window closed
POLL_S = 1.0
ANCHOR_POLL_S = 5.0
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
log = logging.getLogger("soak-k8s faultstate")


@dataclass(frozen=True)
class PlannedFault:
    event_id: str
    workflow: str
    node: str
    action: str
    at_sec: float
    secs: float

    @property
    def relaunches(self) -> bool:   # restart/kill: the node comes back as a new process (pod or container)
        return self.action in ("restart", "kill")


@dataclass
class NodeFaults:
    """The windows of one node's planned faults, anchored and ended by what is observed."""
    node: str
    faults: tuple[PlannedFault, ...]
    anchors: dict[str, float] = field(default_factory=dict)   # workflow -> start (unix s)
    pid: int | None = None
    started_at: float | None = None
    pid_seen: list[tuple[float, int]] = field(default_factory=list)   # (first seen, pid), in order
    restarts: dict[str, int] = field(default_factory=lambda: {"chaos": 0, "crash": 0})

    def observe_pid(self, pid: int | None, now: float) -> None:
        if pid is None or pid == self.pid:
            return
        if self.pid is not None:
            cause = "chaos" if any(self._excuses(w, now) for w in self.windows(now)) else "crash"
            self.restarts[cause] += 1
        self.pid = pid
        self.started_at = self.started_at or now
        self.pid_seen.append((now, pid))

    @staticmethod
    def _excuses(w: ChaosWindow, now: float) -> bool:
        end = now if w.end is None else w.end + ACTIONS[w.action].grace_secs
        return w.action in ("restart", "kill") and w.start <= now <= end

    def windows(self, now: float) -> tuple[ChaosWindow, ...]:
        out = []
        for f in self.faults:
            anchor = self.anchors.get(f.workflow)
            if anchor is None or f.node != self.node or anchor + f.at_sec > now:
                continue
            start = anchor + f.at_sec
            planned = start + f.secs
            end: float | None = planned
            if f.relaunches:
                # the first process seen after the fault began, other than the one it hit
                before = [p for t, p in self.pid_seen if t < start]
                back = next((t for t, p in self.pid_seen if t >= start and (not before or p != before[-1])), None)
                if back is not None:
                    end = max(planned, back)
                elif now < planned + RELAUNCH_WAIT_S:
                    end = None
            out.append(ChaosWindow(f.node, f.action, f.event_id, start, None if end is None or end > now else end))
        return tuple(out)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def workflow_start(api: str, namespace: str, name: str, token: str, ca: Path | None) -> float | None:
    """The workflow's ``status.startTime`` (else its creation time) in unix seconds; None while
    it does not exist or has not started."""
    url = f"{api}/apis/chaos-mesh.org/v1alpha1/namespaces/{namespace}/workflows/{name}"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    context = ssl.create_default_context(cafile=str(ca)) if url.startswith("https:") and ca else None
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:
            doc = json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code != 404:   # 404: not created yet (apply starts it once the pods are ready)
            _warn_once(f"workflow {name}: HTTP {exc.code} {exc.reason}: no fault windows until it can be read "
                       "(is the Role soak-fault-reader bound to this pod's ServiceAccount?)")
        return None
    except (OSError, ValueError) as exc:
        _warn_once(f"workflow {name}: {exc}")
        return None
    stamp = (doc.get("status") or {}).get("startTime") or (doc.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return None
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def load_faults(path: Path) -> tuple[PlannedFault, ...]:
    return tuple(PlannedFault(**raw) for raw in json.loads(path.read_text()))


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def state(a: argparse.Namespace, nf: NodeFaults, now: float) -> RunState:
    windows = nf.windows(now)
    counts = tuple(ChaosCount(nf.node, action, "completed", n) for action in sorted({w.action for w in windows})
                   if (n := sum(1 for w in windows if w.action == action and w.end is not None)))
    node = NodeState(nf.node, a.role, a.node_id, str(a.report_dir), str(a.work_dir), nf.pid, a.status_url,
                     dict(nf.restarts), nf.started_at, a.critical)
    return RunState(a.run_id, a.topology, a.profile, a.scenario, dict(get_profile(a.profile).thresholds), (node,),
                    windows, counts)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m soakk8s.faultstate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in ("--run-id", "--topology", "--profile", "--scenario", "--node", "--role", "--node-id", "--namespace"):
        p.add_argument(flag, required=True)
    for flag in ("--report-dir", "--work-dir", "--pidfile", "--faults", "--run-state"):
        p.add_argument(flag, type=Path, required=True)
    p.add_argument("--status-url")
    p.add_argument("--critical", action="store_true")
    p.add_argument("--api-url", help="default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT")
    p.add_argument("--service-account-dir", type=Path, default=SA_DIR, help="token and ca.crt")
    p.add_argument("exporter", nargs=argparse.REMAINDER, help="-- then soak-exporter's flags")
    return p


def keep_current(a: argparse.Namespace, nf: NodeFaults, stop: threading.Event) -> None:
    """Rewrite the run-state every POLL_S (when it changed); look up each workflow's start until known."""
    api = a.api_url or f"https://{os.environ.get('KUBERNETES_SERVICE_HOST', 'kubernetes.default.svc')}:" \
                       f"{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"
    token_file, ca = a.service_account_dir / "token", a.service_account_dir / "ca.crt"
    workflows = sorted({f.workflow for f in nf.faults})
    last_text, next_anchor = "", 0.0
    while not stop.is_set():
        now = time.time()
        if now >= next_anchor and len(nf.anchors) < len(workflows):
            token = token_file.read_text().strip() if token_file.is_file() else ""
            for w in workflows:
                if w not in nf.anchors and (start := workflow_start(api, a.namespace, w, token,
                                                                    ca if ca.is_file() else None)) is not None:
                    nf.anchors[w] = start
                    log.info("workflow %s started at %.3f", w, start)
            next_anchor = now + ANCHOR_POLL_S
        nf.observe_pid(read_pid(a.pidfile), now)
        current = state(a, nf, now)
        text = json.dumps(current.to_json(), sort_keys=True)
        if text != last_text:
            write_run_state(a.run_state, current)
            last_text = text
        stop.wait(POLL_S)


def main(argv: list[str] | None = None) -> None:
    from exporter.cli import main as exporter_main
    a = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s soak-k8s faultstate %(levelname)s %(message)s")
    mine = tuple(f for f in load_faults(a.faults) if f.node == a.node)
    nf = NodeFaults(a.node, mine)
    nf.observe_pid(read_pid(a.pidfile), time.time())
    write_run_state(a.run_state, state(a, nf, time.time()))   # there before the exporter reads it
    stop = threading.Event()
    threading.Thread(target=keep_current, args=(a, nf, stop), name="faultstate", daemon=True).start()
    rest = a.exporter[1:] if a.exporter[:1] == ["--"] else a.exporter
    exporter_main([*rest, "--run-state", str(a.run_state)])


if __name__ == "__main__":
    main()
