"""What a deployment shows: scrape targets, live metrics, Prometheus (config and launch), the Grafana dashboard and
the supervisor's own metrics."""
