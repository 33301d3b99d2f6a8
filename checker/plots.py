"""One PNG per topology: heights, lag, DistFS failure ratio, RSS; chaos windows shaded,
threshold lines from the gates' thresholds."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if TYPE_CHECKING:
    from checker.api import TopologyVerdict

PANELS = (("heights", "committed height", None), ("lag", "lag (blocks, fault windows excluded)", "consensus_lag_high"),
          ("distfs_ratio", "DistFS failure ratio (cumulative)", "distfs_failure_ratio_high"),
          ("rss", "RSS (MiB)", None))


def plot_topology(v: "TopologyVerdict", out: Path) -> Path:
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(10, 10), sharex=True)
    thresholds = {g.name: g.threshold for g in v.gates}
    t0 = v.since
    for ax, (key, title, gate) in zip(axes, PANELS):
        for node, pts in sorted(v.series.get(key, {}).items()):
            xs, ys = _with_gaps(pts, t0, 2**20 if key == "rss" else 1)
            ax.plot(xs, ys, label=node, linewidth=1.2)
        if gate in thresholds and math.isfinite(thresholds[gate]):
            ax.axhline(thresholds[gate], color="red", linestyle="--", linewidth=1, label="threshold")
        for w in v.series.get("chaos_windows", []):
            ax.axvspan(w["start"] - t0, w["end"] - t0 + 1, color="orange", alpha=0.2)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    start = datetime.fromtimestamp(t0, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    axes[-1].set_xlabel(f"seconds since {start} (orange: chaos windows)")
    fig.suptitle(f"{v.topology}: {v.status.upper()}", fontsize=12)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _with_gaps(points: list[tuple[float, float]], t0: float, scale: float) -> tuple[list[float], list[float]]:
    """Break the line where samples are missing (a series left out during a fault window)
    instead of drawing a straight line across the gap."""
    xs: list[float] = []
    ys: list[float] = []
    usual = min((b[0] - a[0] for a, b in zip(points, points[1:])), default=0.0)
    for i, (t, y) in enumerate(points):
        if i and t - points[i - 1][0] > 1.5 * usual:
            xs.append(float("nan"))
            ys.append(float("nan"))
        xs.append(t - t0)
        ys.append(y / scale)
    return xs, ys
