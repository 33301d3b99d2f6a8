"""Numbers as people read them, from a gate's declared unit (``Gate.unit``), never guessed
from the number: bytes as KiB/MiB/GiB (per hour for slopes), seconds as durations, ratios
as percent. Used by summary.md, failures.md, junit.xml and RUNBOOK.md."""
from __future__ import annotations

import math
from typing import Any

_BINARY = (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024))


def _num(v: float, digits: int = 3) -> str:
    """``v`` with ``digits`` significant digits, never in exponent form, no trailing zeros."""
    if v == 0:
        return "0"
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))
    text = f"{v:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def human_bytes(v: float) -> str:
    for name, size in _BINARY:
        if abs(v) >= size:
            return f"{_num(v / size)} {name}"
    return f"{_num(v)} B"


def human_duration(secs: float) -> str:
    """``490`` -> ``8m 10s``; ``3725`` -> ``1h 2m 5s``; under a minute with decimals kept."""
    if abs(secs) < 60:
        return f"{_num(secs)} s"
    sign, secs = ("-" if secs < 0 else ""), abs(secs)
    whole = int(round(secs))
    d, rest = divmod(whole, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if n]
    return sign + " ".join(parts)


def human(value: Any, unit: str) -> str:
    """``value`` in ``unit`` (a gate's unit: ``s``, ``bytes``, ``bytes/h``, ``ratio``,
    ``blocks``, ``fds/h``, or empty for a count) as text; None or NaN as ``-``."""
    if value is None or isinstance(value, str):
        return "-" if value is None else value
    v = float(value)
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return ("+" if v > 0 else "-") + "inf"
    if unit == "s":
        return human_duration(v)
    if unit == "bytes":
        return human_bytes(v)
    if unit == "bytes/h":
        return f"{human_bytes(v)}/h"
    if unit == "ratio":
        return f"{_num(v * 100)} %"
    if unit:
        return f"{_num(v)} {unit}"
    return _num(v)


def human_threshold(value: Any, unit: str, keyed: bool = True) -> str:
    """A gate's threshold; a gate without a threshold key fails on anything above 0."""
    return human(value, unit) if keyed else "0 (any increase fails)"


# Units of profile keys that are not gate thresholds (the RUNBOOK prints them too).
KEY_UNITS = {"warmup_secs": "s", "min_distfs_checks": "checks"}
