"""What KV-aware routing (`frontend.router_mode: kv`) needs from the workers, settled when the recipe loads.

Dynamo's KV router hashes each prompt into blocks of the frontend's `--kv-cache-block-size` tokens and
matches them against the blocks the workers' KV events announce: the two block sizes must be one, or no
block ever matches. TensorRT-LLM announces only blocks it keeps for reuse: with
`kv_cache_config.enable_block_reuse: false` it announces none, and KV routing quietly falls back to load
balancing (Dynamo only logs a warning on the worker), so such a recipe is refused before anything starts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..errors import UserError
from .files import read_yaml_mapping

if TYPE_CHECKING:  # load_recipe settles KV routing: the recipe module imports this one
    from .recipe import Recipe, WorkerGroup

TRTLLM_TOKENS_PER_BLOCK = 32  # TensorRT-LLM's kv_cache_config.tokens_per_block when the engine YAML is silent
# The mock engine's --block-size when none is given, for the engine it simulates by default (vLLM):
# dynamo/mocker/args.py, and the frontend's dynamo_frontend_model_kv_cache_block_size reads 64.
MOCKER_BLOCK_SIZE = 64


class BlockSize(NamedTuple):
    tokens: int
    source: str  # where the figure comes from, for an error: "FILE: kv_cache_config.tokens_per_block"


def kv_cache_config(group: WorkerGroup) -> tuple[str, dict[str, object]]:
    """The worker group's engine YAML (its path) and its kv_cache_config section ({} without either)."""
    path = group.spec.engine_config
    if path is None:
        return "", {}
    section = read_yaml_mapping(Path(path)).get("kv_cache_config") or {}
    return path, section if isinstance(section, dict) else {}


def trtllm_block_size(recipe: Recipe, group: WorkerGroup) -> BlockSize:
    path, section = kv_cache_config(group)
    tokens = section.get("tokens_per_block")
    if isinstance(tokens, int):
        return BlockSize(tokens, f"{path}: kv_cache_config.tokens_per_block")
    return BlockSize(TRTLLM_TOKENS_PER_BLOCK, "TensorRT-LLM's default kv_cache_config.tokens_per_block")


def mocker_block_size(recipe: Recipe, group: WorkerGroup) -> BlockSize:
    given = recipe.mocker_of(group.pool).block_size
    if given is not None:
        return BlockSize(given, f"{'pools.' + group.pool.name + '.' if group.pool else ''}mocker.block_size")
    return BlockSize(MOCKER_BLOCK_SIZE, "the mock engine's default --block-size")


# Each engine's KV block size for a worker group. vLLM's is its `--block-size` engine flag, read off the
# group's args as `group.spec.args.get("block_size")`, with vLLM's default when the recipe leaves it out.
BLOCK_SIZE_OF: dict[str, Callable[[Recipe, WorkerGroup], BlockSize]] = {
    "trtllm": trtllm_block_size,
    "mocker": mocker_block_size,
}


def refuse_disabled_block_reuse(group: WorkerGroup, recipe_file: Path) -> None:
    path, section = kv_cache_config(group)
    if section.get("enable_block_reuse") is False:
        raise UserError(
            f"{recipe_file}: frontend.router_mode kv: {group.field}.engine_config {path} sets "
            "kv_cache_config.enable_block_reuse: false, so TensorRT-LLM announces no reusable KV blocks and "
            "KV routing would fall back to load balancing; set enable_block_reuse: true in that file (true is "
            "TensorRT-LLM's default), or use frontend.router_mode round-robin"
        )


def settle_kv_routing(recipe: Recipe, recipe_file: Path) -> None:
    """For router_mode kv: refuse what defeats KV routing, and set the frontend's KV block size to the
    workers' (all of them must agree, and a block size the recipe gives the frontend must be theirs)."""
    if recipe.frontend.router_mode != "kv":
        return
    groups = recipe.worker_groups()
    if recipe.engine == "trtllm":
        for group in groups:
            refuse_disabled_block_reuse(group, recipe_file)
    sizes = [(group, BLOCK_SIZE_OF[recipe.engine](recipe, group)) for group in groups]
    first_group, first = sizes[0]
    for group, size in sizes[1:]:
        if size.tokens != first.tokens:
            raise UserError(
                f"{recipe_file}: frontend.router_mode kv needs one KV block size for every worker, but "
                f"{first_group.field} has {first.tokens} tokens ({first.source}) and {group.field} has "
                f"{size.tokens} ({size.source})"
            )
    given = recipe.frontend.kv_cache_block_size
    if given is not None and given != first.tokens:
        raise UserError(
            f"{recipe_file}: frontend.kv_cache_block_size is {given} tokens but {first_group.field}'s KV block "
            f"size is {first.tokens} ({first.source}): the KV router would hash prompts into blocks the workers "
            f"never announce; set frontend.kv_cache_block_size to {first.tokens}, or leave it out"
        )
    recipe.frontend.kv_cache_block_size = first.tokens
