"""A small Prometheus HTTP API client that counts its queries; every failure is an
EvaluationError (exit 3: could not evaluate), never an empty result."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from soakcore.errors import EvaluationError

Labels = dict[str, str]


@dataclass
class Prom:
    url: str
    timeout: float = 30.0
    queries: int = 0

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        self.queries += 1
        full = f"{self.url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(full, timeout=self.timeout) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                doc = json.loads(exc.read())
            except ValueError:
                raise EvaluationError(f"Prometheus {self.url}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise EvaluationError(f"Prometheus {self.url} unreachable: {getattr(exc, 'reason', exc)}") from exc
        if doc.get("status") != "success":
            raise EvaluationError(f"query failed: {doc.get('errorType')}: {doc.get('error')}: {params.get('query')}")
        return doc["data"]

    def instant(self, query: str, at: float) -> list[tuple[Labels, float]]:
        data = self._get("/api/v1/query", {"query": query, "time": f"{at:.3f}"})
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def range(self, query: str, start: float, end: float, step: float) -> list[tuple[Labels, list[tuple[float, float]]]]:
        data = self._get("/api/v1/query_range", {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                 "step": f"{max(step, 0.001):.3f}"})
        return [(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]]

    def version(self) -> str | None:
        """The server's version, for provenance (None if it does not say)."""
        return self._get("/api/v1/status/buildinfo", {}).get("version")
