"""KV-path preflight: a short UCX transfer between each prefill node and each decode node over the
devices the plan gives the workers, before any model loads (see transfers.py)."""
