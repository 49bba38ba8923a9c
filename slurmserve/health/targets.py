"""The deployment's Prometheus targets, in Prometheus's `file_sd` format: every /metrics endpoint (the
frontend's HTTP port, each worker's status port, etcd's client port), labelled so that one site
Prometheus can pick up every deployment by a glob over run directories."""

from __future__ import annotations

from typing import Any

from ..planning.plan import Plan, Process

TARGETS_FILE = "prometheus/targets.json"  # in the run directory, while the deployment runs


def metrics_port(process: Process) -> int | None:
    """The port a process serves /metrics on (NATS has none in Prometheus's format)."""
    if process.role == "frontend":
        return process.ports.get("http")
    if process.role == "etcd":
        return process.ports.get("client")
    return process.ports.get("system") if process.is_worker else None


def file_sd_targets(plan: Plan) -> list[dict[str, Any]]:
    """One target group per process with metrics: [{"targets": ["host:port"], "labels": {...}}]."""
    groups = []
    for process in plan.processes:
        port = metrics_port(process)
        if port is None:
            continue
        node = plan.host_node(process)
        labels = {
            "run": plan.run_name,
            "recipe": plan.recipe,
            "role": process.role,
            "process": process.name,
            "node": node.name,
            "backend": plan.backend,
        }
        groups.append({"targets": [f"{node.address}:{port}"], "labels": labels})
    return groups
