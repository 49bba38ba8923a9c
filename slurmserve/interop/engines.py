"""Which flags of each engine's worker command slurmserve plans itself, in both directions: what import takes
into recipe fields, and what export writes from them. Another engine is one more entry here."""

from __future__ import annotations

from typing import NamedTuple

from ..errors import UserError


class EngineFlags(NamedTuple):
    module: str
    model: tuple[str, ...]  # the model's path or hub id (the first is the one export writes)
    served_name: str
    engine_config: str | None  # the engine YAML's path
    # recipe field -> (flag, engine-config key): where TP, PP and EP come from
    parallel: dict[str, tuple[str | None, str | None]]
    # Flags slurmserve sets on every worker from the plan (import drops them, with a word in the warning).
    planned: tuple[str, ...]
    # A bare flag that spreads the experts over the tensor-parallel GPUs (expert_parallel = tensor_parallel).
    expert_switch: str | None = None
    # What a disaggregated worker needs on Kubernetes that the plan adds on Slurm (export writes it).
    disagg_args: tuple[str, ...] = ()


COMMON_PLANNED = ("--request-plane", "--event-plane", "--discovery-backend", "--namespace", "--endpoint")

ENGINES: dict[str, EngineFlags] = {
    "trtllm": EngineFlags(
        module="dynamo.trtllm",
        model=("--model-path", "--model"),
        served_name="--served-model-name",
        engine_config="--extra-engine-args",
        parallel={
            "tensor_parallel": ("--tensor-parallel-size", "tensor_parallel_size"),
            "pipeline_parallel": ("--pipeline-parallel-size", "pipeline_parallel_size"),
            "expert_parallel": ("--expert-parallel-size", "moe_expert_parallel_size"),
        },
        planned=COMMON_PLANNED,
    ),
    "mocker": EngineFlags(
        module="dynamo.mocker",
        model=("--model-path",),
        served_name="--model-name",
        engine_config=None,
        parallel={"tensor_parallel": (None, None), "pipeline_parallel": (None, None), "expert_parallel": (None, None)},
        planned=(*COMMON_PLANNED, "--response-replay-trace-path"),
    ),
    # vLLM takes its engine settings as flags (`args`), no engine YAML; the plan gives each worker its own NIXL
    # side channel and KV-event port, so the manifest's transfer and event configs are the plan's to write.
    "vllm": EngineFlags(
        module="dynamo.vllm",
        model=("--model",),
        served_name="--served-model-name",
        engine_config=None,
        parallel={
            "tensor_parallel": ("--tensor-parallel-size", None),
            "pipeline_parallel": ("--pipeline-parallel-size", None),
            "expert_parallel": (None, None),
        },
        planned=(*COMMON_PLANNED, "--kv-transfer-config", "--kv-events-config"),
        expert_switch="--enable-expert-parallel",
        disagg_args=("--kv-transfer-config", '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'),
    ),
}


def engine_of_module(module: str, where: str) -> str:
    for engine, flags in ENGINES.items():
        if flags.module == module:
            return engine
    modules = ", ".join(flags.module for flags in ENGINES.values())
    raise UserError(f"{where}: runs {module}, an engine slurmserve does not run (it runs {modules})")
