"""GPU<->NIC affinity and switch-aware node order. Pure functions over the hosts file's hardware.

A KV transfer over the wrong HCA (an inactive one, or one across the PCIe/NUMA fabric from the GPU)
hangs or crawls. So each rank gets exactly the active HCAs its GPU is paired with: `UCX_NET_DEVICES`
(`mlx5_0:1,...`) and `NCCL_IB_HCA` in NCCL's exact-match form (`=mlx5_0,...`).
"""

from __future__ import annotations

from collections import defaultdict

from ..config.hosts import NicSpec, Node


def nics_for_gpus(node: Node, gpus: list[int]) -> list[NicSpec]:
    """The active NICs paired with any of these GPUs, in the hosts file's order.

    A GPU whose paired NICs are all down falls back to every active fabric NIC of the node (those
    paired with some GPU): better a far HCA than UCX guessing among all of them, inactive ones
    included. A NIC paired with no GPU (a storage or management port) is never chosen.
    """
    active = [nic for nic in node.nics if nic.state == "active" and nic.gpus]
    wanted = set(gpus)
    paired = [nic for nic in active if wanted & set(nic.gpus)]
    orphans = wanted - {gpu for nic in paired for gpu in nic.gpus}
    if orphans and any(orphans & set(nic.gpus) for nic in node.nics):  # their own NICs exist but are down
        paired += [nic for nic in active if nic not in paired]
    return paired


def nic_fallbacks(node: Node, gpus: list[int]) -> list[str]:
    """Each of these GPUs whose own HCAs are all down, with the HCAs its rank gets instead (farther across
    PCIe or NUMA, and shared with another GPU): said in the plan's warnings, not found in a slow transfer."""
    said = []
    for gpu in gpus:
        own = [nic for nic in node.nics if gpu in nic.gpus]
        if own and all(nic.state == "down" for nic in own):
            instead = ", ".join(nic.name for nic in nics_for_gpus(node, [gpu])) or "none"
            said.append(
                f"{node.name} GPU {gpu}: its own HCA {', '.join(nic.name for nic in own)} is down; "
                f"its rank uses {instead} instead"
            )
    return said


def rdma_env(nics: list[NicSpec]) -> dict[str, str]:
    """What UCX and NCCL need to use exactly these HCAs (nothing when the node declares none)."""
    if not nics:
        return {}
    return {
        "UCX_NET_DEVICES": ",".join(f"{nic.name}:{nic.port}" for nic in nics),
        "NCCL_IB_HCA": "=" + ",".join(dict.fromkeys(nic.name for nic in nics)),
    }


def rank_rdma_env(nodes: list[Node], gpus: list[int]) -> list[dict[str, str]]:
    """Per MPI rank of a worker spread over `nodes` (srun's block order: node by node, GPU by GPU)."""
    return [rdma_env(nics_for_gpus(node, [gpu])) for node in nodes for gpu in gpus]


def preferred_node_order(nodes: list[Node], needed: int) -> list[int]:
    """Node indices, best first, so that a deployment of `needed` nodes stays under one leaf switch.

    The first leaf (in the hosts file's order) that can hold the whole deployment goes first; when
    none can, the biggest leaves go first, to cross as few switches as possible. On one node, or
    without any topology, the hosts file's order stands: it is the user's preference.
    """
    in_order = list(range(len(nodes)))
    by_leaf: dict[str | None, list[int]] = defaultdict(list)
    for index, node in enumerate(nodes):
        by_leaf[node.switch].append(index)
    leaves = [members for leaf, members in by_leaf.items() if leaf is not None]
    if needed <= 1 or not leaves:
        return in_order
    fitting = next((members for members in leaves if len(members) >= needed), None)
    first = fitting or max(leaves, key=len)
    rest = sorted((members for members in leaves if members is not first), key=len, reverse=True)
    return first + [index for members in rest for index in members] + by_leaf.get(None, [])
