"""The deployment as it runs: the supervisor (start order, watching, restarts) and what it reports."""
