"""The sidecar's fault state (soakk8s.faultstate): Chaos Mesh's planned faults, anchored at their
workflow's start read from the API server, become the exporter's fault windows, and a new node
pid is a chaos restart inside a restart/kill window and a crash outside one. End to end with a
real soak-exporter; the API server is a local HTTP stand-in serving one Workflow document (no
cluster here). And the rendered G1 and G2 pods' containers, run as local processes (paths under a
temporary folder, Service names as 127.0.0.1), make a topology that commits and replicates, each
sidecar seeing its own node."""
from __future__ import annotations

import http.server
import json
import os
import math
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT
from simulator.testing import port_block
from soakcore.actions import ACTIONS
from soakk8s.faultstate import RELAUNCH_WAIT_S, NodeFaults, PlannedFault
from test_k8s_render import render_case

KILL = PlannedFault("k1", "soak-td-plan", "storage", "kill", at_sec=10, secs=2)
LOSS = PlannedFault("l1", "soak-td-plan", "storage", "loss", at_sec=30, secs=15)
OTHER = PlannedFault("o1", "soak-td-plan", "observer", "kill", at_sec=5, secs=2)


def test_windows_are_the_plan_anchored_at_the_workflow_start_and_a_relaunch_ends_at_the_new_pid() -> None:
    nf = NodeFaults("storage", (KILL, LOSS, OTHER))
    nf.observe_pid(100, now=990.0)
    assert nf.windows(1020.0) == ()                       # workflow not started: nothing planned yet
    nf.anchors["soak-td-plan"] = 1000.0
    (kill,) = nf.windows(1011.0)                           # only this node's, only begun ones
    assert (kill.event_id, kill.start, kill.end) == ("k1", 1010.0, None)   # open until the node is back
    assert nf.windows(1013.0)[0].end is None               # planned end passed, the old pid still there
    nf.observe_pid(101, now=1025.0)                        # Kubernetes restarted the container late
    assert nf.restarts == {"chaos": 1, "crash": 0}
    kill, loss = nf.windows(1031.0)
    assert kill.end == 1025.0 and (loss.start, loss.end) == (1030.0, None)
    assert nf.windows(1046.0)[1].end == 1045.0
    grace = ACTIONS["kill"].grace_secs
    nf.observe_pid(102, now=1025.0 + grace + 1)            # outside every window plus grace: a crash
    assert nf.restarts == {"chaos": 1, "crash": 1}


def test_a_node_never_seen_again_closes_its_window_after_the_relaunch_wait() -> None:
    nf = NodeFaults("storage", (KILL,), anchors={"soak-td-plan": 1000.0})
    nf.observe_pid(100, now=1000.0)
    assert nf.windows(1012.0 + RELAUNCH_WAIT_S - 1)[0].end is None
    assert nf.windows(1012.0 + RELAUNCH_WAIT_S + 1)[0].end == 1012.0


def test_a_recreated_pod_counts_its_first_process_as_the_relaunch() -> None:
    # pod-kill: the sidecar starts again with the pod, after the fault began, and never saw the old pid
    nf = NodeFaults("storage", (PlannedFault("r1", "w", "storage", "restart", 10, 1),), anchors={"w": 1000.0})
    nf.observe_pid(7, now=1030.0)
    (w,) = nf.windows(1031.0)
    assert (w.start, w.end) == (1010.0, 1030.0) and nf.restarts == {"chaos": 0, "crash": 0}


class _Api(http.server.BaseHTTPRequestHandler):
    start = "2026-11-27T12:00:00Z"

    def do_GET(self) -> None:  # noqa: N802
        known = self.path == "/apis/chaos-mesh.org/v1alpha1/namespaces/soak/workflows/soak-triad-distributed-plan"
        if not known or self.headers.get("Authorization") != "Bearer t0ken":
            self.send_response(403 if known else 404)
            self.end_headers()
            return
        body = json.dumps({"kind": "Workflow", "status": {"startTime": type(self).start}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def api() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_sidecar_publishes_the_planned_windows_and_the_nodes_restart_causes_through_the_real_exporter(
        api: str, tmp_path: Path) -> None:
    r = render_case("g2", "triad_distributed")
    sts = next(o for o in r.objects if o["kind"] == "StatefulSet" and o["metadata"]["name"].endswith("-storage"))
    argv = sts["spec"]["template"]["spec"]["containers"][1]["command"]
    faults_cm = next(o for o in r.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-faults"))
    planned = json.loads(faults_cm["data"]["faults.json"])
    # In-cluster paths of the rendered sidecar, moved into tmp_path; the workflow started 5 s ago.
    anchor = float(int(time.time() - 5))
    _Api.start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(anchor))
    for p in planned:   # the plan's kill of storage is due now; everything else later
        p["at_sec"] = 6 if p["event_id"] == "kill" else p["at_sec"] + 1000
    (tmp_path / "faults.json").write_text(json.dumps(planned))
    (tmp_path / "sa").mkdir()
    (tmp_path / "sa" / "token").write_text("t0ken\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    node = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    pidfile = tmp_path / "node.pid"
    pidfile.write_text(f"{node.pid}\n")
    replace = {"--report-dir": str(reports), "--work-dir": str(tmp_path), "--pidfile": str(pidfile),
               "--faults": str(tmp_path / "faults.json"), "--run-state": str(tmp_path / "run_state.json")}
    args = [replace.get(argv[i - 1], a) for i, a in enumerate(argv)][3:]
    port = port_block(1, 27000, 27999)
    args[args.index("0.0.0.0:9465")] = f"127.0.0.1:{port}"
    sidecar = subprocess.Popen([sys.executable, "-m", "soakk8s.faultstate", *args[:args.index("--")],
                                "--api-url", api, "--service-account-dir", str(tmp_path / "sa"),
                                *args[args.index("--"):]], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    replacement = None
    try:
        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                return resp.read().decode()

        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            try:
                text = scrape()
                if _metric(text, "soak_chaos_exempt_until_timestamp_seconds", node="storage", action="kill"):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        # The kill window is open (the old pid still runs): exempt for good until the node is back.
        assert _metric(text, "soak_chaos_exempt_until_timestamp_seconds", node="storage", action="kill") == math.inf
        assert _metric(text, "soak_process_up", node="storage") == 1
        assert _metric(text, "soak_run_info", profile="soak_smoke") == 1
        assert _metric(text, "soak_gate_threshold", gate="max_stall_secs") == 300
        # Chaos Mesh killed the container; the kubelet started a new process: a chaos restart.
        node.kill()
        replacement = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        pidfile.write_text(f"{replacement.pid}\n")
        seen = time.time()
        while time.monotonic() < deadline:
            text = scrape()
            if _metric(text, "soak_process_restarts_total", node="storage", cause="chaos") == 1:
                break
            time.sleep(0.5)
        assert _metric(text, "soak_process_restarts_total", node="storage", cause="chaos") == 1
        assert _metric(text, "soak_process_restarts_total", node="storage", cause="crash") == 0
        # The window ends when the new process was seen, or at its planned end if that is later.
        planned_end = anchor + 6 + next(p["secs"] for p in planned if p["event_id"] == "kill")
        while time.monotonic() < deadline:
            until = _metric(scrape(), "soak_chaos_exempt_until_timestamp_seconds", node="storage", action="kill")
            if until is not None and until < math.inf:
                break
            time.sleep(0.5)
        assert until is not None and max(seen - 1, planned_end) <= until - ACTIONS["kill"].grace_secs \
            <= max(seen, planned_end) + 5
    finally:
        sidecar.terminate()
        node.kill()
        if replacement:
            replacement.kill()
        sidecar.wait(10)


def test_a_workflow_not_there_yet_is_quiet_and_a_refused_read_is_said_once(api: str,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    from soakk8s.faultstate import workflow_start
    caplog.set_level("WARNING")
    assert workflow_start(api, "soak", "soak-triad-distributed-plan", "t0ken", None) is not None
    assert workflow_start(api, "soak", "soak-triad-plan", "t0ken", None) is None and not caplog.records
    for _ in range(2):
        assert workflow_start(api, "soak", "soak-triad-distributed-plan", "wrong", None) is None
    assert [r.getMessage() for r in caplog.records] == [
        "workflow soak-triad-distributed-plan: HTTP 403 Forbidden: no fault windows until it can be read "
        "(is the Role soak-fault-reader bound to this pod's ServiceAccount?)"]


def _local(arg: str, tmp: Path, pod: int, hosts: tuple[str, ...]) -> str:
    """A container's argument on this machine: the pod's paths under tmp, Service names as 127.0.0.1."""
    for host in hosts:
        arg = arg.replace(host, "127.0.0.1")
    for path in ("/run/soak", "/etc/soak-faults", "/etc/soak", "/soak"):   # longest first
        local = str(tmp / f"run{pod}") if path == "/run/soak" else str(tmp / path.strip("/"))
        if arg == path or arg.startswith(path + "/"):
            return local + arg[len(path):]
        arg = arg.replace(f"={path}/", f"={local}/")
    return sys.executable if arg == "python3" else arg


@pytest.mark.parametrize("kind", ["g1", "g2"])
def test_the_rendered_pods_run_as_local_processes_make_a_committing_topology_each_sidecar_sees_its_node(
        kind: str, tmp_path: Path) -> None:
    import base64
    from soakk8s import render
    from test_k8s_render import settings
    base = port_block(60, 26000, 26999)
    s = settings(kind, "triad_distributed", base_port=base, epoch_secs=1, tick_ms=100)
    r = render.render(s, (), (), bytes(range(32)))
    hosts = tuple(s.service_host(n) for n in ("sequencer", "storage", "observer"))
    secret = next((o for o in r.objects if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-config")),
                  {"data": {"config.toml": ""}})   # G1: no key
    faults = next(o for o in r.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-faults"))
    (tmp_path / "etc" / "soak").mkdir(parents=True)
    (tmp_path / "etc" / "soak" / "config.toml").write_bytes(base64.b64decode(secret["data"]["config.toml"]))
    (tmp_path / "etc" / "soak-faults").mkdir()
    (tmp_path / "etc" / "soak-faults" / "faults.json").write_text(faults["data"]["faults.json"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs, ports = [], {}
    try:
        for pod, sts in enumerate(o for o in r.objects if o["kind"] == "StatefulSet"):
            spec = sts["spec"]["template"]["spec"]
            node, sidecar = spec["containers"]
            subprocess.run([_local(a, tmp_path, pod, hosts) for a in spec["initContainers"][0]["command"]],
                           env=env, check=True, timeout=60)
            argv = [_local(a, tmp_path, pod, hosts) for a in node["command"] + node["args"]]
            argv = [a for i, a in enumerate(argv) if "--resolve" not in (a, argv[i - 1])]  # names already IPs
            procs.append(subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            ports[node["args"][node["args"].index("--node-role") + 1]] = port = base + 50 + pod
            procs.append(subprocess.Popen([_local(a, tmp_path, pod, hosts).replace("0.0.0.0:9465", f"127.0.0.1:{port}")
                                           for a in sidecar["command"]], env=env, cwd=tmp_path,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline, seen = time.monotonic() + 60, {}
        while time.monotonic() < deadline and len(seen) < 3:
            time.sleep(1)
            for node_name, port in ports.items():
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                        text = resp.read().decode()
                except OSError:
                    continue
                figures = {m: _metric(text, m, node=node_name) for m in
                           ("soak_reports_total", "soak_consensus_committed_height", "soak_process_up")}
                if all(figures.values()) and (kind == "g1" or _metric(text, "soak_replication_peers", node=node_name,
                                                                      state="connected") == 2):
                    seen[node_name] = figures
        assert set(seen) == {"sequencer", "storage", "observer"}, seen
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
