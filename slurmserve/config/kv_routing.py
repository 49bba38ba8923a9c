"""What KV-aware routing (`frontend.router_mode: kv`) needs from the workers, settled when the recipe loads
(config.recipe.settle_kv_routing puts these together).

Dynamo's KV router hashes each prompt into blocks of the frontend's `--kv-cache-block-size` tokens and
matches them against the blocks the workers' KV events announce: the two block sizes must be one, or no
block ever matches. TensorRT-LLM announces only blocks it keeps for reuse: with
`kv_cache_config.enable_block_reuse: false` it announces none, and KV routing quietly falls back to load
balancing (Dynamo only logs a warning on the worker), so such a recipe is refused before anything starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from ..errors import UserError
from .files import read_yaml_mapping

TRTLLM_TOKENS_PER_BLOCK = 32  # TensorRT-LLM's kv_cache_config.tokens_per_block when the engine YAML is silent
# The mock engine's --block-size when none is given, for the engine it simulates by default (vLLM):
# dynamo/mocker/args.py, and the frontend's dynamo_frontend_model_kv_cache_block_size reads 64.
MOCKER_BLOCK_SIZE = 64
# vLLM 0.31 leaves its block size to the attention backend it picks at start-up (CacheConfig.block_size
# None), which the frontend cannot know: under KV routing slurmserve gives vLLM workers this one (vLLM's
# CacheConfig.DEFAULT_BLOCK_SIZE) unless the recipe's args give another.
VLLM_BLOCK_SIZE = 16


class BlockSize(NamedTuple):
    tokens: int
    source: str  # where the figure comes from, for an error: "FILE: kv_cache_config.tokens_per_block"


def kv_cache_config(engine_config: str | None) -> dict[str, object]:
    """The engine YAML's kv_cache_config section ({} without either)."""
    section = read_yaml_mapping(Path(engine_config)).get("kv_cache_config") if engine_config else None
    return section if isinstance(section, dict) else {}


def trtllm_block_size(engine_config: str | None) -> BlockSize:
    tokens = kv_cache_config(engine_config).get("tokens_per_block")
    if isinstance(tokens, int):
        return BlockSize(tokens, f"{engine_config}: kv_cache_config.tokens_per_block")
    return BlockSize(TRTLLM_TOKENS_PER_BLOCK, "TensorRT-LLM's default kv_cache_config.tokens_per_block")


def mocker_block_size(given: int | None, field: str) -> BlockSize:
    """`field`: where the recipe gives it (mocker.block_size, or a pool's)."""
    if given is not None:
        return BlockSize(given, field)
    return BlockSize(MOCKER_BLOCK_SIZE, "the mock engine's default --block-size")


def vllm_block_size(args: Mapping[str, object], field: str) -> BlockSize:
    """`field`: where the recipe's args would give it (a worker group's args.block_size)."""
    given = args.get("block_size")
    if isinstance(given, str) and given.isdigit():  # `--set ...args.block_size=64` and YAML "64" alike
        given = int(given)
    if isinstance(given, int) and not isinstance(given, bool):
        return BlockSize(given, field)
    return BlockSize(
        VLLM_BLOCK_SIZE, f"the --block-size slurmserve gives vLLM workers under KV routing ({field} unset)"
    )


def refuse_disabled_block_reuse(engine_config: str | None, field: str, recipe_file: Path) -> None:
    if kv_cache_config(engine_config).get("enable_block_reuse") is False:
        raise UserError(
            f"{recipe_file}: frontend.router_mode kv: {field} {engine_config} sets "
            "kv_cache_config.enable_block_reuse: false, so TensorRT-LLM announces no reusable KV blocks and "
            "KV routing would fall back to load balancing; set enable_block_reuse: true in that file (true is "
            "TensorRT-LLM's default), or use frontend.router_mode round-robin"
        )


def agreed_block_size(sizes: list[tuple[str, BlockSize]], frontend: int | None, recipe_file: Path) -> int:
    """The one KV block size of the workers (`sizes`: each worker group's field and block size), which a
    block size the recipe gives the frontend must equal."""
    first_field, first = sizes[0]
    for field, size in sizes[1:]:
        if size.tokens != first.tokens:
            raise UserError(
                f"{recipe_file}: frontend.router_mode kv needs one KV block size for every worker, but "
                f"{first_field} has {first.tokens} tokens ({first.source}) and {field} has "
                f"{size.tokens} ({size.source})"
            )
    if frontend is not None and frontend != first.tokens:
        raise UserError(
            f"{recipe_file}: frontend.kv_cache_block_size is {frontend} tokens but {first_field}'s KV block "
            f"size is {first.tokens} ({first.source}): the KV router would hash prompts into blocks the workers "
            f"never announce; set frontend.kv_cache_block_size to {first.tokens}, or leave it out"
        )
    return first.tokens
