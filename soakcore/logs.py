"""Reading the end of a log file (stderr tails in crash notes and failures.md)."""
from __future__ import annotations

from pathlib import Path


def tail(path: Path, max_bytes: int = 2000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - max_bytes))
            return fh.read().decode(errors="replace").strip()
    except OSError:
        return ""
