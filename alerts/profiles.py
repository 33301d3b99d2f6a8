"""Every profile number, in one place. Thresholds reach Prometheus as
``soak_gate_threshold{gate="<key>"}`` series, so one rule file serves every profile.

Keys of ``thresholds`` are the threshold keys gates refer to (``Gate.threshold_key``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from soakcore.errors import UsageError

TOPOLOGIES = ("triad", "triad_distributed")


@dataclass(frozen=True)
class Profile:
    name: str
    duration_secs: int
    topologies: tuple[str, ...]
    # Under smoke a gate without enough data is a warning; under endurance/release a failure.
    insufficient_data_fails: bool
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def with_overrides(self, overrides: Mapping[str, float | None]) -> "Profile":
        """Return a copy with command-line overrides applied (None = keep profile value)."""
        merged = dict(self.thresholds)
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in merged:
                raise UsageError(f"unknown threshold {key!r}; known: {', '.join(sorted(merged))}")
            merged[key] = validate_threshold(key, value)
        return replace(self, thresholds=MappingProxyType(merged))


def validate_threshold(key: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"threshold {key}: expected a number, got {value!r}")
    if not math.isfinite(value):  # NaN compares false with everything: the gate could never fail
        raise UsageError(f"threshold {key}: must be a finite number, got {value}")
    if key.endswith("_ratio") and not 0.0 <= value <= 1.0:
        raise UsageError(f"threshold {key}: a ratio must be within 0..1, got {value}")
    if value < 0:
        raise UsageError(f"threshold {key}: must not be negative, got {value}")
    return float(value)


def weak_overrides(overrides: Mapping[str, float], duration_secs: float, tick_ms: float) -> list[str]:
    """Overrides that leave a gate unable to fail in this run, each with the reason. Such a
    run is refused unless the user allows weak gates; then they are listed in the verdict."""
    weak = []
    for key, value in sorted(overrides.items()):
        if key.endswith("_ratio") and value >= 1:
            weak.append(f"{key}={value:g}: a failure ratio can never exceed 1")
        elif key == "min_distfs_checks" and value > duration_secs * 1000 / tick_ms:
            weak.append(f"{key}={value:g}: more checks than the run can make ({duration_secs:g}s at one per "
                        f"{tick_ms:g} ms tick)")
        elif key in DURATION_KEYS and value >= duration_secs:
            weak.append(f"{key}={value:g}: not shorter than the {duration_secs:g}s run, so its gates cannot fire")
    return weak


MiB = 1024 * 1024
# Thresholds that are durations: an override as long as the run switches its gates off.
DURATION_KEYS = ("max_stall_secs", "max_report_gap_secs", "warmup_secs")

_SMOKE = {
    # SoakConsensusStalled: seconds with no committed-height rise anywhere in the topology,
    # fault windows exempt. Old script: 300/420/600. Lower it only with a faster block rate.
    "max_stall_secs": 300,
    # SoakConsensusLagHigh: p95 of (network_committed - committed) blocks per node over
    # lag_window. Old script: 12/8/5.
    "max_lag_p95": 12,
    # SoakDistfsFailureRatioHigh: failed/total of the run-cumulative challenge counters.
    # Old script: 0.25/0.15/0.10 (it used one tick's counters; we use cumulative ones).
    "max_distfs_failure_ratio": 0.25,
    # The DistFS ratio is judged only after this many checks; fewer is insufficient_data.
    "min_distfs_checks": 20,
    # SoakMemoryGrowthHigh: RSS slope (bytes/hour) after warm-up. A steady leak of 1 MiB/min
    # is 60 MiB/h. Raise only for nodes with known-bounded caches that fill slowly.
    "max_rss_growth_bytes_per_hour": 128 * MiB,
    # SoakFdGrowthHigh: open-fd slope per hour after warm-up; real nodes hold a steady set.
    "max_fd_growth_per_hour": 600,
    # SoakDiskGrowthHigh: node directory growth per hour after warm-up (stores, logs).
    "max_disk_growth_bytes_per_hour": 1024 * MiB,
    # SoakReportsMissing: seconds without a new epoch report outside chaos. Must exceed
    # several epochs of the epoch length the runner passes to nodes (default 10 s).
    "max_report_gap_secs": 120,
    # Slope gates (memory, fd, disk) ignore the first warmup_secs of each process.
    "warmup_secs": 120,
    # SoakFinalityLatencyHigh (warning, G2 nodes): p95 of the node's recent finality latency,
    # seconds. The upstream operator summary flags finality_latency_high at p95 >= 2000 ms
    # (G2.md section 5); the example node shows 1.1 s with 12 s slots. Raise it for slower slots.
    "max_finality_p95_secs": 2.0,
}

PROFILES: Mapping[str, Profile] = MappingProxyType({
    "soak_smoke": Profile("soak_smoke", 1500, TOPOLOGIES, False, MappingProxyType(dict(_SMOKE))),
    "soak_endurance": Profile("soak_endurance", 10800, ("triad_distributed",), True, MappingProxyType({
        **_SMOKE, "max_stall_secs": 420, "max_lag_p95": 8, "max_distfs_failure_ratio": 0.15,
        "min_distfs_checks": 200, "max_rss_growth_bytes_per_hour": 64 * MiB,
        "max_fd_growth_per_hour": 200, "max_disk_growth_bytes_per_hour": 512 * MiB,
        "max_report_gap_secs": 300, "warmup_secs": 600})),
    "soak_release": Profile("soak_release", 28800, ("triad_distributed",), True, MappingProxyType({
        **_SMOKE, "max_stall_secs": 600, "max_lag_p95": 5, "max_distfs_failure_ratio": 0.10,
        "min_distfs_checks": 500, "max_rss_growth_bytes_per_hour": 32 * MiB,
        "max_fd_growth_per_hour": 100, "max_disk_growth_bytes_per_hour": 256 * MiB,
        "max_report_gap_secs": 300, "warmup_secs": 900})),
})


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UsageError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None
