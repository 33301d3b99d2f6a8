"""Shared core of agent-world-soak: errors, ids, the run-state contract, real services."""
