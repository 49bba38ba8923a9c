"""The planner: (recipe, hosts, backend traits, run identity) -> Plan. Pure and deterministic: no I/O, no
clock. Each kind of process is made by its own module (processes/), in the order the deployment starts."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from typing import Literal, NamedTuple

from ..config.hosts import ControlPlaneSpec, Hosts, Node, concrete_nodes
from ..config.recipe import Recipe, WorkerGroup
from ..errors import UserError
from .chain import plan_chain
from .placement import Placement, place_workers
from .plan import Plan, PlanNode, Process
from .ports import PortAllocator, default_port_block
from .processes.common import PlanContext
from .processes.control_plane import ControlPlane, choose_discovery, control_plane, dynamo_env
from .processes.frontend import frontend_process
from .processes.model import ModelLocation, container_for, download_warning, model_location, model_stage
from .processes.monitoring import prometheus_process
from .processes.routers import Pools, held_stream_warning, pool_processes
from .processes.scaling import (
    plan_autoscale,
    planner_process,
    refuse_elastic,
    reserved_gpus_problem,
    reserved_groups,
    role_scales,
    with_standby,
)
from .processes.workers import engine_files, worker_process
from .topology import nic_fallbacks
from .traits import BackendTraits

# GPUs simulated on a machine without any, at the least: as many as a real node has, so that an 8-GPU
# recipe rehearsed on the mock engine gets the GPU indices and ports it would get there.
SIMULATED_GPUS_AT_LEAST = 8


class Layout(NamedTuple):
    """Where the workers go: every node of the hosts file, and those the deployment uses."""

    groups: dict[str, WorkerGroup]  # by the recipe field that defines them
    placements: list[Placement]
    nodes: list[Node]
    used_nodes: list[Node]
    simulated_gpus: int = 0  # this machine has no GPUs: the mock engine's workers are placed on as many

    @property
    def head(self) -> Node:
        """The control plane and the frontend live on the first node of the deployment."""
        return self.used_nodes[0]


def lay_out(recipe: Recipe, hosts: Hosts, traits: BackendTraits) -> Layout:
    nodes = concrete_nodes(hosts)
    simulated = simulated_gpus(recipe, nodes, traits)
    if simulated:
        nodes = [replace(node, gpus=simulated) for node in nodes]
    groups = {group.field: group for group in reserved_groups(recipe)}
    try:
        placements = place_workers([(field, group.spec) for field, group in groups.items()], nodes)
    except UserError as problem:
        raise reserved_gpus_problem(recipe, problem) from None
    used = sorted({index for placement in placements for index in placement.nodes})
    return Layout(groups, placements, nodes, [nodes[index] for index in used], simulated)


def simulated_gpus(recipe: Recipe, nodes: list[Node], traits: BackendTraits) -> int:
    """How many GPUs to simulate on this machine when it has none (0: no simulation): enough for every
    worker, each fitting evenly (a multiple of each worker's GPUs). The mock engine runs on them; a real
    engine's plan is only shown (its submit is refused: the node preflight finds no GPU)."""
    if not traits.runs_on_this_machine or any(node.gpus for node in nodes):
        return 0
    groups = reserved_groups(recipe)
    step = math.lcm(*(group.spec.gpus for group in groups))
    needed = max(SIMULATED_GPUS_AT_LEAST, sum(group.spec.replicas * group.spec.gpus for group in groups))
    return step * math.ceil(needed / step)


def make_plan(
    recipe: Recipe,
    hosts: Hosts,
    traits: BackendTraits,
    *,
    run_name: str,
    run_dir: str,
    python: str,
    port_block: int | None = None,
    kv_preflight: bool | None = None,
    binaries: ControlPlaneSpec | None = None,
) -> Plan:
    """The plan of a deployment, its processes made in the order it starts them. binaries: the etcd and
    nats-server to run (default: the hosts file's, else found on the nodes' PATH); kv_preflight: see `plan_of`."""
    refuse_elastic(recipe, traits, hosts)
    layout, model = lay_out(recipe, hosts, traits), model_location(recipe, hosts)
    block = default_port_block(run_name) if port_block is None else port_block
    ctx = PlanContext(
        recipe=recipe,
        traits=traits,
        run_name=run_name,
        run_dir=run_dir,
        python=python,
        head=layout.head,
        ports=PortAllocator(block, {recipe.frontend.http_port} if recipe.frontend.http_port else set()),
        binaries=binaries or hosts.control_plane,
        container=container_for(hosts, recipe, traits, run_dir, model.path),
    )
    discovery = choose_discovery(recipe, traits, layout.used_nodes)
    control = control_plane(ctx, discovery)
    ctx = replace(ctx, dynamo_env=dynamo_env(recipe, control))
    # Beside the control plane, gating nothing: a Prometheus that fails to start costs no deployment.
    watchers = [prometheus_process(ctx)] if recipe.observability.prometheus else []
    workers = [
        worker_process(ctx, layout.groups[placement.role], placement, layout.nodes, model, control.names)
        for placement in layout.placements
    ]
    workers = with_standby(recipe, workers)
    pools = pool_processes(ctx, workers, model.path) if recipe.pools else None
    http_port = recipe.frontend.http_port or ctx.ports.take(layout.head.name)
    started = [w.name for w in workers if not w.standby]
    frontend = frontend_process(ctx, http_port, [pools.global_router.name] if pools else started)
    # The planner last: it decides from the serving workers' forward-pass metrics.
    planner = [planner_process(ctx, [*started, frontend.name])] if recipe.autoscale else []
    processes = [*control.processes, *watchers, *workers, *(pools.processes if pools else []), frontend, *planner]
    check_unique_names(processes)
    made = Planned(layout, model, discovery, control, pools, http_port, processes)
    return plan_of(ctx, hosts, made, port_block=block, kv_preflight=kv_preflight)


class Planned(NamedTuple):
    """What the planner made, in the order the deployment starts it."""

    layout: Layout
    model: ModelLocation
    discovery: Literal["etcd", "file"]
    control: ControlPlane
    pools: Pools | None
    http_port: int
    processes: list[Process]


def plan_of(ctx: PlanContext, hosts: Hosts, made: Planned, *, port_block: int, kv_preflight: bool | None) -> Plan:
    """The plan of what was made. kv_preflight None: on for real engines (a bad KV path costs a model load),
    off for the mock one."""
    recipe, pools, head = ctx.recipe, made.pools, made.layout.head
    return Plan(
        recipe=recipe.name,
        backend=hosts.backend,
        run_name=ctx.run_name,
        run_dir=ctx.run_dir,
        engine=recipe.engine,
        mode=recipe.mode,
        model=pools.public_model if pools else recipe.model.name,  # with pools, what the global router serves
        model_path=made.model.path,
        discovery=made.discovery,
        etcd_endpoint=made.control.discovery_env.get("ETCD_ENDPOINTS"),
        endpoint=f"http://{head.address}:{made.http_port}",
        port_block=port_block,
        python=ctx.python,
        nodes=[plan_node(node, ctx.traits) for node in made.layout.used_nodes],
        processes=made.processes,
        # With pools the frontend routes to the global router only.
        workers_expected={"global_router": 1}
        if pools
        else {role: scale.min for role, scale in role_scales(recipe).items()},
        autoscale=plan_autoscale(recipe),
        chain=plan_chain(recipe, hosts, ctx.traits, [p for p in made.processes if p.is_worker]),
        pools=pools.pools if pools else [],
        global_router_config=pools.routing.config if pools else None,
        served_link=pools.served_link if pools else None,
        engine_files=engine_files(ctx),
        model_stage=model_stage(recipe, hosts),
        kv_preflight=recipe.needs_gpus if kv_preflight is None else kv_preflight,
        restart=recipe.restart,
        scrape_interval_s=recipe.observability.scrape_interval_s,
        slurm=hosts.slurm if ctx.traits.has_allocation else None,
        container=ctx.container,
        warnings=ignored_settings_warning(recipe)
        + simulated_gpus_warning(recipe, made.layout)
        + nic_fallback_warnings(made.layout)
        + download_warning(recipe, hosts, len({node for p in made.layout.placements for node in p.nodes}))
        + (held_stream_warning(pools.routing) if pools else []),
    )


def plan_node(node: Node, traits: BackendTraits) -> PlanNode:
    """A node as the plan names it; how to reach it over SSH only where the backend does."""
    ssh = node.ssh if traits.reaches_nodes_over_ssh else None
    return PlanNode(
        name=node.name, address=node.address, gpus=node.gpus, switch=node.switch, interface=node.interface, ssh=ssh
    )


def check_unique_names(processes: list[Process]) -> None:
    """Each process has a name of its own: the launch script, PID records and logs know them by name, so of
    two with one name only one would start. A pool's name makes its processes' names (a pool `global` has
    a router `global-router`, Dynamo's global router's name)."""
    # Counted once: a plan may hold thousands of processes.
    twice = sorted(name for name, count in Counter(process.name for process in processes).items() if count > 1)
    if twice:
        # Only a pool's processes take a name from the recipe; every other process's name is fixed.
        pool = next(process.pool for process in processes if process.name == twice[0] and process.pool)
        raise UserError(
            f"pools.{pool}.name: pool {pool} makes a process named {twice[0]}, the name of another process of "
            "the deployment; give the pool another name"
        )


def nic_fallback_warnings(layout: Layout) -> list[str]:
    """The worker GPUs whose own HCAs are down (each once, in placement order)."""
    said = [
        line
        for placement in layout.placements
        for index in placement.nodes
        for line in nic_fallbacks(layout.nodes[index], list(placement.gpus))
    ]
    return list(dict.fromkeys(said))


def simulated_gpus_warning(recipe: Recipe, layout: Layout) -> list[str]:
    count = layout.simulated_gpus
    if not count:
        return []
    if recipe.needs_gpus:
        return [
            f"this machine has no GPUs: the workers are placed on {count} simulated GPUs to show the plan, but "
            f"engine {recipe.engine} needs real ones, so submit refuses it here; rehearse it on the mock engine, "
            "which needs none: --set engine=mocker"
        ]
    return [
        f"this machine has no GPUs: the mock engine needs none, so its workers are placed on {count} simulated "
        f"GPUs (GPU indices as on a node of {count}; nothing runs on a GPU)"
    ]


def ignored_settings_warning(recipe: Recipe) -> list[str]:
    ignored = recipe.ignored_settings()
    if not ignored:
        return []
    why = "the mock engine takes no engine settings" if recipe.engine == "mocker" else "they are the mock engine's"
    return [f"engine {recipe.engine} ignores {', '.join(ignored)} ({why}; placement, ports and env are as planned)"]
