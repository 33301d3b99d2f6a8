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
BLIND_POLLS = 3   # failed polls in a row before the blind spot goes into the notes


def _mmss(secs: float) -> str:
    secs = max(0, int(secs))
    return f"{secs // 3600:d}:{secs // 60 % 60:02d}:{secs % 60:02d}"


class Progress:
    """Progress from Prometheus. When Prometheus cannot be queried the output says so (each time
    that changes), and a blind spot longer than ``BLIND_POLLS`` intervals goes into ``notes``
    (the topology's notes: summary and failures.md), because --abort-on-fail cannot act then."""

    def __init__(self, cfg: "RunConfig", topology: str, stack: "Stack", t0: float,
                 notes: list[str] | None = None) -> None:
        self.cfg, self.topology, self.stack, self.t0 = cfg, topology, stack, t0
        self.notes = notes if notes is not None else []
        self.tty = sys.stderr.isatty()
        self._last_plain = 0.0
        self._blind_since: float | None = None   # time.time() of the first failed query
        self._blind_noted = False

    def update(self, nodes: dict[str, "NodeProc"], active: set[tuple[str, str]]) -> list[str]:
        """Print progress; return the critical alerts firing for this topology ([] when unknown)."""
        sel = f'run_id="{self.cfg.run_id}",topology="{self.topology}"'
        rows = self.stack.query(f"soak_consensus_committed_height{{{sel}}}")
        alerts = self.stack.query(f'ALERTS{{alertstate="firing",{sel}}}') if rows is not None else None
        changed = self._track(alerts is not None)
        heights = {r.get("metric", {}).get("node", "?"): (r.get("value") or ["", "?"])[-1] for r in rows or []}
        labels = [a.get("metric") or {} for a in alerts or []]
        critical = sorted({str(m.get("alertname")) for m in labels if m.get("severity") == "critical"})
        names = sorted({str(m.get("alertname")) for m in labels if m.get("severity") != "info"})
        elapsed = time.time() - self.t0
        line = (f"[{self.topology} {_mmss(elapsed)} / {_mmss(self.cfg.duration_secs)}] heights "
                + " ".join(f"{n}={heights.get(n, '-')}" for n in nodes)
                + (f" | chaos: {', '.join(f'{a} {n}' for n, a in sorted(active))}" if active else "")
                + (f" | alerts firing: {', '.join(names) if names else 'none'}" if alerts is not None
                   else " | alerts: UNKNOWN (Prometheus not answering)"))
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line[:200])
            sys.stderr.flush()
        elif changed or time.monotonic() - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = time.monotonic()
            print(f"soak-run: {line}", file=sys.stderr, flush=True)
        return critical

    def _say(self, text: str) -> None:
        print(("\n" if self.tty else "") + f"soak-run: {self.topology}: {text}", file=sys.stderr, flush=True)

    def _track(self, ok: bool) -> bool:
        """Follow whether Prometheus answers; True when that changed with this poll."""
        now = time.time()
        if ok:
            changed = self._blind_since is not None
            if changed:
                self._say(f"Prometheus answers again after {now - self._blind_since:.0f}s without answers")
                if self._blind_noted:
                    self.notes.append(f"Prometheus answered again at {_clock(now)} "
                                      f"({now - self._blind_since:.0f}s without answers)")
            self._blind_since, self._blind_noted = None, False
            return changed
        if self._blind_since is None:
            self._blind_since = now
            self._say(f"cannot query Prometheus ({self.stack.query_error}); heights and alerts unknown until it answers")
            return True
        elif not self._blind_noted and now - self._blind_since > BLIND_POLLS * self.cfg.interval_s:
            self._blind_noted = True
            what = "--abort-on-fail could not act" if self.cfg.abort_on_fail else "progress and alerts were unknown"
            note = (f"alerts could not be read from Prometheus since {_clock(self._blind_since)} "
                    f"(more than {BLIND_POLLS} poll intervals): {what}; last error: {self.stack.query_error}")
            self.notes.append(note)
            self._say(note)
        return False


def clear_line() -> None:
    """End the rewritten progress line on a terminal, so what follows starts on a clean line."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[2K")
        sys.stderr.flush()


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))
