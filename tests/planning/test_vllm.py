"""vLLM workers as Dynamo 1.6.1's vLLM backend takes them: flags instead of an engine YAML, NIXL between
prefill and decode, each co-located worker on ports of its own, and what a plan refuses up front."""

from __future__ import annotations

import json

import pytest

from slurmserve.backends import SLURM_TRAITS
from slurmserve.errors import UserError
from slurmserve.planning.needs import needs_of

from ..conftest import plan_of

DISAGG, AGG = "gpt-oss-120b-vllm-disagg", "gpt-oss-120b-vllm-agg"
NIXL = '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'


def argv_after_module(command: list[str]) -> list[str]:
    return command[command.index("dynamo.vllm") + 1 :]


def test_gpt_oss_disagg_runs_dynamos_documented_vllm_workers():
    plan = plan_of(DISAGG, "single-node-8gpu.yaml")
    for name, role, gpus in (("prefill-0", "prefill", [0, 1, 2, 3]), ("decode-0", "decode", [4, 5, 6, 7])):
        worker = plan.process(name)
        assert worker.command[:3] == ["/usr/bin/python3", "-m", "dynamo.vllm"] and worker.gpus == gpus
        argv = " ".join(argv_after_module(worker.command))
        for flags in (
            "--tensor-parallel-size 4",
            f"--disaggregation-mode {role}",
            f"--kv-transfer-config {NIXL}",
            "--dyn-reasoning-parser gpt_oss --dyn-tool-call-parser harmony",
            "--served-model-name openai/gpt-oss-120b",
        ):
            assert flags in argv, argv
        assert "--extra-engine-args" not in argv and "--is-prefill-worker" not in argv
        assert worker.env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "10.0.0.11"
        assert worker.env["VLLM_NIXL_SIDE_CHANNEL_PORT"] == str(worker.ports["nixl"])
        assert worker.env["DYN_SYSTEM_PORT"] == str(worker.ports["system"])
        assert worker.tasks == 1 and worker.leftovers == []
    assert plan.engine == "vllm" and plan.engine_files == [] and plan.kv_preflight


def test_agg_workers_take_no_kv_connector_and_no_side_channel():
    worker = plan_of(AGG, "single-node-8gpu.yaml").process("agg-0")
    assert "--kv-transfer-config" not in worker.command and "--disaggregation-mode" not in worker.command
    assert set(worker.ports) == {"system", "rpc"} and "VLLM_NIXL_SIDE_CHANNEL_PORT" not in worker.env


def test_co_located_workers_get_side_channel_and_status_ports_of_their_own():
    plan = plan_of(DISAGG, "single-node-8gpu.yaml", "prefill.replicas=4", "prefill.tensor_parallel=1")
    workers = [p for p in plan.processes if p.role in ("prefill", "decode")]
    assert len(workers) == 5 and {p.nodes[0] for p in workers} == {"gpu01"}
    nixl = [int(p.env["VLLM_NIXL_SIDE_CHANNEL_PORT"]) for p in workers]
    system = [int(p.env["DYN_SYSTEM_PORT"]) for p in workers]
    every_port = [port for p in plan.processes for port in p.ports.values()]
    assert len(set(nixl)) == 5 and len(set(system)) == 5 and len(every_port) == len(set(every_port))


def test_kv_routing_makes_each_worker_publish_its_kv_events_on_its_own_port():
    plan = plan_of(DISAGG, "single-node-8gpu.yaml", "frontend.router_mode=kv", "decode.replicas=1")
    for name in ("prefill-0", "decode-0"):
        worker = plan.process(name)
        argv = argv_after_module(worker.command)
        events = json.loads(argv[argv.index("--kv-events-config") + 1])
        assert events == {
            "publisher": "zmq",
            "topic": "kv-events",
            "endpoint": f"tcp://*:{worker.ports['kv_events']}",
            "enable_kv_cache_events": True,
        }
    assert plan.process("prefill-0").ports["kv_events"] != plan.process("decode-0").ports["kv_events"]
    assert "--kv-events-config" not in plan_of(DISAGG, "single-node-8gpu.yaml").process("decode-0").command


def test_parallelism_maps_to_vllms_flags():
    worker = plan_of(
        AGG, "single-node-8gpu.yaml", "agg.pipeline_parallel=2", "agg.expert_parallel=4", "agg.args.max_num_seqs=64"
    ).process("agg-0")
    argv = " ".join(argv_after_module(worker.command))
    assert "--tensor-parallel-size 4 --pipeline-parallel-size 2 --enable-expert-parallel" in argv
    assert "--max-num-seqs 64" in argv and worker.gpus == list(range(8))


@pytest.mark.parametrize(
    "sets, said",
    [
        (
            ["agg.engine_config=gpt-oss-120b/agg.yaml"],
            "agg.engine_config: engine vllm takes no engine config (TensorRT-LLM's YAML): vLLM is configured by "
            "command-line flags; put its settings in agg.args",
        ),
        (["agg.expert_parallel=2"], "agg.expert_parallel: vLLM's expert parallelism spans"),
    ],
)
def test_what_vllm_cannot_take_is_refused_naming_the_field(sets, said):
    with pytest.raises(UserError) as refused:
        plan_of(AGG, "single-node-8gpu.yaml", *sets)
    assert said in " ".join(str(refused.value).split())


def test_a_vllm_worker_wider_than_a_node_is_refused_saying_why():
    with pytest.raises(UserError) as refused:
        plan_of(AGG, "two-node-8gpu.yaml", "agg.tensor_parallel=16")
    said = str(refused.value)
    assert said.startswith("agg.tensor_parallel: worker agg-0 needs 16 GPUs") and "--headless" in said, said
    with pytest.raises(UserError, match="does not plan a vLLM worker across nodes"):  # nor its rehearsal
        plan_of(AGG, "two-node-8gpu.yaml", "agg.tensor_parallel=16", "engine=mocker")


@pytest.mark.parametrize("recipe", [DISAGG, AGG])
def test_the_node_preflight_looks_for_vllm_and_nixl(recipe):
    needs = needs_of(plan_of(recipe, "two-node-8gpu.yaml"), SLURM_TRAITS)
    assert needs.nodes["gpu01"].modules["dynamo.vllm"] == ["vllm", "nixl"]
    assert needs.nodes["gpu01"].gpus == 4
