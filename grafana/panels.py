"""Panel builders shared by the dashboards: selectors, layout, and the gate panels.

Gate panels never spell gate PromQL themselves: they wrap ``alerts.gates.Gate.value`` and
``alerts.gates.threshold(key)`` with the dashboard's run/topology/node filter, so a change
to a gate reaches the alert rule, the checker and the dashboard at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grafanalib.core import GridPos, RowPanel, Stat, StateTimeline, Target, TimeSeries

import urllib.parse

from alerts.gates import SCOPE_LABELS, Gate, threshold
from alerts.generate import runbook_link

# Every panel reads through the dashboard's datasource variable, so the same JSON works when
# provisioned by docker-compose and when imported into an existing Grafana.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RUN_SEL = 'run_id=~"$run_id", topology=~"$topology"'
NODE_SEL = f'{RUN_SEL}, node=~"$node"'
# The filters a gate value is joined with; they carry exactly the labels of the gate's scope.
SCOPE_FILTER = {"node": f"soak_node_info{{{NODE_SEL}}}", "topology": f"soak_run_info{{{RUN_SEL}}}"}
GREEN, RED, GREY = "green", "red", "#808080"
# Gates without a threshold key fail on any positive value; Grafana colours value >= step,
# so the red step sits just above zero.
ZERO_THRESHOLD_STEP = 1e-9
WIDTH = 24  # Grafana's grid width
# The dashboard's Alertmanager variable (a text box, default the compose Alertmanager).
ALERTMANAGER_VAR = "alertmanager"
ALERTMANAGER_DEFAULT = "http://127.0.0.1:9093"
# The runbook's location (a text box, default the checked-in rules' base URL).
RUNBOOK_VAR = "runbook"


def gate_links(gate: Gate) -> list[dict[str, Any]]:
    """A gate panel's links: its runbook section (``$runbook``, default the rules' base URL
    ``alerts.generate.DEFAULT_RUNBOOK_BASE_URL``), and its alerts in Alertmanager."""
    matcher = urllib.parse.quote(f'{{alertname="{gate.alert}"}}', safe="")
    return [{"title": f"Runbook: {gate.alert}", "url": runbook_link(gate.anchor, f"${{{RUNBOOK_VAR}}}"),
             "targetBlank": True},
            {"title": f"{gate.alert} in Alertmanager",
             "url": f"${{{ALERTMANAGER_VAR}}}/#/alerts?silenced=false&inhibited=true&filter={matcher}",
             "targetBlank": True}]


def sel(metric: str, extra: str = "", scope: str = "node") -> str:
    """``metric`` filtered by the dashboard variables (plus ``extra`` matchers)."""
    base = NODE_SEL if scope == "node" else RUN_SEL
    return f"{metric}{{{base}{', ' + extra if extra else ''}}}"


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, instant=instant, datasource=DATASOURCE)


def filtered_gate_value(gate: Gate) -> str:
    """The gate's own value restricted to the selected run/topology/node; run-scoped gates
    (the exporter dead man's switch) carry no run labels and are shown unfiltered."""
    if gate.scope == "run":
        return gate.value
    return f"({gate.value}) and on({SCOPE_LABELS[gate.scope]}) {SCOPE_FILTER[gate.scope]}"


def filtered_threshold(key: str) -> str:
    return f"{threshold(key)} and on(run_id, topology) {SCOPE_FILTER['topology']}"


@dataclass(frozen=True)
class Cell:
    """A panel and its size; ``Layout`` assigns positions row by row."""

    panel: Any
    w: int = 8
    h: int = 7


class Layout:
    """Places rows and cells left to right, wrapping at the grid width."""

    def __init__(self) -> None:
        self.panels: list[Any] = []
        self.x = self.y = self.row_h = 0

    def row(self, title: str, cells: list[Cell], collapsed: bool = False) -> None:
        self._newline()
        row = RowPanel(title=title, gridPos=GridPos(h=1, w=WIDTH, x=0, y=self.y), collapsed=collapsed)
        self.panels.append(row)
        self.y += 1
        for cell in cells:
            if self.x + cell.w > WIDTH:
                self._newline()
            cell.panel.gridPos = GridPos(h=cell.h, w=cell.w, x=self.x, y=self.y)
            (row.panels if collapsed else self.panels).append(cell.panel)
            self.x += cell.w
            self.row_h = max(self.row_h, cell.h)

    def _newline(self) -> None:
        self.y += self.row_h
        self.x = self.row_h = 0


def series(title: str, targets: list[Target], unit: str = "short", description: str = "",
           **kw: Any) -> TimeSeries:
    return TimeSeries(title=title, dataSource=DATASOURCE, targets=targets, unit=unit,
                      description=description, legendDisplayMode="table", legendPlacement="right",
                      **kw)


def timeline(title: str, targets: list[Target], description: str = "") -> StateTimeline:
    return StateTimeline(title=title, dataSource=DATASOURCE, targets=targets, description=description,
                         mergeValues=True, showValue="never",
                         thresholds=[{"color": GREY, "value": None}, {"color": RED, "value": 1}])


def gate_stat(gate: Gate) -> Stat:
    """Worst current value of one gate; red when it is above the active profile's threshold.

    The threshold is a query too (``configFromData`` turns it into the red step), because it
    differs per profile and per command-line override.
    """
    targets = [target(f"max({filtered_gate_value(gate)})", gate.name, "value", instant=True)]
    steps = [{"color": GREEN, "value": None}, {"color": RED, "value": ZERO_THRESHOLD_STEP}]
    transformations = []
    if gate.threshold_key is not None:
        targets.append(target(f"max({filtered_threshold(gate.threshold_key)})", "threshold", "threshold",
                              instant=True))
        transformations.append({"id": "configFromData", "options": {
            "configRefId": "threshold", "applyTo": {"id": "byFrameRefID", "options": "value"},
            "mappings": [{"fieldName": "threshold", "handlerKey": "threshold1"}]}})
    return Stat(title=gate.alert, dataSource=DATASOURCE, targets=targets, thresholds=steps,
                transformations=transformations, colorMode="background", graphMode="none",
                reduceCalc="lastNotNull", noValue="no data", format=_unit(gate.unit),
                description=_gate_description(gate), links=gate_links(gate))


def gate_trend(gate: Gate) -> TimeSeries:
    """The gate value per judged series over time, with the threshold as a dashed line."""
    legend = "{{node}}" if gate.scope == "node" else "{{topology}}"
    targets = [target(filtered_gate_value(gate), legend, "value")]
    if gate.threshold_key is not None:
        targets.append(target(filtered_threshold(gate.threshold_key), "threshold {{topology}}", "threshold"))
    dashed = {"matcher": {"id": "byFrameRefID", "options": "threshold"}, "properties": [
        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
        {"id": "color", "value": {"mode": "fixed", "fixedColor": RED}}]}
    return series(gate.alert, targets, _unit(gate.unit), _gate_description(gate), overrides=[dashed],
                  links=gate_links(gate))


def _gate_description(gate: Gate) -> str:
    limit = f"threshold `{gate.threshold_key}`" if gate.threshold_key else "0"
    return (f"Gate {gate.name} ({gate.severity}): fails when the value is above {limit}. First look: {gate.runbook} "
            "Links (top left): the runbook section and this alert in Alertmanager.")


# Gate units (free text in gates.py) -> Grafana unit ids.
_UNITS = {"s": "s", "ratio": "percentunit", "bytes/h": "bytes", "blocks": "short", "fds/h": "short"}


def _unit(unit: str) -> str:
    return _UNITS.get(unit, "short")
