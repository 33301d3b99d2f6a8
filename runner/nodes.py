"""Node processes: launch in their own session and directory, wait until ready, stop, pause,
sample RSS."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Iterable

import psutil

from runner import g2
from runner.topology import NodeSpec
from soakcore.errors import EvaluationError
from soakcore.files import tail

STOP_TIMEOUT_S = 10.0


@dataclass
class NodeProc:
    spec: NodeSpec
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: dict[str, int] = field(default_factory=lambda: {"chaos": 0, "crash": 0})
    intended_down: bool = False   # chaos (or shutdown) took it down on purpose
    crashes: list[str] = field(default_factory=list)
    first_started_at: float | None = None  # unix s of the first start in this run
    launch_prefix: tuple[str, ...] = ()    # argv before the node's own (chaos: start it in its cgroup)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        for d in (self.spec.work_dir, self.spec.report_dir, self.spec.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self.spec.shared_key is not None:  # G2: the topology's one root key (created by the first start)
            g2.install_key(self.spec.shared_key, self.spec.work_dir)
        (self.spec.log_dir / "command.txt").write_text(shlex.join(self.spec.argv) + "\n")
        with open(self.spec.log_dir / "stdout.log", "ab") as out, open(self.spec.log_dir / "stderr.log", "ab") as err:
            # Own session: a Ctrl-C on the terminal reaches the runner only, which stops nodes in order.
            self.proc = subprocess.Popen([*self.launch_prefix, *self.spec.argv], cwd=self.spec.work_dir, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        self.intended_down = False
        if self.first_started_at is None:
            self.first_started_at = time.time()

    def send(self, sig: signal.Signals) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            os.kill(self.proc.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Stop on purpose; returns the exit code. A paused process is continued first."""
        self.intended_down = True
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.send(signal.SIGCONT)
            self.send(sig)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.send(signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def exited_unexpectedly(self) -> int | None:
        """The exit code if the process died while nobody meant it to, else None."""
        if self.proc is None or self.intended_down:
            return None
        return self.proc.poll()

    def status(self) -> str:
        pid = self.pid
        if pid is None:
            return "exited"
        try:
            return psutil.Process(pid).status()
        except psutil.Error:
            return "exited"

    def sample_rss(self, now: float) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                row = f"{now:.3f},{pid},{p.memory_info().rss},{p.num_fds()},{p.num_threads()}\n"
        except psutil.Error:
            return
        path = self.spec.log_dir / "rss.csv"
        new = not path.exists()
        with open(path, "a") as fh:
            if new:
                fh.write("timestamp,pid,rss_bytes,open_fds,threads\n")
            fh.write(row)


class StartupError(EvaluationError):
    """A node exited during start-up or never became ready: the topology cannot run (exit 3)."""


# A node without a health URL (G1) counts as started once its process has lived this long: a
# parser that refuses the argv exits well within it.
MIN_ALIVE_SECS = 1.0


def stderr_line(node: NodeProc, max_chars: int = 300) -> str:
    """The tail of the node's stderr as one line."""
    text = " ".join(tail(node.spec.log_dir / "stderr.log", 2000).split())
    return ("..." + text[-max_chars:]) if len(text) > max_chars else (text or "(stderr empty)")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _not_ready(node: NodeProc, seen_health: set[str]) -> str | None:
    """None when the node is ready, else what it is waiting for. G2: ``/healthz`` answers 200
    (it is unconditional: it only proves the listener), then ``/v1/chain/status`` says
    ``running: true``; never /healthz alone."""
    spec = node.spec
    if spec.health_url is None or spec.status_url is None:
        started = node.first_started_at or time.time()
        return None if time.time() - started >= MIN_ALIVE_SECS else "process starting"
    try:
        if spec.node not in seen_health:
            code, _ = _get(spec.health_url)
            if code != 200:
                return f"{spec.health_url} answered {code}"
            seen_health.add(spec.node)
        code, body = _get(spec.status_url)
        if code != 200:
            return f"{spec.status_url} answered {code}"
        running = json.loads(body).get("running")
        return None if running is True else f"{spec.status_url}: running is {json.dumps(running)}"
    except (OSError, ValueError, AttributeError) as exc:
        return f"{spec.health_url if spec.node not in seen_health else spec.status_url}: {exc}"


def wait_ready(nodes: Iterable[NodeProc], timeout: float, stop: threading.Event | None = None) -> None:
    """Until every node is ready (``_not_ready``); a node that exits first fails at once with
    its exit code and stderr tail, one that is not ready in ``timeout`` s with what it waited
    for (StartupError). An interrupt ends the wait."""
    pending = {n.spec.node: n for n in nodes}
    seen_health: set[str] = set()
    why: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while pending:
        for name, node in list(pending.items()):
            code = node.proc.poll() if node.proc is not None else -1
            if code is not None:
                raise StartupError(f"{name} exited with code {code} during start-up: {stderr_line(node)}")
            reason = _not_ready(node, seen_health)
            if reason is None:
                del pending[name]
            else:
                why[name] = reason
        if not pending or (stop is not None and stop.is_set()):
            return
        if time.monotonic() > deadline:
            waiting = "; ".join(f"{n}: {why.get(n, 'starting')}" for n in pending)
            raise StartupError(f"not ready after {timeout:g}s (--startup-timeout-secs): {waiting}")
        time.sleep(0.2)


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
