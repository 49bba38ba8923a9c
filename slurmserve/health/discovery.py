"""Dynamo's discovery store, seen from outside: which registered instances belong to which process of
the plan, and forgetting a dead process's instances at once.

A SIGKILLed worker stays registered until its lease runs out (seconds with etcd and a short lease, about
12 s with file discovery), and the frontend keeps routing requests to it meanwhile. The supervisor knows
sooner: it revokes the lease (etcd) or removes the files (file discovery) of a process it saw die.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from ..planning.plan import Plan, Process
from ..transport.http import HTTP_TIMEOUT_S


def rpc_address(plan: Plan, process: Process) -> str | None:
    """host:port a worker's request plane listens on: how its instances name it."""
    port = process.ports.get("rpc")
    return f"{plan.node(process.nodes[0]).address}:{port}" if port else None


def owner_of(plan: Plan, instance: dict) -> str | None:
    """The plan's process that registered an instance (from the frontend's /health list)."""
    transport = instance.get("transport", {}).get("tcp", "")
    for process in plan.processes:
        address = rpc_address(plan, process)
        if address and transport.startswith(address + "/"):
            return process.name
    return None


def forget(plan: Plan, instance_ids: set[int]) -> None:
    """Remove these instances from discovery now, so the frontend stops routing to them."""
    if plan.etcd_endpoint:
        etcd = plan.etcd_endpoint
        for instance_id in instance_ids:  # an instance id is its etcd lease: revoking drops all its keys
            try:
                httpx.post(f"{etcd}/v3/lease/revoke", json={"ID": str(instance_id)}, timeout=HTTP_TIMEOUT_S)
            except httpx.HTTPError:
                pass  # etcd down: its keys expire with the lease anyway
        return
    suffixes = tuple(f"%2F{instance_id:x}" for instance_id in instance_ids)
    for path in (Path(plan.run_dir) / "discovery" / "v1").glob("*/*"):
        if path.name.endswith(suffixes):
            path.unlink(missing_ok=True)
