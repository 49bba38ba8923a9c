"""Is the deployment serving: the supervisor's pure decisions, the supervisor that watches and restarts,
and Dynamo's discovery store seen from outside."""
