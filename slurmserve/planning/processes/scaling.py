"""Autoscaling (`autoscale:` in a recipe): the workers held in standby, and Dynamo's planner (virtual mode,
load-based) that decides how many of them serve. With `capacity: reserved` the plan places every worker up to
each role's max (GPUs, ports, NICs); those beyond min are standby, started in place when scaling adds them."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from ...config.hosts import Hosts
from ...config.recipe import Recipe, WorkerGroup
from ...errors import UserError
from ..plan import PlanAutoscale, Process, RoleScale
from ..traits import BackendTraits
from .common import PlanContext, advertise_env, log_of, system_ports

# Dynamo's planner's start-up: 4-11 s of imports, then 10 s per role waiting for a perf-metrics endpoint
# (hard-coded in Dynamo 1.6.1), 35-45 s in all on a busy two-core machine.
PLANNER_READY_TIMEOUT_S = 300
# The load-based planner's thresholds, which Dynamo leaves unset (a recipe's autoscale.planner overrides them):
# a prefill worker more when any queues this many prompt tokens, one fewer when all queue at most the other;
# a decode worker more when any's KV cache is this full (per cent), one fewer when all are at most the other.
LOAD_THRESHOLDS = {
    "prefill_scale_up_queue_tokens": 2000,
    "prefill_scale_down_queue_tokens": 100,
    "decode_scale_up_kv_rate": 90,
    "decode_scale_down_kv_rate": 10,
}


def refuse_elastic(recipe: Recipe, traits: BackendTraits, hosts: Hosts) -> None:
    """`capacity: elastic` (a scheduler job per added worker) needs Slurm's, and jobs that can share a node:
    an elastic worker's job joins a node of the deployment's job."""
    if recipe.autoscale is None or recipe.autoscale.capacity != "elastic":
        return
    if not traits.has_allocation:
        raise UserError(
            f"autoscale.capacity: elastic submits a Slurm job per added worker, so it needs the slurm backend "
            f"(this plan is for {hosts.backend}); use reserved, which holds GPUs for every role's max"
        )
    if any(option.split("=")[0].split()[0] == "--exclusive" for option in hosts.slurm.extra_sbatch):
        raise UserError(
            "autoscale.capacity: elastic workers' jobs join the nodes of the deployment's job, which the hosts "
            "file's slurm.extra_sbatch --exclusive keeps to itself; use reserved, or drop --exclusive"
        )


def with_standby(recipe: Recipe, workers: list[Process]) -> list[Process]:
    """Each worker beyond its role's min marked standby; with `capacity: elastic` also elastic, its GPUs
    counted within a job of its own. An elastic worker runs on a node of the deployment's job (its address
    and ports are planned there; its GPUs are not held by that job)."""
    elastic = recipe.autoscale is not None and recipe.autoscale.capacity == "elastic"
    marked = []
    for worker in workers:
        standby = is_standby(recipe, worker.role, worker.replica or 0)
        update: dict[str, object] = {"standby": standby}
        if standby and elastic:
            update |= {"elastic": True, "gpus": list(range(len(worker.gpus)))}
        marked.append(worker.model_copy(update=update))
    job_nodes = {node for worker in marked if not worker.standby for node in worker.nodes}
    for worker in marked:
        if worker.elastic and not set(worker.nodes) <= job_nodes:
            raise UserError(
                f"autoscale.{worker.role}.max: elastic worker {worker.name} would be placed on "
                f"{', '.join(sorted(set(worker.nodes) - job_nodes))}, where no worker the deployment starts "
                "with runs; an elastic worker joins a node of the deployment's job (lower the max, or raise the min)"
            )
    return marked


def role_scales(recipe: Recipe) -> dict[str, RoleScale]:
    """Each worker role's bounds: an autoscaled role's min/max, any other's replicas as both."""
    bounds = recipe.autoscale.bounds() if recipe.autoscale else {}
    return {
        group.role: RoleScale(min=bounds[group.role].min, max=bounds[group.role].max)
        if group.role in bounds
        else RoleScale(min=group.spec.replicas, max=group.spec.replicas)
        for group in recipe.worker_groups()
    }


def reserved_groups(recipe: Recipe) -> list[WorkerGroup]:
    """The worker groups as placed: an autoscaled role with as many workers as its max."""
    if recipe.autoscale is None:
        return recipe.worker_groups()
    scales = role_scales(recipe)
    return [
        group._replace(spec=group.spec.model_copy(update={"replicas": scales[group.role].max}))
        for group in recipe.worker_groups()
    ]


def reserved_gpus_problem(recipe: Recipe, problem: UserError) -> UserError:
    """A placement that fails with every role at its max, said in terms of the bounds that set it."""
    if recipe.autoscale is None:
        return problem
    fields = "/".join(f"autoscale.{role}.max" for role in recipe.autoscale.bounds())
    return UserError(f"{fields}: capacity reserved holds GPUs for every worker up to max; {problem}")


def is_standby(recipe: Recipe, role: str, replica: int) -> bool:
    """A worker beyond its role's min: placed, but started only when scaling adds it."""
    bounds = recipe.autoscale.bounds() if recipe.autoscale else {}
    return role in bounds and replica >= bounds[role].min


def plan_autoscale(recipe: Recipe) -> PlanAutoscale | None:
    if recipe.autoscale is None:
        return None
    return PlanAutoscale(capacity=recipe.autoscale.capacity, roles=role_scales(recipe))


def planner_config(recipe: Recipe) -> dict[str, object]:
    """Dynamo's PlannerConfig for this deployment: virtual mode (slurmserve starts and stops the workers),
    load-based; its bounds derived from the roles' min/max; no listening port of its own (its dashboard
    would default to 8080 on every address, its control API to 9086)."""
    assert recipe.autoscale is not None
    return (
        {
            "environment": "virtual",
            "backend": recipe.engine,
            "optimization_target": "load",
            "model_name": recipe.model.name,
            "pre_deployment_sweeping_mode": "none",
            "control_api_port": 0,
            "live_dashboard_port": 0,
            "metric_reporting_prometheus_port": 0,
            **LOAD_THRESHOLDS,
        }
        | planner_bounds(recipe)
        | recipe.autoscale.planner
    )


def planner_bounds(recipe: Recipe) -> dict[str, object]:
    """The planner's mode and bounds from the roles' min/max. It has per-role minima but only a total GPU
    budget, so it scales only the autoscaled roles (mode decode or prefill when a disagg recipe autoscales
    one), and with both autoscaled its budget is the largest total that keeps each role within its own max
    whichever role takes it."""
    assert recipe.autoscale is not None
    scales, bounds = role_scales(recipe), recipe.autoscale.bounds()
    gpus: dict[str, int] = {group.role: group.spec.gpus for group in recipe.worker_groups()}
    if recipe.mode == "agg":
        agg = scales["agg"]  # the planner sizes agg workers as decode engines
        return {
            "mode": "agg",
            "min_endpoint": agg.min,
            "decode_engine_num_gpu": gpus["agg"],
            "max_gpu_budget": agg.max * gpus["agg"],
        }
    if len(bounds) == 1:
        ((role, scale),) = bounds.items()
        return {
            "mode": role,
            f"{role}_min_endpoint": scale.min,
            f"{role}_engine_num_gpu": gpus[role],
            "max_gpu_budget": scale.max * gpus[role],
        }
    prefill, decode = scales["prefill"], scales["decode"]
    return {
        "mode": "disagg",
        "prefill_min_endpoint": prefill.min,
        "decode_min_endpoint": decode.min,
        "prefill_engine_num_gpu": gpus["prefill"],
        "decode_engine_num_gpu": gpus["decode"],
        "max_gpu_budget": min(
            prefill.min * gpus["prefill"] + decode.max * gpus["decode"],
            prefill.max * gpus["prefill"] + decode.min * gpus["decode"],
        ),
    }


def planner_process(ctx: PlanContext, after: list[str]) -> Process:
    """Dynamo's planner on the head node, its config inline (`--config JSON`: what the node check's parser
    sees is what runs). It registers an endpoint of its own, so it gets a system and a request-plane port."""
    ports = system_ports(ctx, ctx.head)
    # Dynamo's default, ./planner_reports, is relative to wherever the planner was started (the user's folder).
    reports = {"report_output_dir": f"{ctx.run_dir}/{PurePosixPath(log_of('planner')).parent}/planner-reports"}
    config = json.dumps(planner_config(ctx.recipe) | reports, separators=(",", ":"))
    return Process(
        name="planner",
        role="planner",
        nodes=[ctx.head.name],
        ports=ports.ports,
        env=ctx.dynamo_env | advertise_env(ctx.head.address) | ports.env | {"DYN_HEALTH_CHECK_ENABLED": "true"},
        module="dynamo.planner",
        command=[ctx.dynamo_tools.python, "-m", "dynamo.planner", "--config", config],
        after=after,
        ready_url=f"http://{ctx.head.address}:{ports.ports['system']}/health",
        ready_timeout_s=PLANNER_READY_TIMEOUT_S,
        in_container=ctx.in_container,
        log=log_of("planner"),
    )
