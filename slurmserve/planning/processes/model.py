"""The model the workers load: where they find it, what to stage before them, and the container that
must see it."""

from __future__ import annotations

import re
from typing import NamedTuple

from ...config.hosts import Hosts
from ...config.recipe import Recipe
from ...errors import UserError
from ...resources import builtin_model_dir
from ..plan import Container, ModelStage
from ..traits import BackendTraits

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
RECIPE_IMAGE = "recipe"  # slurm.container_image: the recipe's own image


class ModelLocation(NamedTuple):
    path: str  # the --model-path a worker gets
    env: dict[str, str]  # the env it needs to read it


def pinned(revision: str | None) -> bool:
    return revision is not None and COMMIT_SHA.fullmatch(revision) is not None


def model_location(recipe: Recipe, hosts: Hosts) -> ModelLocation:
    """The --model-path a worker gets, and the env it needs to read it."""
    model = recipe.model
    if not recipe.loads_recipe_model:
        return ModelLocation(recipe.mocker.model_path or str(builtin_model_dir("tiny-mock")), {})
    if model.repo.startswith("builtin:"):
        return ModelLocation(str(builtin_model_dir(model.repo.removeprefix("builtin:"))), {})
    if not model.on_hub or hosts.model_cache is None:
        return ModelLocation(model.repo, {})
    env = {"HF_HOME": hosts.model_cache}
    if not pinned(model.revision):  # submit pins it first; a bare plan shows what workers would fetch
        return ModelLocation(model.repo, env)
    # A pinned snapshot on the shared filesystem, staged before the workers: every rank reads it, none downloads.
    snapshot = f"{hosts.model_cache}/hub/models--{model.repo.replace('/', '--')}/snapshots/{model.revision}"
    return ModelLocation(snapshot, env | {"HF_HUB_OFFLINE": "1"})


def download_warning(recipe: Recipe, hosts: Hosts, worker_nodes: int) -> list[str]:
    """A hub model without a shared cache is fetched by every node's workers on their own, as they start."""
    model = recipe.model
    if not (recipe.loads_recipe_model and model.on_hub) or hosts.model_cache is not None:
        return []
    who = f"each of the deployment's {worker_nodes} nodes downloads it" if worker_nodes > 1 else "its node downloads it"
    return [
        f"model_cache: the hosts file names no shared model cache, so {who} "
        f"from the hub ({model.repo}) as its workers start; set model_cache: to a folder on a shared filesystem "
        "to stage it once, before the workers"
    ]


def model_stage(recipe: Recipe, hosts: Hosts) -> ModelStage | None:
    """What to stage on the shared filesystem before the workers start, if anything."""
    model = recipe.model
    if not (recipe.loads_recipe_model and model.on_hub and hosts.model_cache and pinned(model.revision)):
        return None
    return ModelStage(
        repo=model.repo, revision=model.revision, allow=model.allow, ignore=model.ignore, cache=hosts.model_cache
    )


def container_image(hosts: Hosts, recipe: Recipe) -> str | None:
    """The Pyxis image: the hosts file's, or with `container_image: recipe` the one the recipe names (an
    imported manifest's)."""
    image = hosts.slurm.container_image
    if image != RECIPE_IMAGE:
        return image
    if recipe.container_image is None:
        raise UserError(
            f"slurm.container_image: {RECIPE_IMAGE} runs the recipe's own image, but recipe {recipe.name} names no "
            "container_image; name an image in the hosts file or the recipe"
        )
    return recipe.container_image


def container_for(
    hosts: Hosts, recipe: Recipe, traits: BackendTraits, run_dir: str, model_path: str
) -> Container | None:
    """The hosts file's container, for the steps of a scheduler's job; it sees the run directory, the model
    cache (or the model's own folder) and the hosts file's mounts, each at its own path."""
    slurm = hosts.slurm
    image = container_image(hosts, recipe)
    if not traits.has_allocation or not (image or slurm.container_bundle):
        return None
    shared = [run_dir, hosts.model_cache or (model_path if model_path.startswith("/") else None)]
    mounts = [f"{path}:{path}" for path in shared if path] + slurm.container_mounts
    tools = slurm.container_tools
    return Container(
        kind="pyxis" if image else "oci",
        source=image or slurm.container_bundle or "",
        mounts=mounts,
        python=tools.python,
        llmapi_launch=tools.llmapi_launch,
        ucx_perftest=tools.ucx_perftest,
    )
