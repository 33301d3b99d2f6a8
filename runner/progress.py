"""Live progress: one rewritten line on a terminal, plain log lines otherwise."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.config import RunConfig
    from runner.nodes import NodeProc
    from runner.stack import Stack

PLAIN_EVERY_S = 10.0


def _mmss(secs: float) -> str:
    secs = max(0, int(secs))
    return f"{secs // 3600:d}:{secs // 60 % 60:02d}:{secs % 60:02d}"


class Progress:
    def __init__(self, cfg: "RunConfig", topology: str, stack: "Stack", t0: float) -> None:
        self.cfg, self.topology, self.stack, self.t0 = cfg, topology, stack, t0
        self.tty = sys.stderr.isatty()
        self._last_plain = 0.0

    def update(self, nodes: dict[str, "NodeProc"], active: set[tuple[str, str]]) -> list[str]:
        """Print progress; return the critical alerts firing for this topology."""
        sel = f'run_id="{self.cfg.run_id}",topology="{self.topology}"'
        heights = {r["metric"].get("node", "?"): r["value"][1]
                   for r in self.stack.query(f"soak_consensus_committed_height{{{sel}}}")}
        alerts = self.stack.query(f'ALERTS{{alertstate="firing",{sel}}}')
        critical = sorted({a["metric"]["alertname"] for a in alerts if a["metric"].get("severity") == "critical"})
        names = sorted({a["metric"]["alertname"] for a in alerts if a["metric"].get("severity") != "info"})
        elapsed = time.time() - self.t0
        line = (f"[{self.topology} {_mmss(elapsed)} / {_mmss(self.cfg.duration_secs)}] heights "
                + " ".join(f"{n}={heights.get(n, '-')}" for n in nodes)
                + (f" | chaos: {', '.join(f'{a} {n}' for n, a in sorted(active))}" if active else "")
                + f" | alerts firing: {', '.join(names) if names else 'none'}")
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line[:200])
            sys.stderr.flush()
        elif time.monotonic() - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = time.monotonic()
            print(f"soak-run: {line}", file=sys.stderr, flush=True)
        return critical
