"""Judging a window: each gate from its one definition in ``alerts.gates``, as PromQL
aggregates over catalog metrics (so backfilled or archived data works too).

Three-valued like Jepsen: fail > insufficient_data > pass. A query error is never a pass:
it raises EvaluationError (exit 3).
"""
from __future__ import annotations

import json
import math
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from alerts.gates import GATES, Gate
from alerts.generate import GATE_COVERAGE, GATE_VALUE
from alerts.profiles import PROFILES, Profile
from checker.figures import collect_figures
from checker.promapi import Labels, Prom
from soakcore.errors import EvaluationError

# Resolution of every subquery and range query. Cost grows with points per series, so it is
# bounded whatever the window length: short windows (a smoke, a crash after seconds) get
# 1 s steps, windows up to ~2.8 h get STEP_SECS, longer ones window / MAX_POINTS (44 s at
# 24 h). Measured at 24 h: 216 s steps missed a 60 s invariant violation; 44 s catch it at
# about the same cost. 1 s steps over 30 min doubled the tests' time (nested lag subquery).
SHORT_POINTS = 400
STEP_SECS = 5
MAX_POINTS = 2000


@dataclass(frozen=True)
class GateResult:
    name: str
    alert: str
    severity: str
    status: str                 # pass | fail | insufficient_data
    value: float | None
    threshold: float
    query: str
    worst_node: str | None
    first_failed_at: float | None
    # Why the status is not simply the window's value against the threshold (an alert that
    # fired where the query passed, a threshold that cannot be judged against).
    note: str | None = None
    # The time the gate's query was evaluated at (``until``, or later to see a breach that
    # began by ``until`` last its ``for``): what reproduces it.
    evaluated_at: float | None = None
    # Where the gate's value came from: "recorded" (the rules' soak:gate_value, recorded live
    # or backfilled with promtool) or "raw" (recomputed from the catalog metrics).
    source: str = "raw"
    # False: the gate does not apply to this topology (``Gate.applies`` empty over the window,
    # e.g. the G2 status gates on G1 nodes): not judged, and not missing data either.
    applicable: bool = True


@dataclass(frozen=True)
class TopologyVerdict:
    run_id: str | None
    topology: str
    since: float
    until: float
    profile: Profile
    gates: tuple[GateResult, ...]
    figures: dict[str, Any]
    alerts_fired: tuple[dict[str, str], ...]
    disagreements: tuple[str, ...]
    series: dict[str, Any] = field(default_factory=dict)      # for plots
    timeline: tuple[dict[str, Any], ...] = ()
    queries: int = 0
    # False when the alert rules did not run in the window, as on backfilled or archived data
    # (recordings backfilled with promtool included): then there are no alerts to compare
    # with, and no disagreement.
    rules_evaluated: bool = True
    prometheus_version: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)   # the numbers actually used
    # Latest time judged: a breach that began by ``until`` was watched up to here (its
    # gate's ``for`` plus a scrape past ``until``, within the data's horizon).
    judged_until: float | None = None
    # Gates judged from their recorded values (soak:gate_value); the others from raw series.
    recorded_gates: tuple[str, ...] = ()

    @property
    def metric_gate_status(self) -> str:
        critical = [g for g in self.gates if g.severity == "critical" and g.applicable]
        if any(g.status == "fail" for g in critical):
            return "fail"
        if any(g.status == "insufficient_data" for g in critical):
            return "insufficient_data"
        return "pass"

    @property
    def status(self) -> str:
        s = self.metric_gate_status
        return "failed" if s == "fail" or (s == "insufficient_data" and self.profile.insufficient_data_fails) else "ok"


@dataclass(frozen=True)
class TopologyMeta:
    """What the runner knows of a topology that Prometheus does not."""

    topology: str
    started_at: float
    ended_at: float
    process_status: str
    notes: tuple[str, ...] = ()
    chaos_events: int = 0
    crashes: int = 0


@dataclass(frozen=True)
class RunMeta:
    run_dir: Path | None
    profile: Profile
    scenario: str = "unknown"
    chaos_plan: str | None = None
    chaos_continuous: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    duration_secs: float | None = None
    topologies: tuple[TopologyMeta, ...] = ()
    aborted: bool = False
    prometheus_url: str | None = None
    # What the verdict should say beyond the gates (damaged saved data, ...).
    notes: tuple[str, ...] = ()


def step_for(since: float, until: float) -> float:
    width = until - since
    return float(max(1, min(STEP_SECS, math.ceil(width / SHORT_POINTS)), math.ceil(width / MAX_POINTS)))


def _matches(labels: Labels, run_id: str | None, topology: str) -> bool:
    # Series without run_id/topology (e.g. the exporter dead-man's switch) concern every run.
    return labels.get("run_id", run_id) == run_id and labels.get("topology", topology) == topology


def _window(expr: str, since: float, until: float, step: float) -> str:
    return f"({expr})[{int(until - since)}s:{int(step)}s]"


def _sustained(g: Gate) -> str:
    """The gate's value held for its ``for`` duration (what the alert needs to fire)."""
    secs = _secs(g.for_)
    return g.value if secs == 0 else f"min_over_time(({g.value})[{secs}s:{max(1, secs // 6)}s])"


def _secs(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return int(float(duration[:-1]) * units[duration[-1]])


# How late Prometheus may first see a breach that began at the window's end (one scrape),
# when the caller does not say.
SCRAPE_SECS = 15.0


def gate_end(g: Gate, until: float, horizon: float | None, scrape_interval: float) -> float:
    """Latest time at which ``g`` is judged: a breach that began by ``until`` needs its ``for``
    (plus one scrape to be seen) to be a breach, so it is watched that long past ``until``,
    never past the data's ``horizon``. Without a horizon nothing past ``until`` is used."""
    if horizon is None:
        return until
    return max(until, min(horizon, until + _secs(g.for_) + scrape_interval))


def _span(g: Gate, since: float, until: float, end: float | None) -> tuple[float, float, float]:
    """(step, start, end) of ``g``'s judging: a breach must have lasted ``for`` inside the
    window, so judging starts ``for`` after ``since``; ``end`` is at or after ``until``."""
    step = step_for(since, until)
    return step, min(since + _secs(g.for_), until - step), until if end is None else max(until, end)


def judge_gate(prom: Prom, g: Gate, threshold: float, run_id: str | None, topology: str,
               since: float, until: float, end: float | None = None, needs_secs: float = 0.0) -> GateResult:
    """``g`` over [since, until] from raw series; with ``end`` past ``until``, a breach that
    began inside the window is still seen to last its ``for`` (``gate_end``). ``needs_secs``:
    the shortest window in which the gate could fire (``Gate.needs_secs``); a shorter one
    cannot pass."""
    step, start, end = _span(g, since, until, end)
    by = "run_id, topology, node"
    query = f"max by ({by}) (max_over_time({_window(_sustained(g), start, end, step)}))"
    rows = prom.instant(query, end)

    def first(labels: Labels) -> float | None:
        return _first_failure(prom, g, threshold, labels, run_id, topology, start, end, step)

    def has_data() -> bool:
        data_q = f"max by (run_id, topology) (max_over_time({_window(g.data, since, until, step)}))"
        return any(_matches(lab, run_id, topology) for lab, _ in prom.instant(data_q, until))

    return _conclude(prom, g, threshold, run_id, topology, since, until, end, needs_secs, query, rows, first,
                     has_data, lambda: _applies(prom, g, run_id, topology, since, until), "raw")


def _applies(prom: Prom, g: Gate, run_id: str | None, topology: str, since: float, until: float) -> bool:
    q = f"max by (run_id, topology) (max_over_time({_window(g.applies or '', since, until, step_for(since, until))}))"
    return any(_matches(lab, run_id, topology) for lab, _ in prom.instant(q, until))


def _worst(rows: Iterable[tuple[Labels, float]], run_id: str | None, topology: str) -> tuple[Labels, float] | None:
    """The row with the highest value of this run; ties go to the first node by name, so the
    same data always names the same node."""
    return min(((lab, v) for lab, v in rows if _matches(lab, run_id, topology) and not math.isnan(v)),
               key=lambda r: (-r[1], r[0].get("node", "")), default=None)


def _conclude(prom: Prom, g: Gate, threshold: float, run_id: str | None, topology: str, since: float, until: float,
              end: float, needs_secs: float, query: str, rows: Iterable[tuple[Labels, float]],
              first: Callable[[Labels], float | None], has_data: Callable[[], bool], applies: Callable[[], bool],
              source: str) -> GateResult:
    """The gate's result from its value rows (one per judged thing, the window's worst
    sustained value), whatever path computed them: the same rules for both."""
    worst = _worst(rows, run_id, topology)
    value = worst[1] if worst else None
    if math.isnan(threshold) or threshold == math.inf:
        # A NaN threshold compares false with everything and +Inf can never be exceeded: the
        # gate could not have failed, which is not a pass.
        return GateResult(g.name, g.alert, g.severity, "insufficient_data", value, threshold, query, None, None,
                          f"threshold {g.threshold_key} is {threshold}: the gate cannot fail, so it was not judged",
                          end, source)
    if worst is not None and worst[1] > threshold:
        return GateResult(g.name, g.alert, g.severity, "fail", worst[1], threshold, query, worst[0].get("node"),
                          first(worst[0]), None, end, source)
    proof = _whole_window_failure(prom, g, run_id, topology, since, until)
    if proof is not None:
        return GateResult(g.name, g.alert, g.severity, "fail", value, threshold, proof[0], None, since, proof[1], end,
                          source)
    status = "pass" if has_data() else "insufficient_data"
    if status == "insufficient_data" and g.applies and not applies():
        return GateResult(g.name, g.alert, g.severity, status, value, threshold, query, None, None,
                          f"not applicable: no `{g.applies}` series in the window (nothing of this topology "
                          "serves what this gate reads)", end, source, applicable=False)
    # A node is named only when it measured something: "worst" of all-zero values means nothing.
    named = worst[0].get("node") if worst and worst[1] > 0 else None
    note = None
    # The drain past ``until`` (up to ``end``) can hold a breach's ``for``; the threshold of a
    # duration gate and the warm-up must fit in the window itself.
    if status == "pass" and end - since < needs_secs:
        status = "insufficient_data"
        note = (f"the {until - since:.0f}s window (judged to {end - since:.0f}s with the drain) is shorter than "
                f"the {needs_secs:.0f}s this gate needs to fire (its for, plus its threshold or warm-up): it could "
                "not have failed, so it was not judged")
    return GateResult(g.name, g.alert, g.severity, status, value, threshold, query, named, None, note, end, source)


# --- Judging from recorded gate values -------------------------------------------------------
#
# The rules record each gate's value as soak:gate_value{gate=...} at every evaluation (live,
# or backfilled with ``promtool tsdb create-blocks-from rules``, see checker/recording.py).
# Judging then reads those samples instead of recomputing each gate from raw series: gates are
# grouped by ``for`` (one instant query per group), one range query gives the first failures,
# one query (soak:gate_coverage) which gates were evaluated, had data and apply. The semantics
# are the raw path's: a breach counts once it held for ``for`` (min over the trailing ``for``),
# judged from ``since + for`` to the gate's end (``gate_end``, the drain horizon), on the same
# grid of ``step_for``.

# Parallel queries: Prometheus evaluates each query on one core.
WORKERS = 3
DATA_QUERIES = 2


def _regex(text: str) -> str:
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", text)


def _recorded_selector(run_id: str | None, topology: str, gates: Iterable[Gate] | None = None,
                       name: str = GATE_VALUE) -> str:
    """soak:gate_value (or ``name``) of this run and topology, and series without those labels (a
    run-wide gate such as the exporter's dead man's switch), as ``_matches`` takes them."""
    rid = "" if run_id is None else _regex(run_id) + "|"
    names = f"gate=~{json.dumps('|'.join(sorted(g.name for g in gates)))}," if gates is not None else ""
    return f"{name}{{{names}run_id=~{json.dumps(rid)},topology=~{json.dumps(_regex(topology) + '|')}}}"


@dataclass(frozen=True)
class Coverage:
    """What the recordings of a window say (``recorded_coverage``)."""

    # The alert rules ran over the window: ALERTS exist to cross-check the gates with.
    rules_evaluated: bool = False
    # Gates judged from their recordings (empty: every gate from raw series).
    gates: frozenset[str] = frozenset()
    # Gates that had data / apply in [since, until], as recorded (soak:gate_coverage); None
    # where the rules did not record it (older rule files): asked from raw series.
    with_data: frozenset[str] | None = None
    applies: frozenset[str] | None = None


def recorded_coverage(prom: Prom, run_id: str | None, topology: str, since: float, until: float,
                      end: float) -> Coverage:
    """Which gates can be judged from recordings, from one query of soak:gate_coverage (which
    gates the rules evaluated, and per run which had data and apply); rule files without it:
    the gates that have soak:gate_value samples.

    Recordings are trusted when the rules ran over the whole judged span: a recording within
    two evaluation intervals (estimated from the densest series) of ``since`` and of ``end``.
    Rules that started late, stopped early, or a gate added after the data were recorded:
    judged from raw series."""
    window = max(1, int(until - since))
    rows = prom.instant(f"count_over_time({_recorded_selector(run_id, topology, name=GATE_COVERAGE)}[{window}s])",
                        until)

    def aspect(name: str) -> frozenset[str]:
        return frozenset(lab.get("gate", "") for lab, _ in rows
                         if lab.get("aspect") == name and _matches(lab, run_id, topology))

    counts = {lab.get("gate", ""): v for lab, v in rows if lab.get("aspect") == "evaluated"}
    marker = GATE_COVERAGE + '{aspect="evaluated"}'
    if counts:
        found = Coverage(any(lab.get("aspect") == "alerting" for lab, _ in rows), frozenset(counts),
                         aspect("data"), aspect("applies"))
    else:    # recorded by rules without soak:gate_coverage: the gates with values
        marker = _recorded_selector(run_id, topology)
        counts = {lab.get("gate", ""): v for lab, v in prom.instant(
            f"max by (gate) (count_over_time({marker}[{window}s]))", until)}
        found = Coverage(bool(counts), frozenset(name for name in counts if name))
    if not counts:
        return Coverage()
    densest = max(counts.values())
    tol = max(2 * step_for(since, until), math.ceil(2 * window / densest))
    edge = f"count(count_over_time({marker}[{int(tol)}s]))"
    if densest < 3 or not prom.instant(edge, min(since + tol, end)) or not prom.instant(edge, end):
        return Coverage(found.rules_evaluated)
    return found


def _recorded_sustained(for_secs: int, selector: str, step: float) -> str:
    """Per evaluation time, the recorded value held for ``for`` (all recordings of the last
    ``for`` seconds); without ``for``, every recording of the last step."""
    if for_secs == 0:
        return f"max_over_time({selector}[{int(step)}s])"
    return f"min_over_time({selector}[{for_secs}s])"


def judge_recorded(prom: Prom, gates: list[Gate], thresholds: dict[str, float], run_id: str | None, topology: str,
                   since: float, until: float, ends: dict[str, float], needs: dict[str, float],
                   pool: ThreadPoolExecutor | None = None, coverage: Coverage = Coverage()) -> dict[str, GateResult]:
    """Each of ``gates`` from its recorded values: a handful of queries for them all. Which
    gates had data and apply: from ``coverage`` where recorded, else from raw series."""
    if not gates:
        return {}
    step = step_for(since, until)
    by = "gate, run_id, topology, node"
    groups: dict[tuple[int, float, float], list[Gate]] = {}
    for g in gates:
        _, start, end = _span(g, since, until, ends[g.name])
        groups.setdefault((_secs(g.for_), start, end), []).append(g)

    def value_query(key: tuple[int, float, float]) -> tuple[str, list[tuple[Labels, float]]]:
        for_secs, start, end = key
        sel = _recorded_selector(run_id, topology, groups[key])
        if for_secs == 0:     # every recording from start to end
            q = f"max by ({by}) (max_over_time({sel}[{int(end - start)}s]))"
        else:
            q = f"max by ({by}) (max_over_time({_window(_recorded_sustained(for_secs, sel, step), start, end, step)}))"
        return q, prom.instant(q, end)

    def data_query(chunk: list[Gate]) -> set[str]:
        parts = [f'label_replace(max by (run_id, topology) (max_over_time({_window(g.data, since, until, step)})), '
                 f'"gate", "{g.name}", "", "")' for g in chunk]
        return {lab.get("gate", "") for lab, _ in prom.instant(" or ".join(parts), until) if _matches(lab, run_id, topology)}

    run = pool.map if pool is not None else map
    keys = list(groups)
    # Data requirements not recorded: raw queries (DATA_QUERIES of them, each for several
    # gates), asked alongside the recorded values.
    chunks = [] if coverage.with_data is not None else [gates[i::DATA_QUERIES]
                                                       for i in range(min(DATA_QUERIES, len(gates)))]
    answers = list(run(lambda k: value_query(k) if isinstance(k, tuple) else data_query(k), [*keys, *chunks]))  # type: ignore[arg-type]
    with_data: set[str] = set().union(coverage.with_data or (), *answers[len(keys):])  # type: ignore[arg-type]
    queries: dict[str, str] = {}
    rows: dict[str, list[tuple[Labels, float]]] = {g.name: [] for g in gates}
    for key, (q, found) in zip(keys, answers[:len(keys)]):
        for g in groups[key]:
            queries[g.name] = q
        for lab, v in found:
            if lab.get("gate") in rows:
                rows[lab["gate"]].append(({k: x for k, x in lab.items() if k != "gate"}, v))

    def threshold_of(g: Gate) -> float:
        return thresholds.get(g.threshold_key, 0.0) if g.threshold_key else 0.0

    # One range query: when each failing gate first failed on its worst node (only the points
    # above its threshold come back).
    worst = {g.name: _worst(rows[g.name], run_id, topology) for g in gates}
    failing = [g for g in gates if math.isfinite(threshold_of(g)) and (w := worst[g.name]) and w[1] > threshold_of(g)]
    firsts: dict[str, list[tuple[float, float]]] = {}
    if failing:
        parts = []
        for g in failing:
            node = (worst[g.name] or ({}, 0.0))[0].get("node", "")
            sel = _recorded_selector(run_id, topology, [g])[:-1] + f",node={json.dumps(node)}}}"
            parts.append(f"max by ({by}) ({_recorded_sustained(_secs(g.for_), sel, step)}) > {threshold_of(g)!r}")
        start = min(_span(g, since, until, ends[g.name])[1] for g in failing)
        end = max(ends[g.name] for g in failing)
        for lab, points in prom.range(" or ".join(parts), start, end, step):
            if _matches(lab, run_id, topology):
                firsts.setdefault(lab.get("gate", ""), []).extend(points)

    def conclude(g: Gate) -> GateResult:
        threshold = threshold_of(g)
        _, start, end = _span(g, since, until, ends[g.name])

        def first(labels: Labels) -> float | None:
            return min((t for t, v in firsts.get(g.name, []) if start <= t <= end and v > threshold), default=None)

        def applies() -> bool:
            if coverage.applies is None:
                return _applies(prom, g, run_id, topology, since, until)
            return g.name in coverage.applies

        return _conclude(prom, g, threshold, run_id, topology, since, until, end, needs[g.name], queries[g.name],
                         rows[g.name], first, lambda: g.name in with_data, applies, "recorded")

    return {g.name: conclude(g) for g in gates}


def _whole_window_failure(prom: Prom, g: Gate, run_id: str | None, topology: str, since: float,
                          until: float) -> tuple[str, str] | None:
    """(query, note) when the whole window proves ``g`` failed whatever its threshold
    (``Gate.whole_window``: nothing committed over a window of several epochs), else None."""
    window = int(until - since)
    if not g.whole_window or window <= 0:
        return None
    query = g.whole_window.format(window=f"{window}s", half_window=window / 2)
    if not any(_matches(lab, run_id, topology) for lab, _ in prom.instant(query, until)):
        return None
    return query, (f"nothing was committed over the whole {window}s window, although every node reported "
                   "several times: a stall whatever the threshold")


def _first_failure(prom: Prom, g: Gate, threshold: float, labels: Labels, run_id: str | None, topology: str,
                   since: float, until: float, step: float) -> float | None:
    for lab, points in prom.range(_sustained(g), since, until, step):
        if _matches(lab, run_id, topology) and lab.get("node") == labels.get("node"):
            return next((t for t, v in points if v > threshold), None)
    return None


def thresholds_for(prom: Prom, profile: Profile, explicit: bool, run_id: str | None, topology: str,
                   until: float, since: float) -> dict[str, float]:
    """The profile's numbers; without an explicit profile, the run's own exported thresholds win."""
    values = dict(profile.thresholds)
    if not explicit:
        q = f"max by (run_id, topology, gate) (max_over_time(soak_gate_threshold[{int(until - since)}s]))"
        for lab, v in prom.instant(q, until):
            if _matches(lab, run_id, topology) and "gate" in lab:
                values[lab["gate"]] = v
    return values


def data_horizon(prom: Prom, run_id: str | None, topology: str, until: float, limit: float) -> float:
    """The run's latest sample in (until, limit] (its soak_run_info), else ``until``: past
    the window only data that really exist are judged (a stopped exporter's series go stale;
    a backfilled history simply ends)."""
    if not limit > until:
        return until
    sel = f"topology={json.dumps(topology)}" + (f",run_id={json.dumps(run_id)}" if run_id else "")
    q = f"max(max_over_time(timestamp(soak_run_info{{{sel}}})[{max(1, math.ceil(limit - until))}s:1s]))"
    latest = max((v for _, v in prom.instant(q, limit) if math.isfinite(v)), default=until)
    return min(limit, latest) if latest > until else until


def max_for_secs() -> float:
    """The longest ``for`` of any gate (read from the gates, whatever they are)."""
    return max((_secs(g.for_) for g in GATES), default=0.0)


def evaluate(prometheus_url: str, since: float, until: float, *, run_id: str | None, topology: str,
             profile: Profile, explicit_profile: bool = True, horizon: float | None = None,
             scrape_interval: float | None = None, use_recordings: bool = True) -> TopologyVerdict:
    """Judge [since, until] of one run's topology.

    ``horizon``: the data up to this time belong to the run (the runner's drain after the
    window, with the nodes still running; now, on a live Prometheus). A breach that begins at
    or before ``until`` and lasts its gate's ``for`` is then judged, looking up to
    ``until + for + scrape_interval`` (never past ``horizon``), and alerts that fired up to
    ``until + max for + 2 scrapes`` count. None (the default): nothing past ``until`` is
    used, and a breach that begins within a gate's ``for`` of the end cannot be seen.
    ``scrape_interval``: Prometheus's scrape interval (default 15 s), how late it may first
    see a breach that began at ``until``.
    ``use_recordings``: judge each gate from its recorded values (soak:gate_value) where the
    rules ran over the whole judged span (``recorded_coverage``); False: every gate from raw
    series (the reference the recorded path must agree with)."""
    prom = Prom(prometheus_url)
    scrape = SCRAPE_SECS if scrape_interval is None else max(0.0, scrape_interval)
    if horizon is not None:
        horizon = data_horizon(prom, run_id, topology, until, min(horizon, until + max_for_secs() + 2 * scrape))
    thresholds = thresholds_for(prom, profile, explicit_profile, run_id, topology, until, since)
    ends = {g.name: gate_end(g, until, horizon, scrape) for g in GATES}
    needs = {g.name: g.needs_secs(thresholds) for g in GATES}
    coverage = recorded_coverage(prom, run_id, topology, since, until, max(ends.values(), default=until))
    evaluated = coverage.rules_evaluated
    if not use_recordings:
        coverage = Coverage(evaluated)
    # The figures' range queries are asked while the gates are judged (collect_figures reads
    # the gate results only after its queries).
    later = _Later()
    with ThreadPoolExecutor(1) as aside:
        figured = aside.submit(collect_figures, prom, later, run_id, topology, since, until, step_for(since, until))
        try:
            results, fired, disagreements = _judge_all(prom, thresholds, run_id, topology, since, until, horizon,
                                                       scrape, ends, needs, coverage)
            later.set_result(results)
        except BaseException as exc:
            later.set_exception(exc)
            raise
        figures, series, timeline = figured.result()
    judged = max(ends.values(), default=until)
    return TopologyVerdict(run_id, topology, since, until, profile, results, figures, fired, disagreements,
                           series, timeline, prom.queries, evaluated, prom.version(), thresholds, judged,
                           tuple(g.name for g in GATES if g.name in coverage.gates))


class _Later(Future):  # type: ignore[type-arg]
    """The gate results once they are known, iterable like them (for collect_figures)."""

    def __iter__(self) -> Iterator[GateResult]:
        return iter(self.result())


def _judge_all(prom: Prom, thresholds: dict[str, float], run_id: str | None, topology: str, since: float,
               until: float, horizon: float | None, scrape: float, ends: dict[str, float], needs: dict[str, float],
               coverage: Coverage) -> tuple[tuple[GateResult, ...], tuple[dict[str, str], ...], tuple[str, ...]]:
    """Every gate (recorded where possible, raw in parallel), then the alerts that fired."""
    with ThreadPoolExecutor(WORKERS) as pool:
        raw = {g.name: pool.submit(judge_gate, prom, g, thresholds.get(g.threshold_key, 0.0) if g.threshold_key
                                   else 0.0, run_id, topology, since, until, ends[g.name], needs[g.name])
               for g in GATES if g.name not in coverage.gates}
        from_recordings = judge_recorded(prom, [g for g in GATES if g.name in coverage.gates], thresholds, run_id,
                                         topology, since, until, ends, needs, pool, coverage)
        results = tuple(from_recordings[g.name] if g.name in from_recordings else raw[g.name].result()
                        for g in GATES)
    # An alert fires ``for`` plus up to an evaluation after its breach began (by ``until``).
    alerts_until = until if horizon is None else max(until, min(horizon, until + max_for_secs() + 2 * scrape))
    fired = _alerts_fired(prom, run_id, topology, since, alerts_until)
    # Each alert counts only if it fired within its own gate's ``for`` (+ 2 scrapes) of the
    # end: a breach that began after the window is not the window's.
    limits = {g.name: until if horizon is None else max(until, min(horizon, until + _secs(g.for_) + 2 * scrape))
              for g in GATES}
    results, overruled = _alerts_overrule(prom, results, fired, run_id, topology, since, alerts_until, limits)
    return results, fired, overruled + (_disagreements(results, fired) if coverage.rules_evaluated else ())


def _disagreements(results: tuple[GateResult, ...], fired: tuple[dict[str, str], ...]) -> tuple[str, ...]:
    fired_alerts = {a.get("alertname") for a in fired}
    return tuple(f"{r.alert}: gate failed over the window but the alert never fired" for r in results
                 if r.status == "fail" and r.alert not in fired_alerts)


def _alerts_overrule(prom: Prom, results: tuple[GateResult, ...], fired: tuple[dict[str, str], ...],
                     run_id: str | None, topology: str, since: float, until: float,
                     limits: dict[str, float] | None = None) -> tuple[tuple[GateResult, ...], tuple[str, ...]]:
    """An alert that fired in the window while the checker's query passed (or found no data)
    is a failure of that gate: Prometheus saw the breach live, on every sample, with the same
    definition; the window's query can only have stepped over it. Under a warning-severity
    gate it stays a warning. Never silently dropped: the gate's note and a disagreement say so."""
    by_alert: dict[str, list[dict[str, str]]] = {}
    for a in fired:
        by_alert.setdefault(a.get("alertname", ""), []).append(a)
    out, said = [], []
    for r in results:
        alerts = by_alert.get(r.alert)
        if not alerts or r.status == "fail":
            out.append(r)
            continue
        node = min((a["node"] for a in alerts if a.get("node")), default=None)
        first = _first_firing(prom, r.alert, run_id, topology, since, until)
        if first is not None and limits and first > limits.get(r.name, until):
            said.append(f"{r.alert}: fired at {first:.0f}, after the window and its gate's `for`: not counted")
            out.append(r)
            continue
        why = (f"alert {r.alert} fired{' on ' + node if node else ''} in the window while the window's query "
               f"{'passed' if r.status == 'pass' else 'found no data'}: counted as a failure of the gate")
        out.append(GateResult(r.name, r.alert, r.severity, "fail", r.value, r.threshold, r.query, node or r.worst_node,
                              first, why, r.evaluated_at))
        said.append(f"{r.alert}: {why}")
    return tuple(out), tuple(said)


def _first_firing(prom: Prom, alert: str, run_id: str | None, topology: str, since: float, until: float) -> float | None:
    q = f'max by (run_id, topology) (ALERTS{{alertname="{alert}",alertstate="firing"}})'
    times = [t for lab, points in prom.range(q, since, until, step_for(since, until))
             if _matches(lab, run_id, topology) for t, _ in points]
    return min(times, default=None)


def _alerts_fired(prom: Prom, run_id: str | None, topology: str, since: float, until: float) -> tuple[dict[str, str], ...]:
    q = f'max by (alertname, gate, severity, node, run_id, topology) (max_over_time(ALERTS{{alertstate="firing"}}[{int(until - since)}s]))'
    return tuple(sorted((dict(lab) for lab, _ in prom.instant(q, until)
                         if _matches(lab, run_id, topology) and lab.get("severity") != "info"),
                        key=lambda a: (a.get("alertname", ""), a.get("node", ""))))


def runs_in_window(prometheus_url: str, since: float, until: float) -> list[tuple[str, str, str]]:
    """(run_id, topology, profile) of every run whose soak_run_info is in the window."""
    q = f"max by (run_id, topology, profile) (max_over_time(soak_run_info[{max(1, int(until - since))}s]))"
    return sorted({(lab.get("run_id", ""), lab.get("topology", ""), lab.get("profile", ""))
                   for lab, _ in Prom(prometheus_url).instant(q, until)})


def discover(prometheus_url: str, since: float, until: float, run_id: str | None,
             topology: str | None) -> list[tuple[str, str, str]]:
    """(run_id, topology, profile) of every run seen in the window, filtered."""
    return [f for f in runs_in_window(prometheus_url, since, until)
            if (run_id is None or f[0] == run_id) and (topology is None or f[1] == topology)]


def describe_runs(found: list[tuple[str, str, str]], limit: int = 8) -> str:
    """What a window holds, in one line: ``found run ids a (triad), b (triad, triad_distributed)``."""
    if not found:
        return "found no soak_run_info series at all (is this the soak's Prometheus, and the right time?)"
    by_run: dict[str, list[str]] = {}
    for rid, topo, _ in found:
        by_run.setdefault(rid, []).append(topo)
    shown = [f"{rid or '(no run_id)'} ({', '.join(sorted(set(t)))})" for rid, t in sorted(by_run.items())[:limit]]
    more = f" and {len(by_run) - limit} more" if len(by_run) > limit else ""
    return f"found run ids {', '.join(shown)}{more}"


def profile_of(label: str, run_id: str, topology: str) -> Profile:
    """The run's own profile from its soak_run_info label; an unknown one cannot be judged."""
    if label in PROFILES:
        return PROFILES[label]
    raise EvaluationError(f"run {run_id!r} ({topology}): soak_run_info has profile {label!r}, not a known profile "
                          f"({', '.join(PROFILES)}); give --profile to judge it with one")


def evaluate_window(prometheus_url: str, since: float, until: float, *, run_id: str | None,
                    topology: str | None, profile: Profile | None, horizon: float | None = None,
                    scrape_interval: float | None = None, use_recordings: bool = True) -> list[TopologyVerdict]:
    """One verdict per (run, topology) seen in the window. ``profile`` None: each run's own
    profile (soak_run_info) and its exported thresholds; given: that profile's numbers."""
    verdicts = []
    for rid, topo, prof in discover(prometheus_url, since, until, run_id, topology):
        chosen = profile or profile_of(prof, rid, topo)
        verdicts.append(evaluate(prometheus_url, since, until, run_id=rid, topology=topo, profile=chosen,
                                 explicit_profile=profile is not None, horizon=horizon,
                                 scrape_interval=scrape_interval, use_recordings=use_recordings))
    return verdicts
