"""Shared plumbing of the conformance stand-ins (NOT their rules): record the argv, report a
rejection the way the real binaries do, or exec the simulator with the same argv.

Environment:
  SOAK_STANDIN_ARGV_LOG   file to append one JSON line per invocation to
                          ({"prog", "argv", "cwd", "verdict": "ok"|"rejected"|"help", "error"})
  SOAK_STANDIN_CHECK_ONLY if set, exit 0 after the checks instead of running the simulator
  SOAK_STANDIN_SIM_ARGS   JSON list of extra simulator-only arguments (fault switches, --seed,
                          --status-listen) appended when the simulator runs; never checked
  SOAK_STANDIN_PYTHON     interpreter for the simulator (default: this one)
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parent.parent.parent


class Rejected(Exception):
    """The real parser (or start-up) would refuse this argv; the message is its line."""


def record(prog: str, argv: list[str], verdict: str, error: str | None = None) -> None:
    log = os.environ.get("SOAK_STANDIN_ARGV_LOG")
    if not log:
        return
    line = json.dumps({"prog": prog, "argv": argv, "cwd": os.getcwd(), "verdict": verdict, "error": error})
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())   # one write with O_APPEND: lines never interleave
    finally:
        os.close(fd)


def reject(prog: str, argv: list[str], message: str, help_text: str) -> NoReturn:
    """Both real binaries: the error line on stderr, the help on stdout, exit 1."""
    record(prog, argv, "rejected", message)
    print(message, file=sys.stderr, flush=True)
    print(help_text, flush=True)
    sys.exit(1)


def show_help(prog: str, argv: list[str], help_text: str) -> NoReturn:
    record(prog, argv, "help")
    print(help_text, flush=True)
    sys.exit(0)


def run_simulator(prog: str, module: str, argv: list[str]) -> NoReturn:
    record(prog, argv, "ok")
    if os.environ.get("SOAK_STANDIN_CHECK_ONLY"):
        sys.exit(0)
    extra = json.loads(os.environ.get("SOAK_STANDIN_SIM_ARGS") or "[]")
    if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
        print(f"{prog} stand-in: SOAK_STANDIN_SIM_ARGS must be a JSON list of strings", file=sys.stderr)
        sys.exit(2)
    python = os.environ.get("SOAK_STANDIN_PYTHON") or sys.executable
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    sys.stdout.flush()
    os.execve(python, [python, "-m", module, *argv, *extra], env)
