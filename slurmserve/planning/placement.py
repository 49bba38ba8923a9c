"""Which node(s) and GPUs each worker replica gets. Pure: shapes and nodes in, placements out.

Strategy, in order:
1. Roles apart: when the nodes allow, prefill and decode get disjoint node sets (KV moves between
   nodes over RDMA, and neither role starves the other of PCIe/NIC bandwidth); inside a role's set
   the replicas spread round-robin over its nodes.
2. Packed: otherwise every replica takes the first node with enough free GPUs, lowest GPU indices
   first (on one 8-GPU node: prefill on GPUs 0-3, decode on 4-7, as Dynamo publishes it).
Either way nodes are taken in topology order (topology.preferred_node_order): under one leaf switch
when the deployment fits there, so prefill->decode KV transfers stay inside the leaf.
A worker wider than a node takes whole nodes of one size. Each node counts with its own GPUs: a worker
goes only where it fits, and divides the node's GPUs evenly (a 3-GPU worker on 8 GPUs would strand two).
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


def fits(gpus: int, node_gpus: int) -> bool:
    """A worker of `gpus` GPUs sits on a node of `node_gpus` (evenly: the node holds whole workers only)."""
    return 0 < gpus <= node_gpus and node_gpus % gpus == 0


def spans(gpus: int, node_gpus: int) -> bool:
    """A worker of `gpus` GPUs spans whole nodes of `node_gpus`."""
    return 0 < node_gpus < gpus and gpus % node_gpus == 0


def check_shape(role: str, spec: WorkerSpec, sizes: set[int]) -> None:
    """The worker fits some node (evenly), or spans whole nodes of one size; EP divides its GPUs."""
    shape = (
        f"{role} needs {spec.gpus} GPUs per worker "
        f"(tensor_parallel {spec.tensor_parallel} x pipeline_parallel {spec.pipeline_parallel})"
    )
    sizes = {size for size in sizes if size}
    if not sizes:
        raise UserError(f"{role}.tensor_parallel: {shape}, but the nodes have no GPUs")
    listed = "/".join(map(str, sorted(sizes)))
    if any(size >= spec.gpus for size in sizes):
        if not any(fits(spec.gpus, size) for size in sizes):
            raise UserError(f"{role}.tensor_parallel: {shape}, which does not divide a node's {listed} GPUs")
    elif not any(spans(spec.gpus, size) for size in sizes):
        raise UserError(
            f"{role}.tensor_parallel: {shape}; a worker wider than a node must span whole nodes "
            f"of {listed} GPUs, and {spec.gpus} is not a multiple of {listed}"
        )
    if spec.expert_parallel > spec.gpus or spec.gpus % spec.expert_parallel:
        wrong = "is larger than" if spec.expert_parallel > spec.gpus else "does not divide"
        # Expert parallelism shares the tensor-parallel GPUs: a change of tensor_parallel alone breaks it.
        raise UserError(
            f"{role}.expert_parallel: {spec.expert_parallel} {wrong} the worker's {spec.gpus} GPUs (tensor_parallel "
            f"{spec.tensor_parallel} x pipeline_parallel {spec.pipeline_parallel}), over which experts are split "
            f"evenly: set {role}.expert_parallel too, to a divisor of {spec.gpus}, "
            f"e.g. --set {role}.expert_parallel={spec.gpus}"
        )


def nodes_needed(spec: WorkerSpec, sizes: list[int]) -> int | None:
    """How many of these nodes (in order) the role's replicas take, each node holding as many whole
    workers as fit; None when they do not fit at all."""
    left: float = spec.replicas
    taken = 0
    for size in sizes:
        if left <= 0:
            break
        taken += 1
        if fits(spec.gpus, size):
            left -= size // spec.gpus
        elif spans(spec.gpus, size):
            left -= size / spec.gpus  # a share of one wide worker; whole nodes of one size, checked at placing
    return taken if left <= 1e-9 else None


class _FreeGpus:
    """The GPUs still free on each node, handed out lowest index first."""

    def __init__(self, nodes: list[Node]):
        self.size = [node.gpus for node in nodes]
        self.free = [list(range(node.gpus)) for node in nodes]

    def take(self, node: int, count: int) -> tuple[int, ...] | None:
        if not fits(count, self.size[node]) or len(self.free[node]) < count:
            return None
        taken, self.free[node] = self.free[node][:count], self.free[node][count:]
        return tuple(taken)

    def take_whole_nodes(self, candidates: list[int], gpus: int) -> tuple[int, ...] | None:
        """The first untouched candidates of one size that a worker of `gpus` GPUs spans, in order."""
        for size in dict.fromkeys(self.size[index] for index in candidates):
            if not spans(gpus, size):
                continue
            untouched = [i for i in candidates if self.size[i] == size and len(self.free[i]) == size]
            if len(untouched) >= gpus // size:
                chosen = tuple(untouched[: gpus // size])
                for index in chosen:
                    self.free[index] = []
                return chosen
        return None


def _place_role(
    role: str, spec: WorkerSpec, candidates: list[int], free: _FreeGpus, spread: bool
) -> list[Placement] | None:
    placements = []
    wide = not any(fits(spec.gpus, free.size[index]) for index in candidates)
    for replica in range(spec.replicas):
        if wide:
            chosen = free.take_whole_nodes(candidates, spec.gpus)
            if chosen is None:
                return None
            placements.append(Placement(role, replica, chosen, tuple(range(free.size[chosen[0]]))))
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


def _nodes_apart(roles: list[tuple[str, WorkerSpec]], nodes: list[Node]) -> int:
    """About how many nodes the deployment takes, each role on nodes of its own when it can (counted on
    the biggest nodes): how far the topology order should look for one leaf that holds it."""
    biggest = max(node.gpus for node in nodes)
    return sum(nodes_needed(spec, [biggest] * len(nodes)) or len(nodes) for _, spec in roles)


def _roles_apart(roles: list[tuple[str, WorkerSpec]], nodes: list[Node]) -> list[Placement] | None:
    order = preferred_node_order(nodes, _nodes_apart(roles, nodes))
    free = _FreeGpus(nodes)
    placements, start = [], 0
    for role, spec in roles:
        count = nodes_needed(spec, [nodes[index].gpus for index in order[start:]])
        if count is None:
            return None
        placed = _place_role(role, spec, order[start : start + count], free, spread=True)
        if placed is None:
            return None
        placements += placed
        start += count
    return placements


def _packed(roles: list[tuple[str, WorkerSpec]], nodes: list[Node]) -> list[Placement] | None:
    biggest = max(node.gpus for node in nodes)
    order = preferred_node_order(nodes, math.ceil(sum(spec.replicas * spec.gpus for _, spec in roles) / biggest))
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
        check_shape(role, spec, {node.gpus for node in nodes})
    placements = _roles_apart(roles, nodes) if len(roles) > 1 else None
    placements = placements or _packed(roles, nodes)
    if placements is None:
        demand = ", ".join(f"{role} {spec.replicas} x {spec.gpus}" for role, spec in roles)
        fields = "/".join(gpu_count_fields(roles))
        raise UserError(
            f"{fields}: the recipe needs {sum(s.replicas * s.gpus for _, s in roles)} GPUs ({demand}) in whole "
            f"workers, but the hosts provide {sum(n.gpus for n in nodes)} on {len(nodes)} node(s) "
            f"({', '.join(f'{n.name}: {n.gpus}' for n in nodes[:8])}{', ...' if len(nodes) > 8 else ''})"
        )
    return placements


def gpu_count_fields(roles: list[tuple[str, WorkerSpec]]) -> list[str]:
    """The recipe fields that lower how many GPUs it needs: each section's replicas, and its tensor and
    pipeline parallelism where above 1 (a worker too wide for the hosts is fixed there, not in replicas)."""
    return [
        f"{role}.{key}"
        for role, spec in roles
        for key in ("replicas", "tensor_parallel", "pipeline_parallel")
        if key == "replicas" or getattr(spec, key) > 1
    ]
