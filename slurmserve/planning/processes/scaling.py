"""Autoscaling (`autoscale:` in a recipe): which workers are held in standby, and Dynamo's planner that
decides how many of them serve."""

from __future__ import annotations

from ...config.recipe import Recipe
from ...errors import UserError


def refuse_elastic(recipe: Recipe, backend: str) -> None:
    """`capacity: elastic` (extra Slurm jobs joining and leaving) is Slurm's alone, and not built yet."""
    if recipe.autoscale is None:
        return
    if recipe.autoscale.capacity == "reserved":
        raise UserError("autoscale.capacity: reserved is not planned yet (the recipe section is checked)")
    if backend != "slurm":
        raise UserError(
            f"autoscale.capacity: elastic submits a Slurm job per added worker, so it needs the slurm backend "
            f"(this plan is for {backend}); use reserved, which holds GPUs for every role's max"
        )
    raise UserError(
        "autoscale.capacity: elastic is not available yet (a Slurm job per added worker); use reserved, which "
        "holds the GPUs of every role's max in the deployment's own job"
    )
