"""soak-exporter: epoch reports, status endpoints, process stats and run state as metrics."""
