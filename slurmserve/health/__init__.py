"""Is the deployment serving: HTTP probes, typed states with pure transition rules, the supervisor
that watches and restarts, and Dynamo's discovery store seen from outside."""
