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
from prometheus_client.parser import text_string_to_metric_families

from ..planning.plan import Plan
from ..transport.http import HTTP_TIMEOUT_S


class InstanceOwners:
    """Which of the plan's processes registered the instances of the frontend's /health list.

    With `request_plane: tcp` an instance's transport is {"tcp": "HOST:RPC_PORT/..."}: the worker's
    pinned RPC port on its node names it. With NATS it is {"nats_tcp": "SUBJECT-INSTANCE_ID"}, which names
    no process; there the worker's own /metrics does: its series carry `worker_id`, its instance id in
    hex. `learn` takes those once the worker serves (each start anew: a restart is a new instance).
    """

    def __init__(self, plan: Plan):
        self.by_address = {
            f"{plan.host_node(process).address}:{process.ports['rpc']}": process.name
            for process in plan.processes
            if "rpc" in process.ports
        }
        self.by_id: dict[int, str] = {}

    def learn(self, process: str, instance_ids: set[int]) -> None:
        self.by_id = {instance: owner for instance, owner in self.by_id.items() if owner != process}
        self.by_id |= dict.fromkeys(instance_ids, process)

    def owner(self, instance: dict[str, Any]) -> str | None:
        transport = instance.get("transport")
        address = transport.get("tcp") if isinstance(transport, dict) else None
        if isinstance(address, str):
            return self.by_address.get(address.split("/", 1)[0])
        instance_id = instance.get("instance_id")
        return self.by_id.get(instance_id) if isinstance(instance_id, int) else None


def worker_ids(metrics: str) -> set[int]:
    """The instance ids a worker's /metrics names (label `worker_id`, in hex)."""
    ids = set()
    try:
        for family in text_string_to_metric_families(metrics):
            for sample in family.samples:
                worker = sample.labels.get("worker_id")
                if worker:
                    ids.add(int(worker, 16))
    except ValueError:  # not the exposition format (or a torn reply): nothing learnt this time
        return set()
    return ids


def forget(plan: Plan, instance_ids: set[int]) -> set[int]:
    """Remove these instances from discovery now, so the frontend stops routing to them; returns those
    the store confirmed removing (etcd: its lease revoked; file discovery: its files deleted)."""
    if plan.etcd_endpoint:
        return {instance_id for instance_id in instance_ids if revoke(plan.etcd_endpoint, instance_id)}
    suffixes = {f"%2F{instance_id:x}": instance_id for instance_id in instance_ids}
    removed = set()
    for path in (Path(plan.run_dir) / "discovery" / "v1").glob("*/*"):
        suffix = path.name[path.name.rfind("%2F") :]
        if suffix in suffixes:
            path.unlink(missing_ok=True)
            removed.add(suffixes[suffix])
    return removed


def revoke(etcd: str, lease: int) -> bool:
    """An instance id is its etcd lease: revoking it drops all of the instance's keys at once."""
    try:
        reply = httpx.post(f"{etcd}/v3/lease/revoke", json={"ID": str(lease)}, timeout=HTTP_TIMEOUT_S)
        return reply.status_code == 200 and "error" not in reply.json()
    except (httpx.HTTPError, ValueError):
        return False  # etcd down: its keys expire with the lease anyway
