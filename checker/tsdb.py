"""A saved TSDB opened for re-judging: each block checked before Prometheus sees it, and what
Prometheus itself says about the data it loads.

Prometheus skips a block whose meta.json it cannot read (a line in its log, the data silently
gone) and refuses to start at all over a block whose index is corrupt. Re-judging must say
both: a damaged block is left out of the copy with a note in the verdict and on stderr, a
block Prometheus still rejects is dropped and Prometheus started again, and its own error
lines about the data become notes too. Nothing readable at all is exit 3 (the caller's
"nothing to judge").
"""
from __future__ import annotations

import json
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from soakcore.errors import EvaluationError
from soakcore.services import Service, start_prometheus

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
INDEX_MAGIC = bytes.fromhex("BAAAD700")
CHUNKS_MAGIC = bytes.fromhex("85BD40DD")
REJECTED = re.compile(r"corrupted block ([0-9A-HJKMNP-TV-Z]{26})")
# Prometheus log lines about damaged data (not about shutdown or config).
LOG_PROBLEM = re.compile(r"level=error|corrupt|repair", re.IGNORECASE)
MAX_RESTARTS = 5


def block_problem(block: Path) -> str | None:
    """Why a block directory cannot be read, or None when its structure looks whole."""
    try:
        meta = json.loads((block / "meta.json").read_text())
    except OSError as exc:
        return f"meta.json unreadable ({exc.strerror or exc})"
    except ValueError as exc:
        return f"meta.json is not JSON ({exc})"
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), int) for k in ("minTime", "maxTime")):
        return "meta.json has no minTime/maxTime"
    if meta.get("ulid") != block.name:
        return f"meta.json names block {meta.get('ulid')!r}"
    try:
        with open(block / "index", "rb") as fh:
            if fh.read(4) != INDEX_MAGIC:
                return "index is not a TSDB index (bad magic number)"
    except OSError as exc:
        return f"index unreadable ({exc.strerror or exc})"
    segments = sorted((block / "chunks").glob("*")) if (block / "chunks").is_dir() else []
    if not segments:
        return "no chunks"
    for seg in segments:
        try:
            with open(seg, "rb") as fh:
                if fh.read(4) != CHUNKS_MAGIC:
                    return f"chunks/{seg.name} is not a chunk file (bad magic number)"
        except OSError as exc:
            return f"chunks/{seg.name} unreadable ({exc.strerror or exc})"
    return None


def copy_checked(tsdb: Path, copy: Path) -> list[str]:
    """Copy ``tsdb`` to ``copy`` without its lock and without damaged blocks; the notes."""
    notes: list[str] = []
    bad = set()
    for entry in sorted(tsdb.iterdir()):
        if entry.is_dir() and ULID.match(entry.name):
            problem = block_problem(entry)
            if problem:
                bad.add(entry.name)
                notes.append(f"TSDB block {entry.name} is damaged ({problem}): its data were left out")

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == tsdb
        return {n for n in names if n == "lock" or (top and n in bad)}

    try:
        shutil.copytree(tsdb, copy, ignore=ignore)
    except (OSError, shutil.Error) as exc:
        raise EvaluationError(f"{tsdb}: cannot copy the saved TSDB to judge it: {str(exc)[:200]}") from exc
    return notes


@contextmanager
def open_saved(tsdb: Path, workdir: Path) -> Iterator[tuple[Service, list[str]]]:
    """A Prometheus over a checked copy of ``tsdb``: (the service, notes on damaged data)."""
    copy = workdir / "data"
    notes = copy_checked(tsdb, copy)
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\n")
    # Unlimited retention: an archived run older than the default 15 days must not be
    # deleted from the copy before it is judged.
    args = ("--storage.tsdb.retention.time=100y",)
    for _ in range(MAX_RESTARTS):
        (workdir / "prometheus.log").unlink(missing_ok=True)   # this attempt's lines only
        try:
            prom = start_prometheus(config, copy, extra_args=args)
            break
        except EvaluationError as exc:
            rejected = REJECTED.search(str(exc))
            if not rejected or not (copy / rejected.group(1)).is_dir():
                raise
            shutil.rmtree(copy / rejected.group(1))
            notes.append(f"TSDB block {rejected.group(1)} rejected by Prometheus "
                         f"({_reason(str(exc), rejected.group(0))}): its data were left out")
    else:
        raise EvaluationError(f"{tsdb}: Prometheus rejects the saved TSDB even without {MAX_RESTARTS} damaged blocks")
    try:
        notes += log_problems(Path(prom.log_path))
        yield prom, notes
    finally:
        prom.stop()


def _reason(text: str, marker: str) -> str:
    after = text.split(marker, 1)[1].lstrip(": ")
    return " ".join(after.split())[:120].rstrip('"') or "corrupted"


def log_problems(log: Path, limit: int = 5) -> list[str]:
    """Prometheus's own error lines about the data it loaded, as notes."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        if LOG_PROBLEM.search(line) and "level=info" not in line:
            msg = re.search(r'msg="([^"]*)"', line)
            err = re.search(r'err="([^"]*)"', line)
            text = "; ".join(x.group(1) for x in (msg, err) if x) or line
            found.append(f"Prometheus on the saved TSDB: {text[:200]}")
    return list(dict.fromkeys(found))[:limit]
