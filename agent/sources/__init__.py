"""Live inputs: Prometheus usage and the Kubernetes namespace map."""
