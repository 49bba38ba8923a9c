"""The supervisor's own Prometheus metrics: restarts, state changes, readiness and the canary's latency, so
that a restart shows on the same dashboard as its effect on latency.

Served on an ephemeral port of the address this machine reaches the head node from (the node's own
address inside a Slurm job, loopback for a local run): the run's Prometheus, on the head node, reaches it
there. The supervisor lists the endpoint among the run's targets. Labels name the process `process_name`
and `process_role`: the target's own labels (`process`, `role`) say which target was scraped.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, MetricsHandler

from ..planning.plan import Plan
from ..runs import ProcessState

PREFIX = "slurmserve_"


def address_toward(host: str) -> str:
    """This machine's address on the route to `host` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))
        return str(probe.getsockname()[0])


class QuietServer(ThreadingHTTPServer):
    """http.server's threading server without its reverse lookup of the address it binds (getfqdn): where
    the nodes' DNS does not answer, that lookup alone takes seconds, before the supervisor's first tick."""

    daemon_threads = True

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


class SupervisorMetrics:
    def __init__(self, plan: Plan):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        per_process = ["process_name", "process_role"]
        self.restarts = Counter(f"{PREFIX}restarts", "Restarts in place", [*per_process, "cause"], registry=registry)
        self.state_changes = Counter(
            f"{PREFIX}state_changes", "Process state changes, by new state", [*per_process, "state"], registry=registry
        )
        self.ready = Gauge(f"{PREFIX}process_ready", "1 while the process is ready", per_process, registry=registry)
        self.deployment_ready = Gauge(f"{PREFIX}deployment_ready", "1 while the deployment serves", registry=registry)
        self.canary_latency = Gauge(
            f"{PREFIX}canary_latency_seconds", "The last canary completion's latency", registry=registry
        )
        self.canary_failures = Counter(f"{PREFIX}canary_failures", "Canaries that failed", registry=registry)
        self.roles = {process.name: process.role for process in plan.processes}
        # Every series from the start, at zero: a dashboard's increase() has data before the first restart.
        for name, role in self.roles.items():
            self.ready.labels(name, role).set(0)
            for cause in ("crash", "requested"):
                self.restarts.labels(name, role, cause)
        self.head = plan.nodes[0].address

    def serve(self) -> str:
        """Start serving /metrics; the endpoint ("address:port") a Prometheus scrapes."""
        address = address_toward(self.head)
        server = QuietServer((address, 0), MetricsHandler.factory(self.registry))
        threading.Thread(target=server.serve_forever, name="own-metrics", daemon=True).start()
        return f"{address}:{server.server_port}"

    def restarted(self, name: str, requested: bool) -> None:
        self.restarts.labels(name, self.roles[name], "requested" if requested else "crash").inc()

    def changed(self, name: str, state: ProcessState) -> None:
        self.state_changes.labels(name, self.roles[name], state.value).inc()
        self.ready.labels(name, self.roles[name]).set(1 if state == ProcessState.READY else 0)

    def canary(self, ok: bool, latency_s: float) -> None:
        if ok:
            self.canary_latency.set(latency_s)
        else:
            self.canary_failures.inc()
