"""Which KV paths to check: one per (prefill node, decode node) pair, with each side's planned devices,
grouped into rounds where no node takes part twice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..planning.plan import Plan, Process

DEFAULT_PERFTEST_PORT = 13337  # ucx_perftest's own default, when the deployment's block has no spare port


@dataclass(frozen=True)
class PairCheck:
    """One KV path: the prefill node (ucx_perftest client) sends to the decode node (its server).

    Devices are UCX_NET_DEVICES entries (`mlx5_0:1`, or an IP interface such as `eth0` for TCP);
    an empty tuple means "the interface holding the node's address", found on the node at run time.
    A tls of None leaves UCX_TLS to UCX's default.
    """

    prefill: str
    decode: str
    prefill_devices: tuple[str, ...]
    decode_devices: tuple[str, ...]
    server_address: str  # the decode node's address, which the client connects to
    port: int = DEFAULT_PERFTEST_PORT  # ucx_perftest's TCP port for the parameter exchange, on the decode node
    prefill_address: str = ""
    prefill_tls: str | None = None
    decode_tls: str | None = None

    def devices(self, side: str) -> str:
        devices = self.prefill_devices if side == "prefill" else self.decode_devices
        address = self.prefill_address if side == "prefill" else self.server_address
        return ",".join(devices) if devices else f"the interface of {address}"

    def route(self) -> str:
        """`node1 -> node2 over mlx5_0:1`, each side's devices named when they differ."""
        if not self.prefill_devices and not self.decode_devices:
            return (
                f"{self.prefill} -> {self.decode} over each node's interface for its address "
                f"({self.prefill_address}, {self.server_address})"
            )
        prefill, decode = self.devices("prefill"), self.devices("decode")
        over = prefill if prefill == decode else f"{prefill} ({self.prefill}) / {decode} ({self.decode})"
        return f"{self.prefill} -> {self.decode} over {over}"


def _process_devices(process: Process, node: str) -> list[str]:
    """The UCX_NET_DEVICES entries a worker uses on one of its nodes (each rank's own, when per rank)."""
    rank_env = process.rank_env
    if rank_env:
        per_node = max(1, len(rank_env) // max(1, len(process.nodes)))
        index = process.nodes.index(node)
        values = [env.get("UCX_NET_DEVICES", "") for env in rank_env[index * per_node : (index + 1) * per_node]]
    else:
        values = [process.env.get("UCX_NET_DEVICES", "")]
    return [device.strip() for value in values for device in value.split(",") if device.strip()]


def _side(plan: Plan, role: str, node: str) -> tuple[tuple[str, ...], str | None]:
    """(devices, UCX_TLS) of a role's workers on a node: the union of their planned devices, or TCP
    over the node's control-plane interface when none is planned."""
    processes = [p for p in plan.processes if p.role == role and node in p.nodes]
    devices = list(dict.fromkeys(device for p in processes for device in _process_devices(p, node)))
    tls = next((p.env["UCX_TLS"] for p in processes if p.env.get("UCX_TLS")), None)
    if devices:
        return tuple(devices), tls
    interface = getattr(plan.node(node), "interface", None)
    return ((interface,) if interface else ()), "tcp"


def checks_for_plan(plan: Plan) -> list[PairCheck]:
    """One check per distinct (prefill node, decode node) pair, in the plan's order. A pair on one
    node is left out: its KV cache does not cross a NIC."""

    def nodes_of(role: str) -> list[str]:
        return list(dict.fromkeys(node for p in plan.processes if p.role == role for node in p.nodes))

    prefill_nodes, decode_nodes = nodes_of("prefill"), nodes_of("decode")
    taken: dict[str, int] = {}
    checks = []
    for prefill in prefill_nodes:
        for decode in decode_nodes:
            if prefill == decode:
                continue
            spare = plan.spare_ports(decode)  # the workers are not started yet anyway
            port = spare[taken.get(decode, 0) % len(spare)] if spare else DEFAULT_PERFTEST_PORT
            taken[decode] = taken.get(decode, 0) + 1
            (prefill_devices, prefill_tls), (decode_devices, decode_tls) = (
                _side(plan, "prefill", prefill),
                _side(plan, "decode", decode),
            )
            checks.append(
                PairCheck(
                    prefill=prefill,
                    decode=decode,
                    prefill_devices=prefill_devices,
                    decode_devices=decode_devices,
                    server_address=plan.node(decode).address,
                    port=port,
                    prefill_address=plan.node(prefill).address,
                    prefill_tls=prefill_tls,
                    decode_tls=decode_tls,
                )
            )
    return checks


def rounds(checks: Sequence[PairCheck]) -> list[list[PairCheck]]:
    """Checks grouped so that no node takes part in two checks of a group: a group runs at once,
    without two transfers sharing a NIC (which would halve both bandwidths).

    Prefill i meets decode j in round (j - i) mod N, N the larger side: every prefill -> decode pair
    in N rounds, the fewest possible. A node that is both prefill and decode can still meet itself
    in a round; such a round is split.
    """
    prefills = list(dict.fromkeys(check.prefill for check in checks))
    decodes = list(dict.fromkeys(check.decode for check in checks))
    size = max(len(prefills), len(decodes), 1)
    latin: dict[int, list[PairCheck]] = {}
    for check in checks:
        latin.setdefault((decodes.index(check.decode) - prefills.index(check.prefill)) % size, []).append(check)
    grouped = []
    for _, remaining in sorted(latin.items()):
        while remaining:
            busy: set[str] = set()
            group, later = [], []
            for check in remaining:
                if check.prefill in busy or check.decode in busy:
                    later.append(check)
                else:
                    group.append(check)
                    busy |= {check.prefill, check.decode}
            grouped.append(group)
            remaining = later
    return grouped
