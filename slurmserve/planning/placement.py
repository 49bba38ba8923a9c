"""Which node(s) and GPUs each worker replica gets. Pure: shapes and nodes in, placements out.

Strategy, in order:
1. Roles apart: when the nodes allow, prefill and decode get disjoint node sets (KV moves between
   nodes over RDMA, and neither role starves the other of PCIe/NIC bandwidth); inside a role's set
   the replicas spread round-robin over its nodes.
2. Packed: otherwise every replica takes the first node with enough free GPUs, lowest GPU indices
   first (on one 8-GPU node: prefill on GPUs 0-3, decode on 4-7, as Dynamo publishes it).
Either way nodes are taken in topology order (topology.preferred_node_order): under one leaf switch
when the deployment fits there, so prefill->decode KV transfers stay inside the leaf.
A worker wider than a node takes whole nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config.hosts import Node
from ..config.recipe import WorkerSpec
from ..errors import UserError
from .topology import preferred_node_order


@dataclass(frozen=True)
class Placement:
    role: str
    replica: int
    nodes: tuple[int, ...]  # indices into the node list
    gpus: tuple[int, ...]  # local GPU indices, the same on every node of a wide worker


def check_shape(role: str, spec: WorkerSpec, gpus_per_node: int) -> None:
    shape = (
        f"{role} needs {spec.gpus} GPUs per worker "
        f"(tensor_parallel {spec.tensor_parallel} x pipeline_parallel {spec.pipeline_parallel})"
    )
    if gpus_per_node == 0:
        raise UserError(f"{role}.tensor_parallel: {shape}, but the nodes have no GPUs")
    if spec.gpus <= gpus_per_node:
        if gpus_per_node % spec.gpus:
            raise UserError(f"{role}.tensor_parallel: {shape}, which does not divide a node's {gpus_per_node} GPUs")
    elif spec.gpus % gpus_per_node:
        raise UserError(
            f"{role}.tensor_parallel: {shape}; a worker wider than a node must span whole nodes "
            f"of {gpus_per_node} GPUs, and {spec.gpus} is not a multiple of {gpus_per_node}"
        )
    if spec.expert_parallel > spec.gpus:
        raise UserError(f"{role}.expert_parallel: {spec.expert_parallel} is larger than the worker's {spec.gpus} GPUs")


def nodes_needed(spec: WorkerSpec, gpus_per_node: int) -> int:
    if spec.gpus > gpus_per_node:
        return spec.replicas * (spec.gpus // gpus_per_node)
    return math.ceil(spec.replicas / (gpus_per_node // spec.gpus))


class _FreeGpus:
    """The GPUs still free on each node, handed out lowest index first."""

    def __init__(self, nodes: list[Node]):
        self.size = [node.gpus for node in nodes]
        self.free = [list(range(node.gpus)) for node in nodes]

    def take(self, node: int, count: int) -> tuple[int, ...] | None:
        if len(self.free[node]) < count:
            return None
        taken, self.free[node] = self.free[node][:count], self.free[node][count:]
        return tuple(taken)

    def take_whole_nodes(self, candidates: list[int], span: int) -> tuple[int, ...] | None:
        """The first `span` untouched nodes among the candidates, in order."""
        untouched = [index for index in candidates if len(self.free[index]) == self.size[index]]
        if len(untouched) < span:
            return None
        chosen = tuple(untouched[:span])
        for index in chosen:
            self.free[index] = []
        return chosen


def _place_role(
    role: str, spec: WorkerSpec, candidates: list[int], free: _FreeGpus, spread: bool
) -> list[Placement] | None:
    node_gpus = free.size[candidates[0]]
    placements = []
    for replica in range(spec.replicas):
        if spec.gpus > node_gpus:
            chosen = free.take_whole_nodes(candidates, spec.gpus // node_gpus)
            if chosen is None:
                return None
            placements.append(Placement(role, replica, chosen, tuple(range(node_gpus))))
            continue
        # Round-robin start point spreads replicas over the role's nodes; packing always starts at the first.
        shift = replica % len(candidates) if spread else 0
        for node in candidates[shift:] + candidates[:shift]:
            gpus = free.take(node, spec.gpus)
            if gpus is not None:
                placements.append(Placement(role, replica, (node,), gpus))
                break
        else:
            return None
    return placements


def _roles_apart(roles: list[tuple[str, WorkerSpec]], nodes: list[Node]) -> list[Placement] | None:
    needed = [nodes_needed(spec, nodes[0].gpus) for _, spec in roles]
    if sum(needed) > len(nodes):
        return None
    order = preferred_node_order(nodes, sum(needed))
    free = _FreeGpus(nodes)
    placements, start = [], 0
    for (role, spec), count in zip(roles, needed, strict=True):
        placed = _place_role(role, spec, order[start : start + count], free, spread=True)
        if placed is None:
            return None
        placements += placed
        start += count
    return placements


def _packed(roles: list[tuple[str, WorkerSpec]], nodes: list[Node]) -> list[Placement] | None:
    order = preferred_node_order(nodes, math.ceil(sum(s.replicas * s.gpus for _, s in roles) / nodes[0].gpus))
    free = _FreeGpus(nodes)
    placements = []
    for role, spec in roles:
        placed = _place_role(role, spec, order, free, spread=False)
        if placed is None:
            return None
        placements += placed
    return placements


def place_workers(roles: list[tuple[str, WorkerSpec]], nodes: list[Node]) -> list[Placement]:
    if not nodes:
        raise UserError("hosts: no nodes to place the deployment on")
    for role, spec in roles:
        check_shape(role, spec, nodes[0].gpus)
    placements = _roles_apart(roles, nodes) if len(roles) > 1 else None
    placements = placements or _packed(roles, nodes)
    if placements is None:
        demand = ", ".join(f"{role} {spec.replicas} x {spec.gpus}" for role, spec in roles)
        fields = "/".join(f"{role}.replicas" for role, _ in roles)
        raise UserError(
            f"{fields}: the recipe needs {sum(s.replicas * s.gpus for _, s in roles)} GPUs ({demand}) in whole "
            f"workers, but the hosts provide {sum(n.gpus for n in nodes)} on {len(nodes)} node(s) "
            f"({', '.join(f'{n.name}: {n.gpus}' for n in nodes[:8])}{', ...' if len(nodes) > 8 else ''})"
        )
    return placements
