"""Grafana dashboards of the soak stack, generated from code (see ``grafana.dashboards``)."""
