"""soak-k8s as a user meets it: render's output and errors, the in-pod launcher, the real node
parsers (conformance stand-ins) on the rendered argv, and kubectl's absence or a missing cluster
reported in one line (no cluster here: apply/status/delete are not run against one)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT
from soakcore.errors import EvaluationError
from soakk8s import launch
from soakk8s.cli import main
from test_k8s_render import render_case, settings

STANDINS = ROOT / "tests" / "standins"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


RENDER = ["render", "--topology", "triad_distributed", "--node-kind", "g2", "--image", "img:1", "--run-id", "r1",
          "--seed", "3", "--duration-secs", "300", "--chaos-plan", str(FIXTURES / "k8s" / "plan-every-action.json")]


def test_render_writes_one_object_per_file_and_says_what_it_wrote_and_skipped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli([*RENDER, "--out", str(tmp_path / "k8s")], capsys)
    assert code == 0, err
    files = sorted((tmp_path / "k8s").rglob("*.yaml"))
    assert len(files) == 17 and all(f"wrote {f}" in out for f in files)
    assert all(f.read_text().count("\nkind: ") == 1 for f in files)
    assert "chaos pause: pause on observer at 50s -> NetworkChaos (no SIGSTOP in Chaos Mesh" in out
    assert "chaos pressure: challenge_pressure on storage skipped: challenge_pressure has no Chaos Mesh" in out
    # Twice into the same directory: refused, nothing stale left to apply.
    code, _, err = _cli([*RENDER, "--out", str(tmp_path / "k8s")], capsys)
    assert code == 2 and "not an empty directory" in err


@pytest.mark.parametrize("extra, message", [
    (["--namespace", "Soak_NS"], "--namespace 'Soak_NS': expected a DNS-1123 label"),
    (["--run-id", "../x"], "invalid run id"),
    (["--duration-secs", "60"], "event 'disconnect' at 65s never happens"),
])
def test_render_refuses_bad_input_in_one_line_before_writing(extra: list[str], message: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli([*RENDER, *extra, "--out", str(tmp_path / "k8s")], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "k8s").exists()


def test_continuous_chaos_is_the_seeds_sequence_as_a_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runner.plan import Continuous, continuous_events
    code, out, _ = _cli(["render", "--topology", "triad_distributed", "--image", "img:1", "--run-id", "r1",
                         "--duration-secs", "200", "--chaos-continuous-enable", "--chaos-continuous-seed", "42",
                         "--chaos-continuous-actions", "restart,kill,disconnect", "--out", str(tmp_path / "k")], capsys)
    assert code == 0
    expected = continuous_events(Continuous(30, 30, 0, ("restart", "kill", "disconnect"), 42, 1, 2),
                                 "triad_distributed", 0, ("sequencer", "storage", "observer"), 200)
    lines = [line for line in out.splitlines() if line.startswith("chaos cc-")]
    assert lines == [f"chaos {e.id}: {e.action} on {e.node} at {e.at_sec:g}s -> "
                     f"{'PodChaos' if e.action in ('restart', 'kill') else 'NetworkChaos'}" + (
                         " (the StatefulSet recreates the pod at once: down_secs is not kept)" if e.action == "restart"
                         else " (the kubelet restarts the container (with its back-off): down_secs is not kept)"
                         if e.action == "kill" else "") for e in expected]
    assert (tmp_path / "k" / "chaos" / "01-workflow-soak-triad-distributed-continuous.yaml").is_file()


BINARIES = {"g1": "world_viewer_live", "g2": "oasis7_chain_runtime"}


@pytest.mark.parametrize("kind", ["g1", "g2"])
def test_the_real_parsers_accept_the_rendered_argv_once_the_launcher_resolved_the_peers(kind: str,
                                                                                       tmp_path: Path) -> None:
    from soakk8s import render
    s = settings(kind, "triad_distributed", node_bin=f"/opt/node/{BINARIES[kind]}")
    r = render.render(s, (), (), bytes(32))
    log = tmp_path / "argv.jsonl"
    env = {**ENV, "SOAK_STANDIN_CHECK_ONLY": "1", "SOAK_STANDIN_ARGV_LOG": str(log)}
    addresses = {s.service_host(n): f"10.96.0.{i}" for i, n in enumerate(("sequencer", "storage", "observer"), 10)}
    for sts in (o for o in r.objects if o["kind"] == "StatefulSet"):
        node = sts["spec"]["template"]["spec"]["containers"][0]
        assert node["args"][0] == s.node_bin
        resolved = [node["command"][i + 1] for i, a in enumerate(node["command"]) if a == "--resolve"]
        argv = launch.substitute(node["args"][1:], {h: addresses[h] for h in resolved})
        ok = subprocess.run([sys.executable, str(STANDINS / BINARIES[kind]), *argv], env=env,
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
        if kind == "g2":  # unresolved Service names: SocketAddr refuses them, as the real binary would
            raw = subprocess.run([sys.executable, str(STANDINS / BINARIES[kind]), *node["args"][1:]], env=env,
                                 capture_output=True, text=True, timeout=60)
            assert raw.returncode == 1, raw.stdout
    verdicts = [json.loads(line)["verdict"] for line in log.read_text().splitlines()]
    assert verdicts == (["ok"] * 3 if kind == "g1" else ["ok", "rejected"] * 3)


def test_launcher_prepares_resolves_writes_its_pid_and_execs_in_the_work_dir(tmp_path: Path) -> None:
    key = tmp_path / "secret" / "config.toml"
    key.parent.mkdir()
    key.write_text('[node]\nprivate_key = "00"\n')
    work, reports, pidfile = tmp_path / "w", tmp_path / "w" / "out" / "r", tmp_path / "run" / "node.pid"
    common = ["--work-dir", str(work), "--report-dir", str(reports), "--key", str(key)]
    prep = subprocess.run([sys.executable, "-m", "soakk8s.launch", *common, "--prepare"], env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert prep.returncode == 0 and reports.is_dir() and (work / "config.toml").read_text() == key.read_text()
    show = "import json, os, sys; print(json.dumps([os.getpid(), os.getcwd(), sys.argv[1:]]))"
    proc = subprocess.run([sys.executable, "-m", "soakk8s.launch", *common, "--pidfile", str(pidfile),
                           "--resolve", "localhost", "--", sys.executable, "-c", show, "localhost:5611",
                           "/ip4/localhost/tcp/5651"], env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    pid, cwd, args = json.loads(proc.stdout)
    assert int(pidfile.read_text()) == pid and cwd == str(work)
    assert args == ["127.0.0.1:5611", "/ip4/127.0.0.1/tcp/5651"]


def test_kubectl_missing_is_a_usage_error_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = _cli(["status", str(tmp_path)], capsys)
    assert code == 2 and "kubectl not found on PATH" in err


def test_no_cluster_is_reported_in_one_line_before_anything_is_applied(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from soakk8s import render
    render.write(render_case("g1", "triad"), tmp_path / "k")
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "none",
        "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
        "users": [{"name": "none", "user": {}}]}))
    monkeypatch.setenv("KUBECONFIG", str(config))
    for command in ("apply", "status", "delete"):
        code, _, err = _cli([command, str(tmp_path / "k")], capsys)
        assert code == 3 and "no Kubernetes cluster reachable with kubectl's current context" in err, err
        assert len(err.strip().splitlines()) == 1
    code, _, err = _cli(["apply", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "not a directory rendered by soak-k8s render" in err


STANDIN_KUBECTL = '''#!/usr/bin/env python3
"""kubectl stand-in: records each argv; 'version' has a server; 'get pods' answers one more
ready pod per call, up to READY."""
import json, os, sys
log = os.environ["KUBECTL_LOG"]
args = [a for a in sys.argv[1:] if not a.startswith("--request-timeout")]
with open(log, "a") as fh:
    fh.write(json.dumps(args) + "\\n")
if args[:1] == ["version"]:
    print(json.dumps({"clientVersion": {}, "serverVersion": {"gitVersion": "v1.37.0"}}))
elif args[:2] == ["get", "pods"]:
    calls = sum(1 for line in open(log) if '"pods"' in line)
    ready = min(calls - 1, int(os.environ["READY"]))
    pods = [{"metadata": {"name": f"p{i}"}, "status": {"conditions": [
        {"type": "Ready", "status": "True" if i < ready else "False"}]}} for i in range(3)]
    print(json.dumps({"items": pods}))
'''


def _standin_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in first on PATH; returns its log of argv lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(STANDIN_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    log = tmp_path / "kubectl.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("KUBECTL_LOG", str(log))
    return log


def test_apply_applies_the_workloads_waits_for_every_pod_with_progress_then_starts_the_chaos(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from soakk8s import kubectl, render
    render.write(render_case("g2", "triad_distributed"), tmp_path / "k")
    log = _standin_kubectl(tmp_path, monkeypatch)
    monkeypatch.setenv("READY", "3")
    lines: list[str] = []
    kubectl.apply(kubectl.Kubectl(out=lines.append), tmp_path / "k", timeout_s=30, poll_s=0.01)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    applies = [c for c in calls if c[0] == "apply"]
    assert [c[0] for c in calls][:2] == ["version", "apply"] and calls[-1][0] == "apply" and len(applies) == 2
    first = [a for a in applies[0] if a.endswith(".yaml")]
    assert len(first) == 16 and first[0].endswith("01-namespace-soak.yaml") and "--server-side" in applies[0]
    assert [Path(a).parent.name for a in applies[1] if a.endswith(".yaml")] == ["chaos"]
    pods = [c for c in calls if c[:2] == ["get", "pods"]]
    assert len(pods) == 4 and pods[0][pods[0].index("-l") + 1] == \
        "app.kubernetes.io/name=agent-world-soak,app.kubernetes.io/component=node,agent-world-soak/topology=triad_distributed"
    assert [line.split(":")[1].strip() for line in lines if "pods ready" in line] == \
        ["pods ready 0/3", "pods ready 1/3", "pods ready 2/3", "pods ready 3/3"]
    assert lines[-1] == "soak-k8s: chaos started: soak-triad-distributed-plan"
    # Pods that never get ready: a clear error, and the chaos is never started.
    log.unlink()
    monkeypatch.setenv("READY", "1")
    with pytest.raises(EvaluationError, match="only [01] of 3 node pods ready after 4s"):
        kubectl.apply(kubectl.Kubectl(out=lines.append), tmp_path / "k", timeout_s=4, poll_s=0.01)
    assert sum(1 for line in log.read_text().splitlines() if json.loads(line)[0] == "apply") == 1


def test_status_asks_for_this_soaks_objects_and_delete_keeps_the_namespace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from soakk8s import kubectl, render
    render.write(render_case("g1", "triad"), tmp_path / "k")
    log = _standin_kubectl(tmp_path, monkeypatch)
    lines: list[str] = []
    kubectl.status(kubectl.Kubectl(out=lines.append), tmp_path / "k")
    kubectl.delete(kubectl.Kubectl(out=lines.append), tmp_path / "k")
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    get = next(c for c in calls if c[0] == "get")
    assert get[get.index("-n") + 1] == "soak" and "workflows.chaos-mesh.org" in get[1]
    assert get[get.index("-l") + 1] == "app.kubernetes.io/name=agent-world-soak,agent-world-soak/topology=triad"
    deletes = [c for c in calls if c[0] == "delete"]
    assert [Path(a).parent.name for a in deletes[0] if a.endswith(".yaml")] == ["chaos"]   # chaos first
    deleted = [Path(a).name for a in deletes[1] if a.endswith(".yaml")]
    assert len(deleted) == len(list((tmp_path / "k").glob("*.yaml"))) - 1
    assert not any("namespace" in name for name in deleted)
