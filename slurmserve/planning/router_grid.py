"""Dynamo's global router configuration from a recipe's `pools:` and `global_router:`: its selection grid
as the recipe writes it (checked: ranges ordered, the mapping's shape matches the resolutions, every
pool index exists), or compiled from the short form (tiers).

A grid dimension splits [min, max) into `resolution` equal buckets; a request's value picks bucket
`clamp(int((value - min) / step), 0, resolution - 1)`, and the mapping, indexed by the buckets of every
dimension in order, names the pool (its index among the pools of that kind). A request without a target
is put at Dynamo's `--default-*-target-ms`, else the middle of the range.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from ..config.fields import MAX_MILLISECONDS, MAX_TOKENS
from ..config.recipe import GlobalRouterSpec, PoolSpec, Recipe, TierSpec
from ..errors import UserError

MAX_RESOLUTION = 1000  # buckets per dimension: the short form's limits need a common divisor
SPAN_WITHOUT_LIMITS = 1000  # a dimension no tier limits: one bucket


@dataclass(frozen=True)
class Dimension:
    tier_field: str  # TierSpec's limit on it
    min_key: str
    max_key: str
    resolution_key: str
    target: str | None  # the request's SLA target it reads (nvext.router), None: a length of the request


ISL = Dimension("isl_tokens", "isl_min", "isl_max", "isl_resolution", None)
TTFT = Dimension("ttft_ms", "ttft_min_ms", "ttft_max_ms", "ttft_resolution", "ttft_target")
ITL = Dimension("itl_ms", "itl_min_ms", "itl_max_ms", "itl_resolution", "itl_target")
CONTEXT = Dimension("context_tokens", "context_length_min", "context_length_max", "context_length_resolution", None)


@dataclass(frozen=True)
class PoolKind:
    """The pools of one kind (agg; prefill; decode) and how Dynamo's config names their grid."""

    kind: str
    dimensions: tuple[Dimension, ...]  # the mapping's index order
    optional_first: bool = False  # agg: the ISL dimension is optional (a 2-D or a 3-D mapping)

    @property
    def strategy_key(self) -> str:
        return f"{self.kind}_pool_selection_strategy"

    @property
    def mapping_key(self) -> str:
        return f"{self.kind}_pool_mapping"

    @property
    def tiers_field(self) -> str:
        return "tiers" if self.kind == "agg" else f"{self.kind}_tiers"


KINDS = {
    "agg": PoolKind("agg", (ISL, TTFT, ITL), optional_first=True),
    "prefill": PoolKind("prefill", (ISL, TTFT)),
    "decode": PoolKind("decode", (CONTEXT, ITL)),
}


@dataclass(frozen=True)
class RouterConfig:
    """What the planner needs: Dynamo's config, the defaults for requests without targets, per pool
    the targets of a request that the grid sends there (the canary's, with a short prompt), and the pools
    meant for interactive traffic."""

    config: dict[str, Any]
    default_targets: dict[str, float]
    canary_targets: dict[str, dict[str, float]]
    interactive_pools: list[str]


def router_config(recipe: Recipe) -> RouterConfig:
    router = recipe.global_router
    assert router is not None and recipe.pools
    if recipe.engine == "trtllm" and router.mode == "disagg" and not router.allow_unvalidated_trtllm_disagg:
        raise UserError(
            "global_router.mode: Dynamo 1.6.1 does not validate TensorRT-LLM disagg pools behind the global router "
            "(its README lists vLLM, SGLang and the mock engine); use agg pools, rehearse with --set engine=mocker, "
            "or set global_router.allow_unvalidated_trtllm_disagg: true to try anyway"
        )
    kinds = ["agg"] if router.mode == "agg" else ["prefill", "decode"]
    config: dict[str, Any] = {"mode": router.mode}
    defaults: dict[str, float] = {}
    canaries: dict[str, dict[str, float]] = {}
    interactive: list[str] = []
    for name in kinds:
        kind = KINDS[name]
        pools = [pool for pool in recipe.pools if pool.mode == name]
        config |= pool_list(router, kind, pools)
        tiers: list[TierSpec] = getattr(router, kind.tiers_field)
        given = getattr(router, kind.strategy_key)
        if tiers and given:
            raise UserError(f"global_router: give {kind.tiers_field} or {kind.strategy_key}, not both")
        if not tiers and not given:
            raise UserError(f"global_router: {kind.strategy_key} (Dynamo's grid) or {kind.tiers_field} is needed")
        strategy = compiled(kind, tiers, pools) if tiers else checked(kind, given, len(pools))
        if tiers:  # no target: the loosest tier, not the middle of the range
            defaults |= {dim.target: strategy[dim.max_key] for dim in kind.dimensions if dim.target}
        config[kind.strategy_key] = strategy
        canaries |= canary_targets(kind, strategy, pools)
        interactive += interactive_pool(kind, strategy, pools)
    config["enable_priority_retry"] = router.enable_priority_retry
    return RouterConfig(config, defaults, canaries, interactive)


def pool_list(router: GlobalRouterSpec, kind: PoolKind, pools: list[PoolSpec]) -> dict[str, Any]:
    """num_*_pools, *_pool_dynamo_namespaces and *_pool_priorities: from `pools:`, or as written if they agree."""
    namespaces = [pool.dynamo_namespace for pool in pools]
    count_key, namespaces_key, priorities_key = (
        f"num_{kind.kind}_pools",
        f"{kind.kind}_pool_dynamo_namespaces",
        f"{kind.kind}_pool_priorities",
    )
    count, written = getattr(router, count_key), getattr(router, namespaces_key)
    if count is not None and count != len(pools):
        raise UserError(f"global_router.{count_key}: {count}, but the recipe has {len(pools)} {kind.kind} pools")
    if written is not None and written != namespaces:
        raise UserError(
            f"global_router.{namespaces_key}: {written}, but the {kind.kind} pools' namespaces are {namespaces}"
        )
    found: dict[str, Any] = {count_key: len(pools), namespaces_key: namespaces}
    priorities = getattr(router, priorities_key)
    if priorities is not None:
        if len(priorities) != len(pools):
            raise UserError(f"global_router.{priorities_key}: {len(priorities)} values for {len(pools)} pools")
        found[priorities_key] = priorities
    return found


# -- the grid as written ---------------------------------------------------------------------------


def checked(kind: PoolKind, strategy: dict[str, Any], pool_count: int) -> dict[str, Any]:
    field = f"global_router.{kind.strategy_key}"
    check_numbers(field, strategy)
    dimensions = used_dimensions(kind, strategy)
    known = {kind.mapping_key, "priority_overrides"} | {
        key for dim in kind.dimensions for key in (dim.min_key, dim.max_key, dim.resolution_key)
    }
    unknown = sorted(set(strategy) - known)
    if unknown:
        raise UserError(f"{field}: unknown key {unknown[0]} (it takes {', '.join(sorted(known))})")
    shape = []
    for dim in dimensions:
        low, high, resolution = (strategy.get(key) for key in (dim.min_key, dim.max_key, dim.resolution_key))
        if not all(isinstance(value, int | float) and not isinstance(value, bool) for value in (low, high)):
            raise UserError(f"{field}: {dim.min_key} and {dim.max_key} must be numbers")
        if not low < high:  # type: ignore[operator]
            raise UserError(f"{field}.{dim.min_key}: {low} is not below {dim.max_key} {high}")
        if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
            raise UserError(f"{field}.{dim.resolution_key}: must be a whole number of buckets, 1 or more")
        shape.append((dim.resolution_key, resolution))
    check_mapping(f"{field}.{kind.mapping_key}", strategy.get(kind.mapping_key), shape, pool_count)
    return strategy


# Tokens or milliseconds, far beyond any request: the grid as written is saved in plan.json (JSON has no
# infinity) and its bucket arithmetic must not overflow.
GRID_LIMIT = max(MAX_TOKENS, MAX_MILLISECONDS)


def check_numbers(field: str, value: Any) -> None:
    """Every number in the grid as written is finite and at most GRID_LIMIT either way."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_numbers(f"{field}.{key}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_numbers(f"{field}[{index}]", item)
    elif isinstance(value, int | float) and not isinstance(value, bool) and not abs(value) <= GRID_LIMIT:
        shown = repr(value) if isinstance(value, float) else "a larger whole number"
        raise UserError(f"{field}: must be a finite number within ±{GRID_LIMIT} (it is {shown})")


def used_dimensions(kind: PoolKind, strategy: dict[str, Any]) -> tuple[Dimension, ...]:
    first = kind.dimensions[0]
    if kind.optional_first and not {first.min_key, first.max_key, first.resolution_key} & set(strategy):
        return kind.dimensions[1:]
    return kind.dimensions


def check_mapping(field: str, mapping: Any, shape: list[tuple[str, int]], pool_count: int) -> None:
    """The mapping nests one list per dimension, each as long as that dimension's resolution, and holds
    pool indexes."""
    if not shape:
        if not isinstance(mapping, int) or isinstance(mapping, bool) or not 0 <= mapping < pool_count:
            raise UserError(f"{field}: {mapping!r} is no pool (there are {pool_count}: 0 to {pool_count - 1})")
        return
    (resolution_key, resolution), inner = shape[0], shape[1:]
    if not isinstance(mapping, list) or len(mapping) != resolution:
        length = len(mapping) if isinstance(mapping, list) else "no list"
        raise UserError(f"{field}: {length} entries where {resolution_key} is {resolution}")
    for index, entry in enumerate(mapping):
        check_mapping(f"{field}[{index}]", entry, inner, pool_count)


# -- the short form --------------------------------------------------------------------------------


def compiled(kind: PoolKind, tiers: list[TierSpec], pools: list[PoolSpec]) -> dict[str, Any]:
    """The grid that sends each request to the first tier whose limits it is under."""
    field = f"global_router.{kind.tiers_field}"
    index = {pool.name: number for number, pool in enumerate(pools)}
    allowed = {dim.tier_field for dim in kind.dimensions}
    for number, tier in enumerate(tiers):
        if tier.pool not in index:
            raise UserError(f"{field}[{number}].pool: no {kind.kind} pool {tier.pool} (there are: {', '.join(index)})")
        limited = {key for key in TierSpec.model_fields if key != "pool" and getattr(tier, key) is not None}
        if limited - allowed:
            raise UserError(f"{field}[{number}]: {kind.kind} tiers limit {', '.join(sorted(allowed))} only")
    if any(getattr(tiers[-1], dim.tier_field) for dim in kind.dimensions):
        raise UserError(f"{field}: the last tier must have no limits (it takes what fits no other)")
    optional = kind.dimensions[0] if kind.optional_first else None  # agg's ISL: only when a tier limits it
    dimensions = [
        dim for dim in kind.dimensions if dim is not optional or any(getattr(t, dim.tier_field) for t in tiers)
    ]
    strategy: dict[str, Any] = {}
    edges = []
    for dim in dimensions:
        limits: list[int] = sorted({getattr(tier, dim.tier_field) for tier in tiers} - {None})
        step = math.gcd(*limits) if limits else SPAN_WITHOUT_LIMITS
        top = limits[-1] + step if limits else SPAN_WITHOUT_LIMITS
        if top // step > MAX_RESOLUTION:
            raise UserError(f"{field}: the {dim.tier_field} limits {limits} need {top // step} buckets; round them")
        strategy |= {dim.min_key: 0, dim.max_key: top, dim.resolution_key: top // step}
        edges.append([bucket * step for bucket in range(top // step)])

    def pool_for(cell: tuple[int, ...]) -> int:
        fits = (
            tier
            for tier in tiers
            if all(
                (limit := getattr(tier, dim.tier_field)) is None or low < limit
                for dim, low in zip(dimensions, cell, strict=True)
            )
        )
        return index[next(fits).pool]

    strategy[kind.mapping_key] = nested([pool_for(cell) for cell in itertools.product(*edges)], edges)
    return strategy


def nested(flat: list[int], edges: list[list[int]]) -> Any:
    """A flat row-major list as nested lists, one level per dimension."""
    if len(edges) == 1:
        return flat
    size = len(flat) // len(edges[0])
    return [nested(flat[start : start + size], edges[1:]) for start in range(0, len(flat), size)]


def canary_targets(kind: PoolKind, strategy: dict[str, Any], pools: list[PoolSpec]) -> dict[str, dict[str, float]]:
    """Per pool, SLA targets (the middle of a bucket) that the grid maps to it for a short request; a pool
    that only long prompts or contexts reach gets none."""
    dimensions = used_dimensions(kind, strategy)
    steps = [(strategy[dim.max_key] - strategy[dim.min_key]) / strategy[dim.resolution_key] for dim in dimensions]
    ranges = [range(strategy[dim.resolution_key]) if dim.target else range(1) for dim in dimensions]
    found: dict[str, dict[str, float]] = {}
    for cell in itertools.product(*ranges):
        entry: Any = strategy[kind.mapping_key]
        for bucket in cell:
            entry = entry[bucket]
        pool = pools[entry].name
        if pool not in found:
            found[pool] = {
                dim.target: strategy[dim.min_key] + (bucket + 0.5) * step
                for dim, bucket, step in zip(dimensions, cell, steps, strict=True)
                if dim.target
            }
    return found


def interactive_pool(kind: PoolKind, strategy: dict[str, Any], pools: list[PoolSpec]) -> list[str]:
    """The pool meant for interactive traffic: the one the grid sends a short request with the tightest
    SLA targets (the first bucket of every TTFT and ITL dimension), where the loosest targets (their last
    buckets) go to another pool. None where the grid reads no target or sends both to one pool."""
    dimensions = used_dimensions(kind, strategy)

    def pool_at(loosest: bool) -> str:
        entry: Any = strategy[kind.mapping_key]
        for dim in dimensions:
            entry = entry[strategy[dim.resolution_key] - 1 if loosest and dim.target else 0]
        return pools[entry].name

    tightest = pool_at(loosest=False)
    return [] if tightest == pool_at(loosest=True) else [tightest]
