"""The deployment's Prometheus targets, in Prometheus's `file_sd` format: every /metrics endpoint (the
frontend's HTTP port, each worker's status port, etcd's client port), labelled so that one site
Prometheus can pick up every deployment by a glob over run directories."""

from __future__ import annotations

from typing import Any

from ..planning.plan import Plan, Process


def metrics_port(process: Process) -> int | None:
    """The port a process serves /metrics on (NATS has none in Prometheus's format)."""
    if process.role in ("frontend", "prometheus"):
        return process.ports.get("http")
    if process.role == "etcd":
        return process.ports.get("client")
    return process.ports.get("system") if process.is_worker else None


def metrics_url(plan: Plan, process: Process) -> str | None:
    """Where a process serves /metrics (None: it serves none)."""
    port = metrics_port(process)
    return f"http://{plan.host_node(process).address}:{port}/metrics" if port else None


def file_sd_targets(plan: Plan, supervisor: str | None = None) -> list[dict[str, Any]]:
    """One target group per process with metrics, and the supervisor's own endpoint ("host:port") when it
    serves one: [{"targets": ["host:port"], "labels": {...}}]."""
    groups = []
    for process in plan.launched:
        port = metrics_port(process)
        if port is None:
            continue
        node = plan.host_node(process)
        groups.append(target(plan, f"{node.address}:{port}", process.role, process.name, node.name))
    if supervisor:
        groups.append(target(plan, supervisor, "supervisor", "supervisor", plan.nodes[0].name))
    return groups


def target(plan: Plan, endpoint: str, role: str, process: str, node: str) -> dict[str, Any]:
    labels = {"run": plan.run_name, "recipe": plan.recipe, "role": role, "process": process, "node": node}
    return {"targets": [endpoint], "labels": labels | {"backend": plan.backend}}
