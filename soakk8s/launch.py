"""``python3 -m soakk8s.launch``: the node container's entry point (and its init container's).

    python3 -m soakk8s.launch --work-dir W --report-dir R [--key FILE] --prepare
    python3 -m soakk8s.launch --work-dir W --report-dir R [--key FILE] --pidfile P [--resolve HOST]... -- ARGV...

Prepares the node's directories (and, G2, copies the topology key into the work dir as
``runner.g2.install_key`` does locally), then: replaces each ``--resolve`` host name in ARGV by
its IPv4 address (both generations parse peer addresses as IP literals; a Service's cluster IP
stays the same when the peer's pod is recreated), writes its own pid to the pidfile (the
exporter sidecar reads the node's /proc through it: the process keeps that pid across exec),
changes to the work dir and execs ARGV. No shell.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

from runner import g2
from soakcore.errors import SoakError, UsageError, run_cli

RESOLVE_WAIT_S = 120.0   # the cluster DNS may need a moment for a Service created with the pod


def resolve(host: str, wait_s: float = RESOLVE_WAIT_S) -> str:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return str(socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0])
        except socket.gaierror as exc:
            if time.monotonic() >= deadline:
                raise SoakError(f"--resolve {host}: {exc.strerror} after {wait_s:g}s") from None
            time.sleep(1.0)


def substitute(argv: list[str], addresses: dict[str, str]) -> list[str]:
    """Each host name replaced by its address wherever it appears in an argv item."""
    out = []
    for item in argv:
        for host, ip in addresses.items():
            item = item.replace(host, ip)
        out.append(item)
    return out


def _write_pid(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    def body() -> int:
        p = argparse.ArgumentParser(prog="python3 -m soakk8s.launch", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--work-dir", type=Path, required=True)
        p.add_argument("--report-dir", type=Path, required=True)
        p.add_argument("--key", type=Path, help="the topology's config.toml (G2), copied into the work dir")
        p.add_argument("--prepare", action="store_true", help="only create the directories and the key")
        p.add_argument("--pidfile", type=Path)
        p.add_argument("--resolve", action="append", default=[], metavar="HOST")
        p.add_argument("command", nargs=argparse.REMAINDER)
        a = p.parse_args(argv)
        command = a.command[1:] if a.command[:1] == ["--"] else a.command
        a.work_dir.mkdir(parents=True, exist_ok=True)
        a.report_dir.mkdir(parents=True, exist_ok=True)
        if a.key is not None:
            if not a.key.is_file():
                raise UsageError(f"--key {a.key}: not a file (is the topology's Secret mounted?)")
            g2.install_key(a.key, a.work_dir)
        if a.prepare:
            return 0
        if not command or a.pidfile is None:
            raise UsageError("expected --pidfile and the node's argv after --")
        command = substitute(command, {h: resolve(h) for h in a.resolve})
        _write_pid(a.pidfile)
        os.chdir(a.work_dir)
        sys.stdout.flush()
        os.execvp(command[0], command)
        return 1  # not reached
    run_cli("soak-k8s launch", body)


if __name__ == "__main__":
    main()
