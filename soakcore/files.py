"""Reading input documents and log tails, with errors that name the file."""
from __future__ import annotations

import json
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


def load_document(path: Path) -> Any:
    """A JSON (``.json``) or YAML (anything else) document; InputError naming the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(path, "<file>", f"cannot read: {exc.strerror}") from exc
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        return json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InputError(path, "<file>", f"not valid {kind}: {str(exc).splitlines()[0]}") from exc
