"""Dynamo's frontend on the head node: the deployment's HTTP endpoint."""

from __future__ import annotations

from ...config.recipe import FrontendSpec
from ..plan import Process
from .common import PlanContext, advertise_env, log_of, plane_flags


def kv_block_size_flag(frontend: FrontendSpec) -> list[str]:
    """The KV router hashes prompts in blocks of the workers' size (load_recipe settles it: config.kv_routing)."""
    size = frontend.kv_cache_block_size
    return ["--kv-cache-block-size", str(size)] if frontend.router_mode == "kv" and size else []


def frontend_process(ctx: PlanContext, http_port: int, after: list[str]) -> Process:
    address, response_port = ctx.head.address, ctx.ports.take(ctx.head.name)
    return Process(
        name="frontend",
        role="frontend",
        nodes=[ctx.head.name],
        ports={"http": http_port, "response_stream": response_port},
        env=ctx.dynamo_env | advertise_env(address) | {"DYN_TCP_RESPONSE_STREAM_PORT": str(response_port)},
        module="dynamo.frontend",
        command=[
            ctx.dynamo_tools.python,
            "-m",
            "dynamo.frontend",
            "--http-host",
            address,
            "--http-port",
            str(http_port),
            "--router-mode",
            ctx.recipe.frontend.router_mode,
            *kv_block_size_flag(ctx.recipe.frontend),
            *plane_flags(ctx.recipe),
            # Scoped to the global router's namespace: it sees the public model there, never a pool's.
            *(["--namespace", ctx.recipe.global_router.namespace] if ctx.recipe.global_router else []),
            *ctx.recipe.frontend.extra_args,
        ],
        after=after,
        ready_url=f"http://{address}:{http_port}/health",
        in_container=ctx.in_container,
        log=log_of("frontend"),
    )
