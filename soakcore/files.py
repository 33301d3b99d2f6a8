"""Reading input documents and log tails, with errors that name the file."""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from soakcore.errors import InputError


def tail(path: Path, max_bytes: int = 2000) -> str:
    """The end of a log file (stderr tails in crash notes and failures.md); '' if unreadable."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - max_bytes))
            return fh.read().decode(errors="replace").strip()
    except OSError:
        return ""


MAX_DOCUMENT_BYTES = 1 << 20  # a plan or topology file is kilobytes; anything near this is not one


def load_document(path: Path, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """A JSON (``.json``) or YAML (anything else) document: a regular file of at most ``max_bytes``,
    UTF-8, without NaN or infinities anywhere. Every refusal is an InputError naming the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except OSError as exc:
        raise InputError(path, "<file>", f"cannot read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(path, "<file>", "not a regular file")
        if st.st_size > max_bytes:
            raise InputError(path, "<file>", f"{st.st_size} bytes, more than the limit of {max_bytes}")
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise InputError(path, "<file>", f"cannot read: {exc.strerror}") from exc
    if len(data) > max_bytes:
        raise InputError(path, "<file>", f"more than the limit of {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, "<file>", f"not UTF-8 (byte {exc.start})") from None
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        doc = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InputError(path, "<file>", f"not valid {kind}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    except RecursionError:
        raise InputError(path, "<file>", f"not valid {kind}: nested too deeply") from None
    bad = _non_finite(doc)
    if bad is not None:
        raise InputError(path, bad, "NaN and infinity are not numbers here")
    return doc


def _non_finite(doc: Any) -> str | None:
    """The path of the first NaN/infinite float in ``doc`` (any depth, no recursion; YAML aliases
    may share or even cycle, so each container is visited once), or None."""
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("<root>", doc)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where
        if isinstance(value, (dict, list)) and id(value) not in seen:
            seen.add(id(value))
            prefix = "" if where == "<root>" else where
            if isinstance(value, dict):
                stack.extend((f"{prefix}.{k}".lstrip("."), v) for k, v in value.items())
            else:
                stack.extend((f"{prefix}[{i}]", v) for i, v in enumerate(value))
    return None
