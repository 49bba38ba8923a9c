"""Pools: each pool's local router, and Dynamo's global router in front of them, on the head node."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import NamedTuple

from ...config.recipe import PoolSpec, Recipe
from ...errors import UserError
from ..plan import FRONTEND_COMPONENT_OF_ROLE, GLOBAL_ROUTER_CONFIG, SERVED_DIR, PlanPool, Process
from ..router_grid import RouterConfig, router_config
from .common import PlanContext, advertise_env, log_of, pool_env, system_ports

# Dynamo's routers answer /health 503 ("notready") for ever unless told to start ready: they register
# no health-check payload of their own (seen with ai-dynamo 1.6.1).
ROUTER_HEALTH_ENV = {"DYN_SYSTEM_STARTING_HEALTH_STATUS": "ready"}


def router_process(ctx: PlanContext, pool: PoolSpec, workers: list[str]) -> Process:
    """A pool's local router on the head node: it serves `<pool namespace>.router.generate`, which the
    global router forwards to, over the pool's workers (`prefill` component for prefill workers)."""
    system = system_ports(ctx, ctx.head)
    component = FRONTEND_COMPONENT_OF_ROLE[pool.mode]
    address = ctx.head.address
    return Process(
        name=f"{pool.name}-router",
        role="router",
        pool=pool.name,
        nodes=[ctx.head.name],
        ports=system.ports,
        env=ctx.dynamo_env | pool_env(pool) | advertise_env(address) | system.env | ROUTER_HEALTH_ENV,
        module="dynamo.router",
        command=[
            ctx.dynamo_tools.python,
            "-m",
            "dynamo.router",
            "--endpoint",
            f"{pool.dynamo_namespace}.{component}.generate",
        ],
        after=workers,
        ready_url=f"http://{address}:{system.ports['system']}/health",
        in_container=ctx.in_container,
        log=log_of(f"{pool.name}-router"),
    )


def served_link(recipe: Recipe, model_path: str) -> str | None:
    """Where the run directory links the model folder under its served name (`served/NAME`), for the
    global router: in 1.6.1 its --model-name is both the model's path and the name it serves, so it starts
    in `served/` and is given the served name. None: the model is a hub id, served under that id."""
    if not PurePosixPath(model_path).is_absolute():
        return None
    name = recipe.model.name
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise UserError(
            f"model.served_name {name!r}: with pools it names a folder in the run directory; use a name "
            "like org/model, without empty, '.' or '..' parts"
        )
    return f"{SERVED_DIR}/{name}"


def public_model(recipe: Recipe, model_path: str) -> str:
    """The name the global router serves the model under (what clients ask for)."""
    return recipe.model.name if served_link(recipe, model_path) else model_path


def default_flag(target: str, value: float) -> list[str]:
    """ttft_target -> --default-ttft-target-ms VALUE."""
    return [f"--default-{target.removesuffix('_target')}-target-ms", f"{value:g}"]


def global_router_process(ctx: PlanContext, routing: RouterConfig, model_path: str, routers: list[str]) -> Process:
    """Dynamo's global router on the head node: it picks a pool per request (its config in the run
    directory) and serves the public model in its own namespace, which the frontend is scoped to."""
    assert ctx.recipe.global_router is not None
    namespace = ctx.recipe.global_router.namespace
    system = system_ports(ctx, ctx.head)
    in_served = ["env", "-C", f"{ctx.run_dir}/{SERVED_DIR}"] if served_link(ctx.recipe, model_path) else []
    defaults = [word for target, value in routing.default_targets.items() for word in default_flag(target, value)]
    address = ctx.head.address
    return Process(
        name="global-router",
        role="global_router",
        nodes=[ctx.head.name],
        ports=system.ports,
        env=ctx.dynamo_env | {"DYN_NAMESPACE": namespace} | advertise_env(address) | system.env | ROUTER_HEALTH_ENV,
        module="dynamo.global_router",
        command=[
            *in_served,
            ctx.dynamo_tools.python,
            "-m",
            "dynamo.global_router",
            "--config",
            f"{ctx.run_dir}/{GLOBAL_ROUTER_CONFIG}",
            "--model-name",
            public_model(ctx.recipe, model_path),
            "--namespace",
            namespace,
            *defaults,
        ],
        after=routers,
        ready_url=f"http://{address}:{system.ports['system']}/health",
        in_container=ctx.in_container,
        log=log_of("global-router"),
    )


def held_stream_warning(routing: RouterConfig) -> list[str]:
    """Dynamo 1.6.1 holds the first tokens of a stream through its global router (docs/pools.md): said
    where a pool meant for interactive traffic sits behind it."""
    pools = routing.interactive_pools
    if not pools:
        return []
    named = f"pool {pools[0]} takes" if len(pools) == 1 else f"pools {', '.join(pools)} take"
    return [
        f"{named} the requests with the tightest TTFT/ITL targets, but behind Dynamo 1.6.1's global router a "
        "stream's first tokens wait up to 40 ms in the frontend: its HTTP connections have no TCP_NODELAY, so "
        "the tokens that trickle in through the routers wait for the client's delayed ACK; serve traffic where "
        "those milliseconds matter from a deployment without pools (docs/pools.md, 'Streaming through the "
        "global router')"
    ]


class Pools(NamedTuple):
    """What pools add to a plan: their routers and the global router, and how it routes."""

    processes: list[Process]  # each pool's local router, then the global router
    routing: RouterConfig
    pools: list[PlanPool]
    served_link: str | None
    public_model: str

    @property
    def global_router(self) -> Process:
        return self.processes[-1]


def pool_processes(ctx: PlanContext, workers: list[Process], model_path: str) -> Pools:
    """Each pool's local router, then the global router (with its config): after the workers, before
    the frontend."""
    routing = router_config(ctx.recipe)
    routers = [
        router_process(ctx, pool, [worker.name for worker in workers if worker.pool == pool.name])
        for pool in ctx.recipe.pools
    ]
    global_router = global_router_process(ctx, routing, model_path, [router.name for router in routers])
    return Pools(
        processes=[*routers, global_router],
        routing=routing,
        pools=pools_of(ctx.recipe, workers, routing),
        served_link=served_link(ctx.recipe, model_path),
        public_model=public_model(ctx.recipe, model_path),
    )


def pools_of(recipe: Recipe, workers: list[Process], routing: RouterConfig) -> list[PlanPool]:
    return [
        PlanPool(
            name=pool.name,
            mode=pool.mode,
            namespace=pool.dynamo_namespace,
            workers=[worker.name for worker in workers if worker.pool == pool.name],
            router=f"{pool.name}-router",
            canary_targets=routing.canary_targets.get(pool.name),
        )
        for pool in recipe.pools
    ]
