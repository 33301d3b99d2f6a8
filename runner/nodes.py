"""Node processes: launch in their own session and directory, stop, pause, sample RSS."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field

import psutil

from runner.topology import NodeSpec

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

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        for d in (self.spec.work_dir, self.spec.report_dir, self.spec.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        (self.spec.log_dir / "command.txt").write_text(shlex.join(self.spec.argv) + "\n")
        with open(self.spec.log_dir / "stdout.log", "ab") as out, open(self.spec.log_dir / "stderr.log", "ab") as err:
            # Own session: a Ctrl-C on the terminal reaches the runner only, which stops nodes in order.
            self.proc = subprocess.Popen(self.spec.argv, cwd=self.spec.work_dir, stdout=out, stderr=err,
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


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
