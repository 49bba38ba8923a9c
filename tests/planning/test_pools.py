"""Pools behind Dynamo's global router, planned: the processes and their order, the global router's
configuration (the short form compiled, checked by Dynamo's own config loader and pool selection), and bad
pool configurations refused naming the field. (tests/health/test_pools_e2e.py runs them.)"""

from __future__ import annotations

import json

import pytest
import yaml
from dynamo.global_router.pool_selection import load_config

from slurmserve.backends import traits_for
from slurmserve.config.recipe import load_recipe, recipe_path
from slurmserve.errors import UserError
from slurmserve.planning.router_grid import router_config
from slurmserve.render.files import rendered_files

from ..conftest import plan_of
from ..helpers import slurmserve, slurmserve_in_process


def test_two_pools_plan_workers_then_routers_then_the_global_router_then_the_frontend():
    plan = plan_of("mocker-two-pools", "local.yaml")
    roles = {p.name: (p.role, p.pool, p.after) for p in plan.processes}
    assert roles == {
        "fast-agg-0": ("agg", "fast", []),
        "slow-agg-0": ("agg", "slow", []),
        "fast-router": ("router", "fast", ["fast-agg-0"]),
        "slow-router": ("router", "slow", ["slow-agg-0"]),
        "global-router": ("global_router", None, ["fast-router", "slow-router"]),
        "frontend": ("frontend", None, ["global-router"]),
    }
    fast, router, front = plan.process("fast-agg-0"), plan.process("fast-router"), plan.process("frontend")
    # Pools keep their GPUs; each pool's processes live in its namespace, under a name of their own.
    assert fast.gpus == [0, 1] and plan.process("slow-agg-0").gpus == [2, 3]
    assert (
        fast.env["DYN_NAMESPACE"] == "fast"
        and fast.command[fast.command.index("--model-name") + 1] == "fast--tiny-mock"
    )
    assert fast.command[fast.command.index("--speedup-ratio") + 1] == "100"
    assert plan.process("slow-agg-0").command[fast.command.index("--speedup-ratio") + 1] == "1"
    assert router.command[-2:] == ["--endpoint", "fast.backend.generate"] and router.env["DYN_NAMESPACE"] == "fast"
    assert router.env["DYN_SYSTEM_STARTING_HEALTH_STATUS"] == "ready"
    assert front.command[front.command.index("--namespace") + 1] == "global-router"
    gr = plan.process("global-router")
    assert gr.command[:3] == ["env", "-C", "/runs/test-run/served"]
    assert gr.command[gr.command.index("--model-name") + 1] == plan.model == "tiny-mock"
    assert plan.served_link == "served/tiny-mock" and plan.workers_expected == {"global_router": 1}
    config = json.loads(rendered_files(plan, traits_for(plan.backend))["global_router.json"])
    assert config == plan.global_router_config and config["agg_pool_dynamo_namespaces"] == ["fast", "slow"]
    document = json.loads(plan.model_dump_json())
    assert {p["name"]: p["pool"] for p in document["processes"]}["fast-router"] == "fast"


def test_a_recipe_without_pools_plans_as_before():
    plan = plan_of("mocker-disagg", "two-node-8gpu.yaml")
    assert not plan.pools and plan.global_router_config is None and plan.served_link is None
    assert all(p.pool is None and p.role not in ("router", "global_router") for p in plan.processes)
    assert "--namespace" not in plan.process("frontend").command


def dynamo_selects(config: dict, tmp_path) -> object:
    """Dynamo's own loader (it validates the config) on what slurmserve wrote."""
    path = tmp_path / "global_router.json"
    path.write_text(json.dumps(config))
    loaded = load_config(path)
    loaded.validate()
    return loaded


def test_the_short_form_compiles_to_a_grid_dynamo_accepts_and_routes_as_the_tiers_say(tmp_path):
    routing = router_config(load_recipe("mocker-two-pools"))
    assert routing.config["agg_pool_selection_strategy"]["agg_pool_mapping"] == [[0, 0], [0, 1]]
    strategy = dynamo_selects(routing.config, tmp_path).agg_pool_selection_strategy
    fast, slow = 0, 1
    assert strategy.select_pool(ttft_target_ms=100, itl_target_ms=90) == fast  # TTFT under 500
    assert strategy.select_pool(ttft_target_ms=900, itl_target_ms=10) == fast  # ITL under 50
    assert strategy.select_pool(ttft_target_ms=900, itl_target_ms=90) == slow
    # No targets: slurmserve's defaults (the top of each range) put the request in the loosest tier.
    defaults = routing.default_targets
    assert strategy.select_pool(defaults["ttft_target"], defaults["itl_target"]) == slow
    for name, targets in routing.canary_targets.items():  # each pool's canary goes to that pool
        assert strategy.select_pool(targets["ttft_target"], targets["itl_target"]) == {"fast": 0, "slow": 1}[name]


def test_three_tiers_with_uneven_limits_and_a_disagg_grid(tmp_path):
    recipe = load_recipe(
        "mocker-two-pools",
        ["global_router.tiers=[{pool: fast, ttft_ms: 200}, {pool: slow, ttft_ms: 600}, {pool: fast}]"],
    )
    strategy = dynamo_selects(router_config(recipe).config, tmp_path).agg_pool_selection_strategy
    assert [strategy.select_pool(t, 10) for t in (50, 199, 200, 599, 600, 5000)] == [0, 0, 1, 1, 0, 0]
    disagg = router_config(load_recipe("mocker-two-pools-disagg"))
    loaded = dynamo_selects(disagg.config, tmp_path)
    assert loaded.prefill_pool_selection_strategy.select_pool(isl=20, ttft_target_ms=100) == 0
    assert loaded.prefill_pool_selection_strategy.select_pool(isl=20, ttft_target_ms=900) == 1
    assert disagg.canary_targets == {
        "prefill-fast": {"ttft_target": 250.0},
        "prefill-slow": {"ttft_target": 750.0},
        "decode": {"itl_target": 500.0},
    }


def test_dynamos_grid_as_written_is_taken_and_checked(tmp_path):
    grid = {
        "num_agg_pools": 2,
        "agg_pool_dynamo_namespaces": ["fast", "slow"],
        "agg_pool_selection_strategy": {
            "ttft_min_ms": 0,
            "ttft_max_ms": 1000,
            "ttft_resolution": 2,
            "itl_min_ms": 0,
            "itl_max_ms": 100,
            "itl_resolution": 2,
            "agg_pool_mapping": [[0, 0], [0, 1]],
        },
    }
    recipe = with_router(tmp_path, {"mode": "agg", **grid})
    config = router_config(load_recipe(str(recipe))).config
    assert config["agg_pool_selection_strategy"] == grid["agg_pool_selection_strategy"]
    dynamo_selects(config, tmp_path)


def with_router(tmp_path, router: dict, **changes) -> object:
    """mocker-two-pools with another global_router section (and other top-level changes), as a file."""
    document = yaml.safe_load(recipe_path("mocker-two-pools").read_text())
    document["global_router"] = router
    document.update(changes)
    path = tmp_path / "pools.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


AGG = {"ttft_min_ms": 0, "ttft_max_ms": 1000, "ttft_resolution": 2, "itl_min_ms": 0, "itl_max_ms": 100}


@pytest.mark.parametrize(
    ("router", "expected"),
    [
        (
            {"agg_pool_selection_strategy": {**AGG, "itl_resolution": 2, "agg_pool_mapping": [[0, 0, 1], [0, 1]]}},
            "global_router.agg_pool_selection_strategy.agg_pool_mapping[0]: 3 entries where itl_resolution is 2",
        ),
        (
            {"agg_pool_selection_strategy": {**AGG, "itl_resolution": 2, "agg_pool_mapping": [[0, 0]]}},
            "agg_pool_mapping: 1 entries where ttft_resolution is 2",
        ),
        (
            {"agg_pool_selection_strategy": {**AGG, "itl_resolution": 2, "agg_pool_mapping": [[0, 0], [0, 2]]}},
            "agg_pool_mapping[1][1]: 2 is no pool (there are 2: 0 to 1)",
        ),
        (
            {"agg_pool_selection_strategy": {**AGG, "ttft_min_ms": 900, "ttft_max_ms": 100, "itl_resolution": 1}},
            "agg_pool_selection_strategy.ttft_min_ms: 900 is not below ttft_max_ms 100",
        ),
        ({"num_agg_pools": 3, "tiers": [{"pool": "slow"}]}, "global_router.num_agg_pools: 3, but the recipe has 2"),
        ({"tiers": [{"pool": "fast", "ttft_ms": 500}]}, "global_router.tiers: the last tier must have no limits"),
        ({"tiers": [{"pool": "medium"}]}, "global_router.tiers[0].pool: no agg pool medium"),
        ({"tiers": [{"pool": "fast", "isl_tokens": 0}, {"pool": "slow"}]}, "isl_tokens"),
        ({}, "global_router: agg_pool_selection_strategy (Dynamo's grid) or tiers is needed"),
        (
            {
                "agg_pool_selection_strategy": {
                    **AGG,
                    "ttft_max_ms": float("inf"),
                    "itl_resolution": 2,
                    "agg_pool_mapping": [[0, 0], [0, 1]],
                }
            },
            "agg_pool_selection_strategy.ttft_max_ms: must be a finite number within",
        ),
        (
            {
                "agg_pool_selection_strategy": {
                    **AGG,
                    "ttft_max_ms": 10**400,
                    "itl_resolution": 2,
                    "agg_pool_mapping": [[0, 0], [0, 1]],
                }
            },
            "agg_pool_selection_strategy.ttft_max_ms: must be a finite number within",
        ),
        ({"tiers": [{"pool": "fast", "ttft_ms": 10**400}, {"pool": "slow"}]}, "ttft_ms: must be at most"),
    ],
)
def test_bad_grids_are_refused_naming_the_field(tmp_path, router, expected):
    recipe = with_router(tmp_path, {"mode": "agg", **router})
    result = slurmserve_in_process("plan", "--recipe", str(recipe))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert expected in " ".join(result.stderr.split()), result.stderr


def test_two_pools_in_one_namespace_are_refused(tmp_path):
    document = yaml.safe_load(recipe_path("mocker-two-pools").read_text())
    document["pools"][1]["namespace"] = "fast"
    path = tmp_path / "pools.yaml"
    path.write_text(yaml.safe_dump(document))
    result = slurmserve("plan", "--recipe", str(path))
    assert result.returncode == 2
    assert "pools: namespace fast is used twice (each pool needs its own)" in " ".join(result.stderr.split())


def test_a_pool_whose_process_takes_another_process_name_is_refused_naming_the_pool(tmp_path):
    document = yaml.safe_load(recipe_path("mocker-two-pools").read_text())
    document["pools"][1]["name"] = "global"  # its router would be global-router: Dynamo's global router's name
    document["global_router"]["tiers"][-1]["pool"] = "global"
    path = tmp_path / "pools.yaml"
    path.write_text(yaml.safe_dump(document))
    result = slurmserve("plan", "--recipe", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    said = " ".join(result.stderr.split())
    assert "pools.global.name: pool global makes a process named global-router" in said, said


def trtllm_disagg_pools(tmp_path, **router: object):
    document = yaml.safe_load(recipe_path("mocker-two-pools-disagg").read_text())
    document["engine"] = "trtllm"
    document["global_router"].update(router)
    path = tmp_path / "trtllm-disagg-pools.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def test_tensorrt_llm_disagg_pools_are_refused_unless_a_recipe_opts_in(tmp_path):
    result = slurmserve("plan", "--recipe", trtllm_disagg_pools(tmp_path))
    assert result.returncode == 2
    said = " ".join(result.stderr.split())
    assert "global_router.mode: Dynamo 1.6.1 does not validate TensorRT-LLM disagg pools" in said
    assert "allow_unvalidated_trtllm_disagg" in said
    opted = slurmserve("plan", "--recipe", trtllm_disagg_pools(tmp_path, allow_unvalidated_trtllm_disagg=True))
    assert opted.returncode == 0, opted.stderr
    # A rehearsal of the refused shape on the mock engine is fine.
    rehearsal = slurmserve("plan", "--recipe", trtllm_disagg_pools(tmp_path), "--set", "engine=mocker")
    assert rehearsal.returncode == 0, rehearsal.stderr


def test_pool_modes_must_fit_the_global_routers_mode(tmp_path):
    recipe = with_router(tmp_path, {"mode": "disagg", "prefill_tiers": [{"pool": "fast"}]}, mode="disagg")
    result = slurmserve("plan", "--recipe", str(recipe))
    assert result.returncode == 2
    assert "global_router.mode disagg takes prefill pools and decode pools" in " ".join(result.stderr.split())


def test_a_served_name_that_would_leave_the_run_directory_is_refused():
    with pytest.raises(UserError, match=r"model.served_name '\.\./x': with pools it names a folder"):
        plan_of("mocker-two-pools", "local.yaml", "model.served_name=../x")


def test_the_sla_pools_recipe_rehearses_on_the_mock_engine_with_the_same_placement():
    real = plan_of("gpt-oss-120b-sla-pools", "two-node-8gpu.yaml")
    rehearsal = plan_of("gpt-oss-120b-sla-pools", "two-node-8gpu.yaml", "engine=mocker")
    shape = [(p.name, p.role, p.pool, p.nodes, p.gpus, p.ports) for p in real.processes]
    assert shape == [(p.name, p.role, p.pool, p.nodes, p.gpus, p.ports) for p in rehearsal.processes]
    assert real.model == rehearsal.model == "openai/gpt-oss-120b"
    interactive, throughput = real.process("interactive-agg-0"), real.process("throughput-agg-0")
    assert interactive.command[:4] == ["trtllm-llmapi-launch", "/usr/bin/python3", "-m", "dynamo.trtllm"]
    assert (
        interactive.command[interactive.command.index("--served-model-name") + 1] == "interactive--openai/gpt-oss-120b"
    )
    engines = {f.path: f.source for f in real.engine_files}
    assert engines["engine/interactive-agg.yaml"].endswith("gpt-oss-120b/agg-interactive.yaml")
    assert engines["engine/throughput-agg.yaml"].endswith("gpt-oss-120b/agg.yaml")
    assert throughput.command[throughput.command.index("--max-batch-size") + 1] == "800"
    mocker = rehearsal.process("interactive-agg-0").command
    assert mocker[mocker.index("--speedup-ratio") + 1] == "100"


def test_a_pools_workers_say_its_role_once():
    """`prefill-fast-prefill-0` and `decode-decode-0` read as bugs: the role is added only where the pool's
    name does not say it already (`fast-agg-0`), and single-pool names stay as they were."""
    disagg = {p.name for p in plan_of("mocker-two-pools-disagg", "local.yaml").processes if p.is_worker}
    assert disagg == {"prefill-fast-0", "prefill-slow-0", "decode-0"}
    agg = {p.name for p in plan_of("mocker-two-pools", "local.yaml").processes if p.is_worker}
    assert agg == {"fast-agg-0", "slow-agg-0"}
    single = {p.name for p in plan_of("mocker-disagg", "local.yaml").processes if p.is_worker}
    assert single == {"prefill-0", "decode-0"}


def test_two_pools_whose_workers_would_share_a_name_are_refused(tmp_path):
    document = yaml.safe_load(recipe_path("mocker-two-pools-disagg").read_text())
    # Pool `fast`'s workers are fast-prefill-0, as are those of pool `fast-prefill`.
    document["pools"][0]["name"], document["pools"][1]["name"] = "fast", "fast-prefill"
    document["global_router"]["prefill_tiers"] = [{"pool": "fast", "ttft_ms": 500}, {"pool": "fast-prefill"}]
    path = tmp_path / "pools.yaml"
    path.write_text(yaml.safe_dump(document))
    result = slurmserve_in_process("plan", "--recipe", str(path))
    said = " ".join(result.stderr.split())
    assert result.returncode == 2 and "makes a process named fast-prefill-0" in said, said


BY_PROMPT_LENGTH = [{"pool": "fast", "isl_tokens": 1000}, {"pool": "slow"}]


@pytest.mark.parametrize(
    "tiers, interactive",
    [
        ([{"pool": "fast", "ttft_ms": 500}, {"pool": "fast", "itl_ms": 50}, {"pool": "slow"}], ["fast"]),
        ([{"pool": "slow", "itl_ms": 20}, {"pool": "fast"}], ["slow"]),  # the name says nothing, the grid does
        (BY_PROMPT_LENGTH, []),  # no SLA target chooses
        ([{"pool": "fast", "ttft_ms": 500}, {"pool": "fast"}], []),  # the targets change no pool
    ],
)
def test_the_pool_meant_for_interactive_traffic_is_the_one_the_grid_gives_the_tightest_targets(
    tmp_path, tiers, interactive
):
    recipe = load_recipe(str(with_router(tmp_path, {"mode": "agg", "tiers": tiers})))
    assert router_config(recipe).interactive_pools == interactive


def test_dynamos_grid_as_written_and_a_disagg_grid_name_their_interactive_pools(tmp_path):
    grid = {"agg_pool_selection_strategy": {**AGG, "itl_resolution": 2, "agg_pool_mapping": [[1, 0], [0, 0]]}}
    as_written = load_recipe(str(with_router(tmp_path, {"mode": "agg", **grid})))
    assert router_config(as_written).interactive_pools == ["slow"]  # index 1: the tightest TTFT and ITL
    assert router_config(load_recipe("mocker-two-pools-disagg")).interactive_pools == ["prefill-fast"]


def test_an_interactive_pool_behind_the_global_router_is_warned_of_at_plan_time(tmp_path):
    """Dynamo 1.6.1's frontend holds the first tokens of a stream through the global router about 40 ms
    (benchmarks/global_router_stream.sh): the plan says so where a pool is meant for low TTFT/ITL."""
    result = slurmserve_in_process("plan", "--recipe", "mocker-two-pools")
    said = " ".join(result.stderr.split())
    assert result.returncode == 0, result.stderr
    assert "warning: pool fast takes the requests with the tightest TTFT/ITL targets" in said, said
    assert "no TCP_NODELAY" in said and "docs/pools.md" in said
    bulk_only = with_router(tmp_path, {"mode": "agg", "tiers": BY_PROMPT_LENGTH})
    assert "tightest" not in slurmserve_in_process("plan", "--recipe", str(bulk_only)).stderr
    assert "tightest" not in slurmserve_in_process("plan", "--recipe", "mocker-agg").stderr
