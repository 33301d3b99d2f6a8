"""soak-check: the verdict from PromQL, live or after the run."""
