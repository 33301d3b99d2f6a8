"""A real blob store in the node's working directory, answering storage challenges by
reading a sample and checking the blob's hash, with cumulative counters that persist."""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class TickChallenges:
    """One tick's checks: what ``distfs_challenge_report`` covers (not persisted)."""

    total: int = 0
    passed: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    last_reference: str = ""
    last_reason: str | None = None


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

        ``forced_reason`` (a fault switch) makes the check fail the real way where one exists:
        MISSING_SAMPLE reads a file that is not there, READ_IO_ERROR reads a directory,
        HASH_MISMATCH checks against a corrupted digest; the others (TIMEOUT, SIGNATURE_INVALID,
        UNKNOWN) are reported as that reason after a good read.
        Returns (failure reason or None, sample reference = sha256 of the sample).
        """
        name = self.names[cursor % len(self.names)]
        path = {"MISSING_SAMPLE": self.root / (name + ".missing"), "READ_IO_ERROR": self.root}.get(
            forced_reason or "", self.root / name)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return "MISSING_SAMPLE", self.index[name]
        except OSError:
            return "READ_IO_ERROR", self.index[name]
        sample = data[offset % max(1, len(data) - SAMPLE_BYTES):][:SAMPLE_BYTES]
        ref = hashlib.sha256(sample).hexdigest()
        expected = self.index[name]
        if forced_reason == "HASH_MISMATCH":
            expected = hashlib.sha256(expected.encode()).hexdigest()
        if hashlib.sha256(data).hexdigest() != expected or not sample:
            return "HASH_MISMATCH", ref
        return forced_reason, ref
