"""``soak-k8s``: the soak as Kubernetes, Chaos Mesh and Prometheus Operator objects (docs/kubernetes.md)."""
