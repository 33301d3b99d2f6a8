"""The exposition side, driven by the catalog (``soakcore.catalog``).

A scrape is a list of ``Block``s: samples grouped by family, ``{name: [(label values, value)]}``
(label values after ``run_id`` and ``topology``, in the catalog's label order). Families come
out in catalog order, each family's samples in block order; a family without samples is left
out. Two renderings of the same blocks:

- ``Renderer.text``: the text format 0.0.4 (or OpenMetrics 1.0), written directly: each label
  set is escaped once and kept as the line's prefix (``name{labels} ``), and a block that
  lives across scrapes (a node's report-derived samples, until its next report) keeps its
  rendered lines. The bytes equal ``prometheus_client.generate_latest`` of ``metrics()``
  (labels sorted by name, values as Go prints them).
- ``metrics``: prometheus_client ``Metric`` families, for the ``Collector`` interface.

Only catalog names can be rendered: a sample under another name, or with the wrong number of
label values, raises (the scrape counts it as an error) instead of reaching Prometheus.
"""
from __future__ import annotations

from typing import Any, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from soakcore.catalog import BY_NAME, CATALOG

Sample = tuple[tuple[str, ...], float]
CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PREFIX_CACHE_MAX = 200_000  # label sets kept escaped; bounded (cleared when exceeded)
VALUE_CACHE_MAX = 50_000    # formatted values kept (most repeat: 0, 1, counters, heights)
_values: dict[float, str] = {}


def format_value(v: float) -> str:
    """A value as Go prints it (``floatToGoString``), remembered: most values repeat."""
    s = _values.get(v)
    if s is None:
        s = floatToGoString(v)
        if len(_values) >= VALUE_CACHE_MAX:
            _values.clear()
        _values[v] = s
    return s


class Block:
    """Samples of one part of a scrape, by family. ``rendered`` keeps its text per renderer."""

    __slots__ = ("samples", "rendered")

    def __init__(self) -> None:
        self.samples: dict[str, list[Sample]] = {}
        self.rendered: tuple[object, dict[str, str]] | None = None

    def add(self, name: str, values: tuple[str, ...], v: Any) -> None:
        if v is None:
            return
        fam = self.samples.get(name)
        if fam is None:
            fam = self.samples[name] = []
        fam.append((values, v))


def escape_label_value(v: str) -> str:
    v = v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (a JSON "\ud800" escape) is no UTF-8: replaced
        v = v.encode("utf-8", "replace").decode("utf-8")
    return v


def _help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def _headers(openmetrics: bool) -> dict[str, str]:
    out = {}
    for m in CATALOG:
        if openmetrics:
            family = m.name.removesuffix("_total") if m.type == "counter" else m.name
            unit = f"# UNIT {family} {m.unit}\n" if m.unit and family.endswith("_" + m.unit) else ""
            out[m.name] = f"# HELP {family} {_help(m.help, True)}\n# TYPE {family} {m.type}\n{unit}"
        else:
            out[m.name] = f"# HELP {m.name} {_help(m.help, False)}\n# TYPE {m.name} {m.type}\n"
    return out


HEADERS_TEXT = _headers(False)
HEADERS_OPENMETRICS = _headers(True)
# (label names in output order, and the index of each in (run_id, topology, *labels))
_ORDER = {m.name: tuple(sorted(range(len(m.all_labels)), key=lambda i, m=m: m.all_labels[i])) for m in CATALOG}


class Renderer:
    """Text exposition for one (run_id, topology); keeps every label set's escaped prefix."""

    def __init__(self, base: tuple[str, str]) -> None:
        self.base = base
        self._prefix: dict[str, dict[tuple[str, ...], str]] = {m.name: {} for m in CATALOG}
        self._size = 0

    def prefix(self, name: str, values: tuple[str, ...]) -> str:
        """``name{labels} `` for these label values, escaped once and kept."""
        m = BY_NAME[name]  # KeyError: not a catalog metric
        fam = self._prefix[name]
        p = fam.get(values)
        if p is None:
            if len(values) != len(m.labels):
                raise ValueError(f"{name}: {len(values)} label values for labels {m.labels}")
            names, all_values = m.all_labels, (*self.base, *values)
            pairs = ",".join(f'{names[i]}="{escape_label_value(str(all_values[i]))}"' for i in _ORDER[name])
            p = f"{name}{{{pairs}}} "
            if self._size >= PREFIX_CACHE_MAX:
                for d in self._prefix.values():
                    d.clear()
                self._size = 0
            fam[values] = p
            self._size += 1
        return p

    def block_text(self, block: Block) -> dict[str, str]:
        """A block's lines per family; kept in the block (it may live across scrapes)."""
        if block.rendered is not None and block.rendered[0] is self:
            return block.rendered[1]
        out = {}
        prefixes, prefix, values_cache = self._prefix, self.prefix, _values
        for name, samples in block.samples.items():
            fam = prefixes.get(name)
            if fam is None:
                raise KeyError(f"{name}: not in the metric catalog")
            out[name] = "".join([(fam.get(values) or prefix(name, values)) + (values_cache.get(v) or format_value(v))
                                 + "\n" for values, v in samples])
        block.rendered = (self, out)
        return out

    def text(self, blocks: Iterable[Block], openmetrics: bool = False) -> str:
        per: dict[str, list[str]] = {}
        for block in blocks:
            for name, text in self.block_text(block).items():
                parts = per.get(name)
                if parts is None:
                    per[name] = [text]
                else:
                    parts.append(text)
        headers = HEADERS_OPENMETRICS if openmetrics else HEADERS_TEXT
        out = []
        for m in CATALOG:
            parts = per.get(m.name)
            if parts:
                out.append(headers[m.name])
                out.extend(parts)
        if openmetrics:
            out.append("# EOF\n")
        return "".join(out)


def metrics(blocks: Iterable[Block], base: tuple[str, str]) -> list[Metric]:
    """The same samples as prometheus_client families (catalog order, help and types)."""
    per: dict[str, list[Sample]] = {}
    for block in blocks:
        for name, samples in block.samples.items():
            if name not in BY_NAME:
                raise KeyError(f"{name}: not in the metric catalog")
            per.setdefault(name, []).extend(samples)
    out: list[Metric] = []
    for m in CATALOG:
        samples = per.get(m.name)
        if not samples:
            continue
        fam: Metric
        if m.type == "counter":
            fam = CounterMetricFamily(m.name.removesuffix("_total"), m.help, labels=list(m.all_labels))
        else:
            fam = GaugeMetricFamily(m.name, m.help, labels=list(m.all_labels))
        for values, v in samples:
            if len(values) != len(m.labels):
                raise ValueError(f"{m.name}: {len(values)} label values for labels {m.labels}")
            fam.add_metric([*base, *values], float(v))
        out.append(fam)
    return out


def wants_openmetrics(accept: str) -> bool:
    """True when the Accept header asks for OpenMetrics 1.0 (what Prometheus asks for first)."""
    for part in accept.split(","):
        toks = [t.strip() for t in part.split(";")]
        if toks[0] == "application/openmetrics-text":
            version = next((t.split("=", 1)[1] for t in toks[1:] if t.startswith("version=")), "")
            return version in ("", "1.0.0")
    return False
