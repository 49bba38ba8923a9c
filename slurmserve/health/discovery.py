"""Dynamo's discovery store, seen from outside: which registered instances belong to which process of
the plan, and forgetting a dead process's instances at once.

A SIGKILLed worker stays registered until its lease runs out (seconds with etcd and a short lease, about
12 s with file discovery), and the frontend keeps routing requests to it meanwhile. The supervisor knows
sooner: it revokes the lease (etcd) or removes the files (file discovery) of a process it saw die.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from ..planning.plan import Plan
from ..transport.http import HTTP_TIMEOUT_S


class InstanceOwners:
    """Which of the plan's processes registered an instance of the frontend's /health list, in O(1).

    A worker's instance names its request plane: with `request_plane: tcp` the transport is
    {"tcp": "HOST:RPC_PORT/..."}, the worker's pinned RPC port on its node.
    """

    def __init__(self, plan: Plan):
        self.by_address = {
            f"{plan.host_node(process).address}:{process.ports['rpc']}": process.name
            for process in plan.processes
            if "rpc" in process.ports
        }

    def owner(self, instance: dict[str, Any]) -> str | None:
        transport = instance.get("transport")
        address = transport.get("tcp") if isinstance(transport, dict) else None
        if not isinstance(address, str):
            return None
        return self.by_address.get(address.split("/", 1)[0])


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
