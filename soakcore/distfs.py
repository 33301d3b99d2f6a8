"""The DistFS storage-challenge failure reasons of Agent World (FORMATS.md): one closed set,
used by the simulator (fault switches) and the exporter (the ``reason`` label)."""

DISTFS_REASONS = ("MISSING_SAMPLE", "HASH_MISMATCH", "TIMEOUT", "READ_IO_ERROR", "SIGNATURE_INVALID", "UNKNOWN")
