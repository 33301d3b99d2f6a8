"""Validation of names that become labels or path components."""
from __future__ import annotations

import re

from soakcore.errors import UsageError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def validate_name(kind: str, value: object) -> str:
    """Return ``value`` if it is a safe node/topology/run id, else raise UsageError.

    Safe means: 1-64 chars of [A-Za-z0-9_.-], not starting with '.' or '-', so it can
    be a path component and a bounded label value.
    """
    if not isinstance(value, str) or not _NAME.match(value) or value in {".", ".."}:
        raise UsageError(f"invalid {kind} {value!r}: use 1-64 characters of A-Z a-z 0-9 _ . - "
                         "not starting with '.' or '-'")
    return value
