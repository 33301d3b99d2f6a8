"""One PNG per topology: heights, lag, DistFS failure ratio, RSS, open fds, disk; chaos
windows shaded and labelled with action and node, each failed gate's first failure marked,
threshold lines from the gates' thresholds. Resource panels start at zero with a minimum
span, so a few KiB of noise never looks like a leak."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from alerts.units import human_bytes  # noqa: E402

if TYPE_CHECKING:
    from checker.api import TopologyVerdict

MiB = float(2 ** 20)


class Panel(NamedTuple):
    key: str            # series key (checker.figures.collect_figures)
    title: str
    gate: str | None    # the gate whose threshold is drawn (same unit as the panel)
    scale: float = 1.0  # divide values by this
    floor: float = 0.0  # the y axis spans at least [0, floor] (in scaled units); 0: autoscale
    # Gates whose first failure is marked on this panel.
    marks: tuple[str, ...] = ()


PANELS = (
    Panel("heights", "committed height", None,
          marks=("consensus_stalled", "committed_height_regressed", "consensus_fork_detected", "process_crashed",
                 "process_down", "reports_missing", "reward_invariant_violated", "exporter_down",
                 "exporter_scrape_failing")),
    Panel("lag", "lag (blocks, fault windows excluded)", "consensus_lag_high", marks=("consensus_lag_high",)),
    Panel("distfs_ratio", "DistFS failure ratio (cumulative)", "distfs_failure_ratio_high", floor=0.05,
          marks=("distfs_failure_ratio_high", "distfs_recent_failure_ratio_high", "distfs_failure_reason_burst")),
    Panel("rss", "RSS (MiB; axis from 0, at least 256 MiB)", None, MiB, 256.0, marks=("memory_growth_high",)),
    Panel("fds", "open file descriptors (axis from 0, at least 64)", None, 1.0, 64.0, marks=("fd_growth_high",)),
    Panel("disk", "node directory size (MiB; axis from 0, at least 64 MiB)", None, MiB, 64.0,
          marks=("disk_growth_high",)),
)


def build_figure(v: "TopologyVerdict") -> Any:
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(11, 2.3 * len(PANELS) + 1), sharex=True)
    thresholds = {g.name: g.threshold for g in v.gates}
    failed = {g.name: g for g in v.gates if g.status == "fail" and g.first_failed_at is not None}
    t0 = v.since
    windows = v.series.get("chaos_windows", [])
    for i, (ax, panel) in enumerate(zip(axes, PANELS)):
        top = 0.0
        for node, pts in sorted(v.series.get(panel.key, {}).items()):
            xs, ys = _with_gaps(pts, t0, panel.scale)
            ax.plot(xs, ys, label=node, linewidth=1.2)
            top = max([top, *(y for y in ys if not math.isnan(y))])
        if panel.gate in thresholds and math.isfinite(thresholds[panel.gate]):
            ax.axhline(thresholds[panel.gate], color="red", linestyle="--", linewidth=1, label="threshold")
            top = max(top, thresholds[panel.gate])
        if panel.floor:
            ax.set_ylim(0, max(panel.floor, top * 1.1))
        for w in windows:
            ax.axvspan(w["start"] - t0, w["end"] - t0 + 1, color="orange", alpha=0.2)
            if i == 0:   # labelled once, on the top panel: action and node
                ax.annotate(f"{w['action']} {w['node']}", xy=(w["start"] - t0, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(2, -2), textcoords="offset points", fontsize=7, rotation=90, va="top",
                            color="darkorange", gid="chaos-label")
        for name in panel.marks:
            g = failed.get(name)
            if g is None:
                continue
            x = g.first_failed_at - t0
            ax.axvline(x, color="crimson", linewidth=1.2, linestyle=":")
            ax.annotate(f"{g.alert} first fails" + (f" ({g.worst_node})" if g.worst_node else ""),
                        xy=(x, 0.5), xycoords=("data", "axes fraction"), xytext=(3, 0), textcoords="offset points",
                        fontsize=7, color="crimson", gid="first-failure")
        ax.set_title(panel.title, fontsize=9, y=1.0)   # a fixed position: not laid out again on every draw
        ax.grid(alpha=0.3)
        # One legend, on the top panel: every panel draws the same nodes in the same colours
        # (a legend per panel took a third of the plot's time at 10 nodes).
        if i == 0 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", ncol=min(5, len(ax.get_legend_handles_labels()[0])))
    start = datetime.fromtimestamp(t0, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    axes[-1].set_xlabel(f"seconds since {start} (orange: chaos windows, labelled action node; "
                        "red dashed: threshold; red dotted: a gate's first failure)")
    growth = _rss_growth(v)
    fig.suptitle(f"{v.topology}: {v.status.upper()}" + (f" (largest RSS growth over the window: {growth})"
                                                          if growth else ""), fontsize=11)
    # Fixed margins: tight_layout drew the whole figure once more only to measure it.
    fig.subplots_adjust(left=0.07, right=0.98, top=0.95, bottom=0.05, hspace=0.35)
    return fig


def plot_topology(v: "TopologyVerdict", out: Path) -> Path:
    fig = build_figure(v)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _rss_growth(v: "TopologyVerdict") -> str | None:
    """The largest last-minus-first RSS of any node, as text (context for the RSS panel)."""
    growth = [pts[-1][1] - pts[0][1] for pts in v.series.get("rss", {}).values() if len(pts) > 1]
    return human_bytes(max(growth, key=abs)) if growth else None


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
