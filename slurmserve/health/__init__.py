"""Is the deployment serving: the supervisor's pure decisions, the pools' health, and Dynamo's discovery store seen from
outside (which instance is whose)."""
