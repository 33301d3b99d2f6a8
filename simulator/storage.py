"""A real blob store in the node's working directory, answering storage challenges by
reading a sample and checking the blob's hash, with cumulative counters that persist."""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

REASONS = ("MISSING_SAMPLE", "HASH_MISMATCH", "TIMEOUT", "READ_IO_ERROR", "SIGNATURE_INVALID", "UNKNOWN")
BLOB_COUNT = 16
BLOB_BYTES = 4096
SAMPLE_BYTES = 512


@dataclass
class Counters:
    """Cumulative challenge counters (``distfs_probe_cursor_state.cumulative_*``)."""

    total: int = 0
    passed: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    cursor: int = 0
    rounds: int = 0
    last_probe_ms: int | None = None


class BlobStore:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        index = root / "index.json"
        if index.exists():
            self.index: dict[str, str] = json.loads(index.read_text())
        else:
            rng = random.Random(seed)
            self.index = {}
            for i in range(BLOB_COUNT):
                data = rng.randbytes(BLOB_BYTES)
                name = f"blob-{i:03d}"
                (root / name).write_bytes(data)
                self.index[name] = hashlib.sha256(data).hexdigest()
            index.write_text(json.dumps(self.index, sort_keys=True))
        self.names = sorted(self.index)

    def challenge(self, cursor: int, offset: int, forced_reason: str | None) -> tuple[str | None, str]:
        """Check one blob: read a sample at ``offset`` and verify the blob's hash.

        ``forced_reason`` makes the check fail the real way for that reason (a fault switch):
        MISSING_SAMPLE reads a sample that is not there, HASH_MISMATCH checks against a
        corrupted digest; others are reported as that reason. Returns (reason|None, ref).
        """
        name = self.names[cursor % len(self.names)]
        path = self.root / (name + ".missing" if forced_reason == "MISSING_SAMPLE" else name)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return "MISSING_SAMPLE", name
        except OSError:
            return "READ_IO_ERROR", name
        sample = data[offset % max(1, len(data) - SAMPLE_BYTES):][:SAMPLE_BYTES]
        expected = self.index[name]
        if forced_reason == "HASH_MISMATCH":
            expected = hashlib.sha256(expected.encode()).hexdigest()
        if hashlib.sha256(data).hexdigest() != expected or not sample:
            return "HASH_MISMATCH", name
        return forced_reason, name
