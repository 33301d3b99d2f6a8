"""Helpers for the dashboard tests (walking dashboard JSON, naming the metrics of PromQL),
and the tests of those helpers."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

DESIGN = Path(__file__).resolve().parent / "fixtures" / "DESIGN.md"  # copy of the design contract
# Prometheus' own series the dashboards may read: scrape health and the alert state.
PROMETHEUS_BUILTINS = frozenset({"up", "ALERTS"})
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                      "unless", "bool", "offset", "inf", "nan"})
# Literal values for the template variables: a real label value, like a user's selection.
VARIABLES = {"$run_id": "20261127-004800", "$topology": "triad_distributed", "$node": "sequencer"}


def catalog_metrics() -> set[str]:
    """Metric names of the metric catalog in code (``soakcore.catalog``; it covers the DESIGN.md
    table, tests/test_catalog.py)."""
    from soakcore.catalog import NAMES
    return set(NAMES)


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation of a dashboard."""
    for panel in panels(dashboard):
        for t in panel.get("targets") or []:
            yield f"panel {panel['title']!r} target {t['refId']}", t["expr"]
    for ann in dashboard["annotations"]["list"]:
        if "expr" in ann:
            yield f"annotation {ann['name']!r}", ann["expr"]


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression.

    Strips what can hold identifiers that are not metrics (strings, label matchers, range and
    subquery brackets, grouping label lists); what is left and not a function call or keyword
    is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\()?", text):
        if not match.group(2) and match.group(1) not in KEYWORDS:
            names.add(match.group(1))
    return names


def test_the_metric_name_extractor_finds_metrics_and_skips_labels_and_functions() -> None:
    expr = ('sum by (node, soak_x) (rate(soak_a_total{node=~"soak_y", job="up"}[5m])) / on(run_id) '
            "group_left() soak_b and ALERTS unless time() - soak_c offset 5m")
    assert metric_names(expr) == {"soak_a_total", "soak_b", "ALERTS", "soak_c"}


def test_the_catalog_is_read_from_design_md() -> None:
    names = catalog_metrics()
    assert {"soak_run_info", "soak_consensus_committed_height", "soak_exporter_scrape_error"} <= names
    assert len(names) >= 30
