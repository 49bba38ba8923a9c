"""The `python -m` programs that run on the nodes or inside the job: readiness waits, the supervisor and
its scraper of live metrics, leftovers, the KV-path check, model staging, the SSH launcher and its
process-group query. Each is a small entry point over the library; they may print (their output is a log)."""
