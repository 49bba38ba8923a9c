"""What `plan` shows: where every process runs, each rank's GPU and RDMA NICs (`--ranks`), and a last line
that sums the deployment up against the hosts it was planned on."""

from __future__ import annotations

from rich import box
from rich.table import Column, Table

from ..config.hosts import Node
from ..planning.plan import Plan, Process
from .output import gpu_ranges


def placement_table(plan: Plan) -> Table:
    """A row per process, in start order (`stage`: processes of one stage start together, once the stage
    before serves; `standby`: an autoscaled worker that scaling starts, last; `elastic`: one started as a
    Slurm job of its own, its GPUs that job's). At 80 columns nothing is cut:
    GPUs as ranges, a port a line, names whole."""
    stage_of = {process.name: number for number, stage in enumerate(plan.stages(), 1) for process in stage}
    standby = len(plan.stages()) + 1
    with_leaf = any(node.switch for node in plan.nodes)
    table = Table(
        Column("process", no_wrap=True),
        Column("role", no_wrap=True),
        Column("node", no_wrap=True),
        *([Column("leaf", overflow="fold")] if with_leaf else []),
        Column("GPUs", no_wrap=True),
        Column("ports", no_wrap=True),
        Column("stage", justify="right", no_wrap=True),
        box=box.SIMPLE_HEAD,  # no rules between columns: seven columns and whole names in 80
        pad_edge=False,
        collapse_padding=True,
        title=f"{plan.recipe} ({plan.engine}, {plan.mode}) on {plan.backend}: run {plan.run_name}",
    )
    switch_of = {node.name: node.switch for node in plan.nodes}
    for process in sorted(plan.processes, key=lambda process: stage_of.get(process.name, standby)):
        leaf = [", ".join(switch_of[n] or "" for n in process.nodes)] if with_leaf else []
        table.add_row(
            process.name,
            process.role,
            ", ".join(process.nodes),
            *leaf,
            f"{len(process.gpus)}, own job" if process.elastic else gpu_ranges(process.gpus),
            "\n".join(f"{k}={v}" for k, v in process.ports.items()),
            ("elastic" if process.elastic else "standby") if process.standby else str(stage_of[process.name]),
        )
    table.caption = f"endpoint {plan.endpoint} · discovery {plan.discovery} · model {plan.model}"
    return table


def rank_table(plan: Plan) -> Table:
    """Each worker GPU: its node, and the RDMA NICs its rank uses (UCX_NET_DEVICES; NCCL_IB_HCA names the
    same HCAs). A worker that is one MPI world has a rank per GPU, each with its own NICs; one that is a
    single process uses its GPUs' NICs together (the rank column is empty)."""
    table = Table(
        Column("worker", no_wrap=True),
        Column("rank", justify="right"),
        Column("node", no_wrap=True),
        Column("GPU", justify="right"),
        Column("NICs (HCA:port)"),
        title=f"ranks of run {plan.run_name}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for process in plan.processes:
        if process.is_worker:
            for row in rank_rows(process):
                table.add_row(*row)
    if not any(process.env.get("UCX_NET_DEVICES") or process.rank_env for process in plan.processes):
        table.caption = "the hosts file declares no RDMA NICs (node.nics): UCX and NCCL pick their own"
    return table


def rank_rows(process: Process) -> list[tuple[str, str, str, str, str]]:
    places = [(node, gpu) for node in process.nodes for gpu in process.gpus]  # srun's block order
    if process.rank_env:
        return [
            (process.name, str(rank), node, str(gpu), listed(env.get("UCX_NET_DEVICES", "-")))
            for rank, ((node, gpu), env) in enumerate(zip(places, process.rank_env, strict=True))
        ]
    shared = listed(process.env.get("UCX_NET_DEVICES", "-"))
    return [(process.name, "", node, str(gpu), shared) for node, gpu in places]


def listed(devices: str) -> str:
    """UCX_NET_DEVICES's list with a space after each comma: a long one wraps between HCAs, not inside one."""
    return devices.replace(",", ", ")


def plan_summary(plan: Plan, hosts_nodes: list[Node]) -> str:
    """One line: the nodes and GPUs the deployment takes of what the hosts offer, and the leaf switches
    its nodes hang from. GPUs planned on hosts that have none are simulated (this machine, mock engine)."""
    simulated = not any(node.gpus for node in hosts_nodes)
    used = {node.name for node in plan.nodes}
    workers = [process for process in plan.processes if process.is_worker]
    gpus_used = sum(len(process.gpus) * len(process.nodes) for process in workers if not process.elastic)
    elastic = sum(len(process.gpus) * len(process.nodes) for process in workers if process.elastic)
    on_used = sum(node.gpus for node in plan.nodes)
    everywhere = on_used + sum(node.gpus for node in hosts_nodes if node.name not in used)
    total_nodes = max(len(hosts_nodes), len(plan.nodes))
    leaves = sorted({node.switch for node in plan.nodes if node.switch})
    under = f"under {len(leaves)} leaf switch{'es' if len(leaves) > 1 else ''} ({', '.join(leaves)})" if leaves else ""
    return (
        f"uses {len(plan.nodes)} of {total_nodes} node{'s' if total_nodes > 1 else ''} and {gpus_used} of "
        f"{'their' if len(plan.nodes) > 1 else 'its'} {on_used} GPUs"
        + (" (simulated)" if simulated else "")
        + (f" (elastic workers: up to {elastic} more, in jobs of their own)" if elastic else "")
        + (f", of {everywhere} in the hosts file" if everywhere != on_used else "")
        + (f"; {under}" if under else "; no leaf switches declared (topology.switches)")
    )
