"""A deployment served as a chain of Slurm jobs (`lifetime:`): how long each job runs, how early each successor
is ready before its predecessor ends (the handover), how many jobs cover the lifetime, and where the gateway
runs. A pure function of the recipe, the hosts file and the planned workers."""

from __future__ import annotations

import math

from ..config.hosts import Hosts, concrete_nodes
from ..config.lifetime import duration_s, shown, slurm_time_s
from ..config.recipe import Recipe
from ..errors import UserError, did_you_mean
from .plan import PlanChain, Process
from .traits import BackendTraits

# Beyond the slowest worker's start bound, the default handover leaves this for the successor's own canary and
# the gateway's switch.
HANDOVER_MARGIN_S = 60


def plan_chain(recipe: Recipe, hosts: Hosts, traits: BackendTraits, workers: list[Process]) -> PlanChain | None:
    """The chain of a recipe with a lifetime (None without one); exit 2 naming the field for what cannot be."""
    lifetime = recipe.lifetime
    if lifetime is None:
        return None
    if not traits.has_allocation:
        raise UserError(
            f"lifetime: a chain of Slurm jobs needs the slurm backend (this plan is for {hosts.backend}); "
            "leave lifetime (or --lifetime) out to serve until cancel"
        )
    job_s = duration_s(lifetime.job) if lifetime.job else slurm_time_s(hosts.slurm.time)
    if job_s is None:
        raise UserError(f"lifetime.job: slurm.time is {hosts.slurm.time}; say how long each job of the chain runs")
    slowest = max((worker.ready_timeout_s for worker in workers), default=0)
    handover_s = duration_s(lifetime.handover) if lifetime.handover else slowest + HANDOVER_MARGIN_S
    field = "lifetime.handover" if lifetime.handover else "lifetime.job"
    if handover_s >= job_s:
        raise UserError(
            f"{field}: a handover of {shown(handover_s)} is not shorter than a job ({shown(job_s)}); each job must "
            "serve alone for a while (the default handover is the workers' start bound and a minute)"
        )
    total_s = duration_s(lifetime.total)
    if total_s < job_s:
        raise UserError(f"lifetime.total: {shown(total_s)} is shorter than one job ({shown(job_s)}); no chain needed")
    return PlanChain(
        total_s=total_s,
        job_s=job_s,
        handover_s=handover_s,
        jobs=max(1, math.ceil((total_s - handover_s) / (job_s - handover_s))),
        gateway_host=gateway_host(lifetime.gateway.host, hosts),
    )


def gateway_host(host: str | None, hosts: Hosts) -> str | None:
    names = [node.name for node in concrete_nodes(hosts)]
    if host is not None and host not in names:
        raise UserError(f"lifetime.gateway.host: no host {host!r} in the hosts file{did_you_mean(host, names)}")
    return host
