"""What operators see: the decision log and Prometheus metrics."""
