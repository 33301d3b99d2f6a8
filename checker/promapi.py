"""A small Prometheus HTTP API client that counts its queries; every failure is an
EvaluationError (exit 3: could not evaluate), never an empty result and never a traceback.

An answer is trusted only in the shape Prometheus sends it: a JSON object with ``status``
and, on success, ``data`` whose ``resultType`` is the one the query asks for and whose
samples are ``[time, "number"]`` pairs with string labels. Anything else (an HTML page, a
truncated body, a proxy's JSON, a wrong result type, a non-numeric value) is refused with
one line naming the server and what was wrong.
"""
from __future__ import annotations

import http.client
import json
import math
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from soakcore.errors import EvaluationError

Labels = dict[str, str]
# Larger answers are refused rather than read into memory (a 24 h, 10-node check reads < 5 MB).
MAX_BODY_BYTES = 256 * 1024 * 1024


class BadAnswer(ValueError):
    """The body is not a Prometheus API answer of the expected shape."""


def _number(v: Any) -> float:
    # Prometheus sends sample values as strings ("1.5", "NaN", "+Inf"); a bare JSON number
    # is accepted too. Booleans, nulls, lists and words are not numbers.
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise BadAnswer(f"sample value {_short(v)} is not a number")
    try:
        return float(v)
    except (ValueError, OverflowError):
        raise BadAnswer(f"sample value {_short(v)} is not a number") from None


def _time(v: Any) -> float:
    t = _number(v)
    if not math.isfinite(t):
        raise BadAnswer(f"sample time {_short(v)} is not finite")
    return t


def _labels(v: Any) -> Labels:
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise BadAnswer(f"series labels {_short(v)} are not a map of strings")
    return v


def _pair(v: Any) -> tuple[float, float]:
    if not isinstance(v, list) or len(v) != 2:
        raise BadAnswer(f"sample {_short(v)} is not a [time, value] pair")
    return _time(v[0]), _number(v[1])


def _items(v: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(v, list) or not all(isinstance(r, dict) for r in v):
        raise BadAnswer(f"{key} {_short(v)} is not a list of series")
    return v


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_instant(data: Any) -> list[tuple[Labels, float]]:
    """``data`` of /api/v1/query: a vector (or a scalar) as (labels, value) rows."""
    kind = data.get("resultType")
    if kind == "scalar":
        return [({}, _pair(data.get("result"))[1])]
    if kind != "vector":
        raise BadAnswer(f"resultType {_short(kind)} where an instant query gives vector or scalar")
    return [(_labels(r.get("metric", {})), _pair(r.get("value"))[1]) for r in _items(data.get("result"), "result")]


def parse_range(data: Any) -> list[tuple[Labels, list[tuple[float, float]]]]:
    """``data`` of /api/v1/query_range: a matrix as (labels, [(time, value)]) rows."""
    kind = data.get("resultType")
    if kind != "matrix":
        raise BadAnswer(f"resultType {_short(kind)} where a range query gives matrix")
    rows = []
    for r in _items(data.get("result"), "result"):
        values = r.get("values")
        if not isinstance(values, list):
            raise BadAnswer(f"values {_short(values)} is not a list")
        rows.append((_labels(r.get("metric", {})), _points(values)))
    return rows


def _points(values: list[Any]) -> list[tuple[float, float]]:
    """``values`` as (time, value) pairs. Prometheus's own shape (a number, then a string;
    a 24 h range holds some 20,000 per query) is converted in one pass; anything else, or a
    time that is not finite, goes through ``_pair`` one by one, which refuses it with the reason."""
    try:
        points = [(float(t), float(v)) for t, v in values
                  if (type(t) is float or type(t) is int) and type(v) is str]
    except (TypeError, ValueError, OverflowError):
        points = []
    if len(points) == len(values) and all(map(math.isfinite, (t for t, _ in points))):
        return points
    return [_pair(p) for p in values]


def _doc(body: bytes) -> Any:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        start = body[:40].decode("utf-8", "replace").strip().replace("\n", " ")
        raise BadAnswer(f"not JSON (starts {start!r})" if start else "an empty body") from None
    if not isinstance(doc, dict) or "status" not in doc:
        raise BadAnswer(f"JSON without a status field ({_short(doc)})")
    return doc


@dataclass
class Prom:
    """Safe to share between threads (the checker asks independent queries in parallel)."""

    url: str
    timeout: float = 30.0
    queries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.queries += 1
        full = f"{self.url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
        where = f"Prometheus {self.url}{path}"
        code = 200
        try:
            try:
                with urllib.request.urlopen(full, timeout=self.timeout) as resp:
                    body = resp.read(MAX_BODY_BYTES + 1)
            except urllib.error.HTTPError as exc:   # 4xx/5xx: Prometheus explains in a JSON body
                code = exc.code
                body = exc.read(MAX_BODY_BYTES + 1)
        except urllib.error.URLError as exc:
            raise EvaluationError(f"{where} unreachable: {exc.reason}") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # reset, timeout, a truncated body (IncompleteRead), a malformed status line
            raise EvaluationError(f"{where}: no complete answer: {type(exc).__name__}: {exc}"[:300]) from exc
        if len(body) > MAX_BODY_BYTES:
            raise EvaluationError(f"{where}: answer larger than {MAX_BODY_BYTES} bytes")
        try:
            doc = _doc(body)
        except BadAnswer as exc:
            status = f"HTTP {code}, " if code != 200 else ""
            raise EvaluationError(f"{where}: not a Prometheus API answer ({status}{exc})") from None
        if doc.get("status") != "success":
            raise EvaluationError(f"{where}: query failed (HTTP {code}): {_short(doc.get('errorType'))}: "
                                  f"{str(doc.get('error'))[:200]}: {params.get('query', '')}"[:400])
        data = doc.get("data")
        if not isinstance(data, dict):
            raise EvaluationError(f"{where}: not a Prometheus API answer (data {_short(data)} is not an object)")
        return data

    def _parse(self, path: str, params: dict[str, Any], parse: Any) -> Any:
        data = self._get(path, params)
        try:
            return parse(data)
        except BadAnswer as exc:
            raise EvaluationError(f"Prometheus {self.url}{path}: not a Prometheus API answer ({exc}) "
                                  f"to {str(params.get('query'))[:120]}") from None

    def instant(self, query: str, at: float) -> list[tuple[Labels, float]]:
        return self._parse("/api/v1/query", {"query": query, "time": f"{at:.3f}"}, parse_instant)  # type: ignore[no-any-return]

    def range(self, query: str, start: float, end: float, step: float) -> list[tuple[Labels, list[tuple[float, float]]]]:
        params = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{max(step, 0.001):.3f}"}
        return self._parse("/api/v1/query_range", params, parse_range)  # type: ignore[no-any-return]

    def version(self) -> str | None:
        """The server's version, for provenance only: None if it does not say (a proxy or an
        older server without the endpoint is no reason not to judge)."""
        try:
            version = self._get("/api/v1/status/buildinfo", {}).get("version")
        except EvaluationError:
            return None
        return version if isinstance(version, str) else None

    def config_interval(self, key: str, default: float = 60.0) -> float:
        """``scrape_interval`` or ``evaluation_interval`` of the server's global config in
        seconds, else ``default`` (Prometheus's own default is 1m). Only a hint for how long
        to wait and look: any failure gives the default."""
        try:
            text = self._get("/api/v1/status/config", {}).get("yaml")
        except EvaluationError:
            return default
        if not isinstance(text, str):
            return default
        for line in text.splitlines():
            name, _, value = line.strip().partition(":")
            if name == key:
                secs = duration_secs(value.strip())
                return secs if secs is not None and 0 < secs <= 3600 else default
        return default

    def evaluation_interval(self, default: float = 60.0) -> float:
        return self.config_interval("evaluation_interval", default)


def duration_secs(text: str) -> float | None:
    """A Prometheus duration (``15s``, ``1m``, ``1m30s``, ``500ms``) in seconds, else None."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total, number = 0.0, ""
    i = 0
    while i < len(text):
        c = text[i]
        if c.isdigit():
            number += c
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else c
        if not number or unit not in units:
            return None
        total += int(number) * units[unit]
        number, i = "", i + len(unit)
    return total if not number and text else None
