"""The plan's processes, one module per kind, in the order a deployment starts them: the control plane
(etcd, NATS) and Prometheus, the workers, the pools' routers and the global router, the frontend."""
