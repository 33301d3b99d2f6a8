"""Each gate defined once. Everything else is derived from these definitions:
the Prometheus alert rules (``alerts/generate.py``), the checker's window queries,
the dashboard threshold lines and RUNBOOK.md.

Contract used by the checker and dashboards (keep these fields stable):
- ``value``: PromQL instant vector, one series per judged thing, labels ``run_id``,
  ``topology`` and (for node-scoped gates) ``node``. Chaos exemptions are already inside
  it. A gate FAILS when value > threshold. Never relies on recording rules, so it also
  works on backfilled data.
- ``threshold_key``: key of ``alerts.profiles.Profile.thresholds``; None means the
  threshold is 0 (any positive value fails).
- ``data``: PromQL instant vector that is non-empty exactly when there is enough data to
  judge; empty over the whole window means ``insufficient_data``.
- ``breach``: value compared with the ``soak_gate_threshold`` series (used by alerts).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["critical", "warning"]
JOIN = "on(run_id, topology)"


def threshold(key: str) -> str:
    """The active threshold for ``key`` as a PromQL vector (labels run_id, topology)."""
    return f'max by (run_id, topology) (soak_gate_threshold{{gate="{key}"}})'


@dataclass(frozen=True)
class Gate:
    name: str                 # snake_case id: summary.json / junit key
    alert: str                # Soak + CamelCase alert name
    severity: Severity        # critical fails the run; warning is reported only
    value: str                # PromQL: the measured figure (see module doc)
    data: str                 # PromQL: non-empty when there is enough data to judge
    threshold_key: str | None
    for_: str                 # how long the breach must last before the alert fires
    exempt: tuple[str, ...]   # chaos actions whose windows (plus grace) exempt the gate
    grace: str                # exemption lasts this long after the fault ends
    summary: str
    description: str
    scope: Literal["node", "topology", "run"] = "node"

    @property
    def breach(self) -> str:
        if self.threshold_key is None:
            return f"({self.value}) > 0"
        return f"({self.value}) > {JOIN} group_left() {threshold(self.threshold_key)}"
