"""Resolved run configuration: every setting and the seed, saved as run_config.json."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.profiles import Profile
from runner.plan import ChaosEvent, Continuous
from runner.topofile import CustomTopology
from runner.topology import LaunchSettings


@dataclass(frozen=True)
class RunConfig:
    run_id: str
    run_dir: Path
    profile: Profile
    duration_secs: float
    topologies: tuple[str, ...]
    launch: LaunchSettings
    interval_s: float
    startup_timeout_secs: float
    chaos_plan: Path | None
    plan_events: tuple[ChaosEvent, ...]
    continuous: Continuous | None
    prometheus_url: str | None
    alertmanager_url: str | None
    fail_fast: bool
    abort_on_fail: bool
    on_crash: str
    prewarm: bool
    custom_topologies: tuple[CustomTopology, ...] = ()
    exporter_port: int = 0              # 0: a free port (a fixed one suits an existing Prometheus)
    exporter_host: str = "127.0.0.1"    # --exporter-listen HOST (a compose Prometheus scrapes it)
    repeat_argv: tuple[str, ...] = ()   # `python3 -m runner <these>` repeats the run (same seed)
    weak_gates: tuple[str, ...] = ()    # overrides that leave a gate unable to fail (--allow-weak-gates)
    drain_secs: float | None = None     # None: the longest gate for + two intervals

    def to_json(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, Path):
                return str(v)
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if isinstance(v, dict) or hasattr(v, "items"):
                return {k: plain(x) for k, x in v.items()}
            return v
        doc = plain(self)
        doc["profile"] = self.profile.name
        doc["thresholds"] = dict(self.profile.thresholds)
        doc["seed"] = self.launch.seed
        return doc

    def save(self, extra: dict[str, Any] | None = None) -> None:
        (self.run_dir / "run_config.json").write_text(json.dumps({**self.to_json(), **(extra or {})}, indent=2) + "\n")
