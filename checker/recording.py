"""Recorded gate values for data that never had the rules run over it (a backfilled history,
an archived TSDB): ``promtool tsdb create-blocks-from rules`` evaluates the gates' recording
rules (soak:gate_value and soak:gate_coverage, the ``soak-gate-values`` group of ``alerts.generate``) over
a span against a Prometheus that holds the raw data, and writes the recordings as TSDB
blocks. Copied into that Prometheus's data folder and loaded (a restart), the checker then
judges from them (``checker.api.judge_recorded``) like on a live run's TSDB.

Recording costs about one raw judging (each rule is evaluated once over the span at the
evaluation interval); it pays off when the same data are judged more than once.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from alerts.generate import gate_value_group
from soakcore.errors import EvaluationError
from soakcore.services import PROMTOOL_BIN, find_binary

# Evaluation interval of backfilled recordings: a live soak's Prometheus evaluates its rules at
# the scrape interval, usually a few seconds to 15 s.
EVAL_INTERVAL_SECS = 15.0


def gate_value_rules() -> dict[str, object]:
    """The recording rules of the gate values and their coverage only (alerting rules are not
    backfilled, so the coverage does not say the alert rules ran)."""
    return {"groups": [gate_value_group(alerting=False)]}


def record_gate_values(prometheus_url: str, start: float, end: float, out_dir: Path,
                       eval_interval: float = EVAL_INTERVAL_SECS, timeout: float = 1800.0) -> list[Path]:
    """Write soak:gate_value blocks for [start, end] (evaluations at ``start + k * eval_interval``)
    into ``out_dir``, from the raw data of the Prometheus at ``prometheus_url``; the new block
    folders. Move them into that Prometheus's data folder and restart it to judge from them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in out_dir.iterdir()}
    rules = out_dir.parent / f"{out_dir.name}.rules.yml"
    rules.write_text(yaml.safe_dump(gate_value_rules(), sort_keys=False, width=1 << 16))
    argv = [find_binary(PROMTOOL_BIN), "tsdb", "create-blocks-from", "rules", "--quiet",
            f"--start={int(start)}", f"--end={int(end) + 1}", f"--url={prometheus_url}",
            f"--eval-interval={eval_interval:g}s", f"--output-dir={out_dir}", str(rules)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EvaluationError(f"promtool could not record the gate values: {exc}") from exc
    finally:
        rules.unlink(missing_ok=True)
    if done.returncode != 0:
        raise EvaluationError(f"promtool could not record the gate values: {done.stderr.strip()[-500:]}")
    return sorted(p for p in out_dir.iterdir() if p.name not in before and p.is_dir())


def move_blocks(blocks: list[Path], data_dir: Path) -> None:
    """Move recorded blocks into a (stopped, or about to be restarted) Prometheus's data folder."""
    for block in blocks:
        shutil.move(str(block), str(data_dir / block.name))
