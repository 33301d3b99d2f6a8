"""soak-run: launches a topology, applies chaos, runs the observing stack, judges."""
