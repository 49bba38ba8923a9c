"""A recipe's `autoscale:` as a DynamoGraphDeployment's planner service, and back.

Exported, the planner runs as on Kubernetes: `python3 -m dynamo.planner --config FILE`, environment kubernetes
(the operator scales the graph's services), its PlannerConfig derived from the roles' min/max as slurmserve
derives it for its own runs, in the ConfigMap beside the workers' engine YAMLs. A PlannerConfig has per-role
minima but one GPU budget and no per-role maximum, so the bounds themselves go beside it (BOUNDS_FILE): an import
of the export gives back the same recipe. Imported without that file, each role's max is what the budget allows.
"""

from __future__ import annotations

import json
from typing import Any

from ..config.autoscale import ONLY_LOAD, PLANNER_BOUNDS, PLANNER_DERIVED, SLA_REFUSAL
from ..config.recipe import Recipe
from ..errors import UserError
from ..planning.processes.scaling import planner_config

PLANNER_MODULE = "dynamo.planner"
PLANNER_FILE = "planner.json"
BOUNDS_FILE = "autoscale.json"  # slurmserve's per-role min/max, which no PlannerConfig field holds
DEFAULT_GPU_BUDGET = 8  # Dynamo 1.6.1's max_gpu_budget when a config leaves it out
# A PlannerConfig's mode -> the roles it scales.
SCALED_ROLES = {"disagg": ("prefill", "decode"), "prefill": ("prefill",), "decode": ("decode",), "agg": ("agg",)}


def exported_planner(recipe: Recipe) -> dict[str, str]:
    """The ConfigMap entries of the recipe's planner: its PlannerConfig and the bounds it came from."""
    assert recipe.autoscale is not None
    config = planner_config(recipe) | {"environment": "kubernetes"}
    bounds = {"capacity": recipe.autoscale.capacity} | {
        role: bound.model_dump() for role, bound in recipe.autoscale.bounds().items()
    }
    return {PLANNER_FILE: json.dumps(config, indent=2) + "\n", BOUNDS_FILE: json.dumps(bounds, indent=2) + "\n"}


def read_json(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise UserError(f"{where} is not JSON ({error})") from None
    if not isinstance(value, dict):
        raise UserError(f"{where} is no JSON object")
    return value


def budget_bounds(config: dict[str, Any], role_gpus: dict[str, int], where: str) -> dict[str, Any]:
    """Each scaled role's min (its minimum endpoints) and max (as many workers as the GPU budget leaves it
    when every other role runs its minimum)."""
    roles = SCALED_ROLES.get(str(config.get("mode", "disagg")))
    if roles is None or any(role not in role_gpus for role in roles):
        raise UserError(f"{where}: mode {config.get('mode')!r} scales no worker role of this graph")
    least = {role: config.get(f"{role}_min_endpoint") or config.get("min_endpoint") or 1 for role in role_gpus}
    budget = config.get("max_gpu_budget", DEFAULT_GPU_BUDGET)
    bounds = {}
    for role in roles:
        others = sum(least[other] * role_gpus[other] for other in role_gpus if other != role)
        bounds[role] = {"min": least[role], "max": max(least[role], (budget - others) // role_gpus[role])}
    return bounds


def recipe_autoscale(
    config_text: str, bounds_text: str | None, role_gpus: dict[str, int], where: str
) -> dict[str, Any]:
    """A planner's PlannerConfig (and slurmserve's bounds file, if the export wrote one) as `autoscale:`."""
    config = read_json(config_text, where)
    target = config.get("optimization_target", "load")
    if target != "load":
        raise UserError(
            f"{where}: {SLA_REFUSAL if target == 'sla' else f'optimization_target {target!r}: {ONLY_LOAD}'}"
        )
    bounds = (
        read_json(bounds_text, f"{where} ({BOUNDS_FILE})") if bounds_text else budget_bounds(config, role_gpus, where)
    )
    options = {key: value for key, value in config.items() if key not in (*PLANNER_BOUNDS, *PLANNER_DERIVED)}
    return {"capacity": bounds.pop("capacity", "reserved"), **bounds, "planner": options}
