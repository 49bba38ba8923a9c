"""router_mode kv: what each engine's workers and the frontend are given, and what is refused (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slurmserve.config.kv_routing import MOCKER_BLOCK_SIZE, TRTLLM_TOKENS_PER_BLOCK, VLLM_BLOCK_SIZE
from slurmserve.config.recipe import load_recipe
from slurmserve.errors import UserError
from slurmserve.resources import resource_dir

from ..conftest import plan_of
from ..helpers import slurmserve_in_process

KV = "frontend.router_mode=kv"


def flag_value(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


def test_trtllm_workers_publish_kv_events_and_the_frontend_hashes_by_their_block_size():
    plan = plan_of("qwen3-32b-disagg", "two-node-8gpu.yaml")
    workers = [process for process in plan.processes if process.role in ("prefill", "decode")]
    assert workers and all(process.command.count("--publish-kv-events") == 1 for process in workers)
    frontend = plan.process("frontend").command
    assert flag_value(frontend, "--router-mode") == "kv"
    assert flag_value(frontend, "--kv-cache-block-size") == str(TRTLLM_TOKENS_PER_BLOCK)


def test_round_robin_renders_none_of_it():
    plan = plan_of("gpt-oss-120b-disagg", "single-node-8gpu.yaml")
    commands = [process.command for process in plan.processes]
    assert not any("--publish-kv-events" in c or "--kv-cache-block-size" in c for c in commands)


def test_the_mock_engine_is_given_the_block_size_the_frontend_hashes_by():
    plan = plan_of("mocker-agg", "local.yaml", "agg.replicas=2", KV)
    assert flag_value(plan.process("frontend").command, "--kv-cache-block-size") == str(MOCKER_BLOCK_SIZE)
    assert all(flag_value(plan.process(f"agg-{n}").command, "--block-size") == str(MOCKER_BLOCK_SIZE) for n in (0, 1))
    own = plan_of("mocker-agg", "local.yaml", KV, "mocker.block_size=16")
    assert flag_value(own.process("frontend").command, "--kv-cache-block-size") == "16"
    assert flag_value(own.process("agg-0").command, "--block-size") == "16"


def test_vllm_workers_are_given_the_block_size_the_frontend_hashes_by_and_their_own_event_port():
    plan = plan_of("gpt-oss-120b-vllm-disagg", "single-node-8gpu.yaml", KV)
    workers = [plan.process("prefill-0"), plan.process("decode-0")]
    assert flag_value(plan.process("frontend").command, "--kv-cache-block-size") == str(VLLM_BLOCK_SIZE)
    assert all(flag_value(worker.command, "--block-size") == str(VLLM_BLOCK_SIZE) for worker in workers)
    assert not any("--publish-kv-events" in worker.command for worker in workers)  # TensorRT-LLM's flag
    ports = [worker.ports["kv_events"] for worker in workers]
    assert len(set(ports)) == 2  # co-located on one node: one publisher port each
    assert all(f"tcp://*:{port}" in flag_value(w.command, "--kv-events-config") for w, port in zip(workers, ports))
    own = plan_of("gpt-oss-120b-vllm-agg", "single-node-8gpu.yaml", KV, "agg.args.block_size=32")
    assert flag_value(own.process("frontend").command, "--kv-cache-block-size") == "32"
    assert own.process("agg-0").command.count("--block-size") == 1
    quoted = load_recipe("gpt-oss-120b-vllm-agg", [KV, 'agg.args.block_size="32"'])
    assert quoted.frontend.kv_cache_block_size == 32


def test_a_vllm_block_size_the_frontend_does_not_share_is_refused_naming_both():
    with pytest.raises(UserError) as refused:
        load_recipe("gpt-oss-120b-vllm-agg", [KV, "agg.args.block_size=32", "frontend.kv_cache_block_size=16"])
    said = str(refused.value)
    assert "frontend.kv_cache_block_size is 16" in said and "agg.args.block_size" in said and "32" in said


def test_disabled_block_reuse_is_refused_naming_the_file_and_the_key():
    result = slurmserve_in_process(
        "plan", "--recipe", "gpt-oss-120b-agg", "--hosts", "hosts/single-node-8gpu.yaml", "--set", KV
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    said = " ".join((result.stdout + result.stderr).split())
    assert "gpt-oss-120b/agg.yaml" in said and "kv_cache_config.enable_block_reuse: false" in said
    assert "agg.engine_config" in said and "round-robin" in said
    # The shipped recipe (round-robin) and its rehearsal under kv (no TensorRT-LLM) stay usable.
    assert load_recipe("gpt-oss-120b-agg").frontend.router_mode == "round-robin"
    assert load_recipe("gpt-oss-120b-agg", ["engine=mocker", KV]).frontend.kv_cache_block_size == MOCKER_BLOCK_SIZE


def recipe_with_block_sizes(tmp_path: Path, prefill: int | None, decode: int | None) -> Path:
    """qwen3-32b-disagg with engine configs of the given tokens_per_block (None: left out)."""
    recipe = yaml.safe_load((resource_dir("recipes") / "qwen3-32b-disagg.yaml").read_text())
    for role, tokens in (("prefill", prefill), ("decode", decode)):
        config = yaml.safe_load((resource_dir("engine_configs") / "qwen3-32b" / f"{role}.yaml").read_text())
        if tokens is not None:
            config["kv_cache_config"]["tokens_per_block"] = tokens
        (tmp_path / f"{role}.yaml").write_text(yaml.safe_dump(config))
        recipe[role]["engine_config"] = str(tmp_path / f"{role}.yaml")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_workers_of_different_block_sizes_are_refused_naming_both(tmp_path):
    with pytest.raises(UserError) as refused:
        load_recipe(str(recipe_with_block_sizes(tmp_path, 64, None)))
    said = str(refused.value)
    assert f"prefill has 64 tokens ({tmp_path / 'prefill.yaml'}: kv_cache_config.tokens_per_block)" in said
    assert f"decode has {TRTLLM_TOKENS_PER_BLOCK} (TensorRT-LLM's default" in said


def test_a_frontend_block_size_other_than_the_workers_is_refused_naming_both(tmp_path):
    recipe = str(recipe_with_block_sizes(tmp_path, 64, 64))
    assert load_recipe(recipe).frontend.kv_cache_block_size == 64
    result = slurmserve_in_process("plan", "--recipe", recipe, "--set", "frontend.kv_cache_block_size=32")
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2 and "Traceback" not in said
    assert "frontend.kv_cache_block_size is 32 tokens but prefill's KV block size is 64" in said
    assert f"{tmp_path / 'prefill.yaml'}: kv_cache_config.tokens_per_block" in said
