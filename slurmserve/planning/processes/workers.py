"""The workers (prefill, decode, agg): TRT-LLM, vLLM or the mock engine, one process or one MPI world each."""

from __future__ import annotations

import json
from typing import Any

from ...config.hosts import Node
from ...config.recipe import MockerSpec, Recipe, WorkerGroup, WorkerSpec
from ...errors import UserError
from ...resources import builtin_model_dir
from ..placement import Placement
from ..plan import EngineFile, Process
from ..topology import nics_for_gpus, rank_rdma_env, rdma_env
from .common import PlanContext, SystemPorts, Tools, advertise_env, log_of, plane_flags, pool_env, system_ports
from .model import ModelLocation

MOCKER_READY_TIMEOUT_S = 120
MODEL_LOAD_TIMEOUT_S = 3600  # a 120B model from a shared filesystem can take half an hour to load
# TRT-LLM's MoE workers keep expert state in shared-memory files that outlive a killed worker.
TRTLLM_LEFTOVERS = ["/dev/shm/moe_*"]
REPLAY_TRACE = "replay.jsonl"  # beside the tiny model (scripts/make_replay_trace.py)
# How a disaggregated vLLM worker hands KV to its peer, as Dynamo's vLLM docs run it: NIXL, both ways
# (Dynamo 1.6.1 requires it of a prefill worker; a decode worker takes the same connector).
NIXL_KV_TRANSFER = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}


def json_flag(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def engine_args(args: dict[str, Any]) -> list[str]:
    """max_num_tokens: 20000 -> --max-num-tokens 20000; true -> a bare flag; false -> left out."""
    rendered = []
    for key, value in args.items():
        if value is True:
            rendered.append(flag(key))
        elif value is not False:
            rendered += [flag(key), str(value)]
    return rendered


def replay_trace(mocker: MockerSpec, model_path: str) -> str | None:
    """The mocker's response replay trace: the recipe's, or the one shipped with the tiny model."""
    if mocker.replay_trace:
        return mocker.replay_trace
    shipped = builtin_model_dir("tiny-mock")
    return str(shipped / REPLAY_TRACE) if model_path == str(shipped) else None


def worker_module(recipe: Recipe) -> str:
    return f"dynamo.{recipe.engine}"  # dynamo.trtllm, dynamo.vllm, dynamo.mocker


def served_name(recipe: Recipe, group: WorkerGroup) -> str:
    """The model name a worker registers. A pool's workers get one of their own: under the public name
    the frontend would reach them directly, around the global router."""
    return f"{group.pool.name}--{recipe.model.name}" if group.pool else recipe.model.name


def mocker_command(recipe: Recipe, group: WorkerGroup, tools: Tools, model_path: str) -> list[str]:
    mocker = recipe.mocker_of(group.pool)
    return [
        tools.python,
        "-m",
        worker_module(recipe),
        "--model-path",
        model_path,
        "--model-name",
        served_name(recipe, group),
        "--speedup-ratio",
        f"{mocker.speedup_ratio:g}",
        "--disaggregation-mode",
        group.role,
        *plane_flags(recipe),
        *(["--response-replay-trace-path", trace] if (trace := replay_trace(mocker, model_path)) else []),
        *mocker_block_size_flag(recipe, mocker),
    ]


def vllm_parallel_flags(spec: WorkerSpec) -> list[str]:
    """vLLM's parallelism flags. Its expert parallelism takes no size: with --enable-expert-parallel the
    experts spread over the worker's tensor-parallel GPUs (the recipe checks expert_parallel is that many)."""
    flags = ["--tensor-parallel-size", str(spec.tensor_parallel)]
    if spec.pipeline_parallel > 1:
        flags += ["--pipeline-parallel-size", str(spec.pipeline_parallel)]
    return flags + (["--enable-expert-parallel"] if spec.expert_parallel > 1 else [])


def vllm_flags(group: WorkerGroup, ports: dict[str, int], kv_block_size: int | None) -> list[str]:
    """What a vLLM worker is told beyond the flags every worker gets: its parallelism, NIXL for a disagg
    role, and where it publishes its KV events when the router routes by them (vLLM publishes none unless told)."""
    flags = vllm_parallel_flags(group.spec)
    if group.role != "agg":
        flags += ["--kv-transfer-config", json_flag(NIXL_KV_TRANSFER)]
    if "kv_events" in ports:
        events = {
            "publisher": "zmq",
            "topic": "kv-events",
            "endpoint": f"tcp://*:{ports['kv_events']}",
            "enable_kv_cache_events": True,
        }
        flags += ["--kv-events-config", json_flag(events)]
        # The block size the frontend hashes prompts by (config.kv_routing), unless the recipe's args set it.
        if "block_size" not in group.spec.args:
            flags += ["--block-size", str(kv_block_size)]
    return flags


def mocker_block_size_flag(recipe: Recipe, mocker: MockerSpec) -> list[str]:
    """The recipe's block size; under KV routing always the one the frontend hashes by, given explicitly (the
    mock engine publishes KV events by itself; its decode workers in disagg mode publish none)."""
    kv = recipe.frontend.router_mode == "kv"
    size = recipe.frontend.kv_cache_block_size if kv else mocker.block_size
    return ["--block-size", str(size)] if size else []


def kv_events_flag(recipe: Recipe, group: WorkerGroup) -> list[str]:
    """TensorRT-LLM publishes no KV events unless told: the KV router would have nothing to route on."""
    wanted = (
        recipe.engine == "trtllm"
        and recipe.frontend.router_mode == "kv"
        and "--publish-kv-events" not in group.spec.extra_args
    )
    return ["--publish-kv-events"] if wanted else []


def worker_command(
    recipe: Recipe,
    group: WorkerGroup,
    tools: Tools,
    model_path: str,
    engine_file: str | None,
    mpi_world: bool,
    ports: dict[str, int],
) -> list[str]:
    if recipe.engine == "mocker":
        return mocker_command(recipe, group, tools, model_path)
    command = [
        tools.python,
        "-m",
        worker_module(recipe),
        "--model",
        model_path,
        "--served-model-name",
        served_name(recipe, group),
        *plane_flags(recipe),
    ]
    if engine_file:
        command += ["--extra-engine-args", engine_file]
    if recipe.engine == "vllm":
        command += vllm_flags(group, ports, recipe.frontend.kv_cache_block_size)
    if group.role != "agg":
        command += ["--disaggregation-mode", group.role]
    if recipe.parsers.reasoning:
        command += ["--dyn-reasoning-parser", recipe.parsers.reasoning]
    if recipe.parsers.tool_call:
        command += ["--dyn-tool-call-parser", recipe.parsers.tool_call]
    if recipe.autoscale and recipe.engine == "trtllm":
        command.append("--publish-metrics")  # the forward-pass metrics the planner scales on (vLLM: an env)
    command += kv_events_flag(recipe, group) + engine_args(group.spec.args) + group.spec.extra_args
    # One MPI world per worker: TRT-LLM's launcher makes rank 0 the Dynamo worker, the rest its engine ranks.
    return [tools.llmapi_launch, *command] if mpi_world else command


def runs_as_mpi_world(ctx: PlanContext, name: str, node_count: int) -> bool:
    """TRT-LLM workers in a scheduler's job are one MPI world (a task per GPU, one srun step), as Dynamo's
    Slurm examples run them; elsewhere a worker on one node is a single process that spawns its own ranks.
    So are they in Slurm's OCI containers, which run one task per node and step (Slurm 22.05): a worker
    wider than a node cannot run there."""
    if ctx.recipe.engine != "trtllm":
        return False
    if ctx.container and ctx.container.kind == "oci":
        if node_count > 1:
            raise UserError(
                f"slurm.container_bundle: worker {name} spans {node_count} nodes, but Slurm's OCI containers "
                "run one task per node and step, so its MPI world cannot start; use container_image (Pyxis)"
            )
        return False
    return ctx.traits.has_allocation or node_count > 1


def engine_file_path(ctx: PlanContext, group: WorkerGroup) -> str | None:
    wanted = ctx.recipe.engine == "trtllm" and group.spec.engine_config
    return f"{ctx.run_dir}/engine/{group.name}.yaml" if wanted else None


def engine_files(ctx: PlanContext) -> list[EngineFile]:
    """One engine YAML per worker group, with the recipe's parallelism written over the file's."""
    return [
        EngineFile(
            path=f"engine/{group.name}.yaml",
            source=group.spec.engine_config,
            overrides={
                "tensor_parallel_size": group.spec.tensor_parallel,
                "pipeline_parallel_size": group.spec.pipeline_parallel,
                "moe_expert_parallel_size": group.spec.expert_parallel,
            },
        )
        for group in ctx.recipe.worker_groups()
        if engine_file_path(ctx, group)
    ]


def worker_ports(ctx: PlanContext, group: WorkerGroup, leader: Node) -> SystemPorts:
    """A worker's ports on its node, each from the deployment's block (so co-located workers never share
    one), and the env that fixes them. A vLLM worker (or its rehearsal) adds its NIXL side channel when it
    hands KV over (vLLM reads its port and host from the env: the node's address, as for Dynamo's own
    ports), and its KV event publisher when the router routes by KV events."""
    system = system_ports(ctx, leader)
    ports, env = dict(system.ports), dict(system.env)
    if ctx.recipe.layout_engine != "vllm":
        return SystemPorts(ports, env)
    if ctx.recipe.autoscale:
        # vLLM publishes the forward-pass metrics the planner scales on only when given a port for them.
        ports["fpm"] = ctx.ports.take(leader.name)
        env["DYN_FORWARDPASS_METRIC_PORT"] = str(ports["fpm"])
    if group.role != "agg":
        ports["nixl"] = ctx.ports.take(leader.name)
        env |= {"VLLM_NIXL_SIDE_CHANNEL_HOST": leader.address, "VLLM_NIXL_SIDE_CHANNEL_PORT": str(ports["nixl"])}
    if ctx.recipe.frontend.router_mode == "kv":
        ports["kv_events"] = ctx.ports.take(leader.name)
    return SystemPorts(ports, env)


def refuse_multinode_vllm(ctx: PlanContext, group: WorkerGroup, name: str, nodes: list[Node]) -> None:
    """Dynamo runs a vLLM worker wider than a node as a leader plus a `--headless` follower on each further
    node (vLLM's --nnodes/--node-rank/--master-addr): a process per node with a command of its own, which
    a plan's worker (one command, one MPI world at most) does not hold."""
    if ctx.recipe.layout_engine == "vllm" and len(nodes) > 1:
        raise UserError(
            f"{group.field}.tensor_parallel: worker {name} needs {group.spec.gpus} GPUs (tensor_parallel x "
            f"pipeline_parallel), more than a node has ({nodes[0].gpus}), so it would span {len(nodes)} nodes; "
            "slurmserve does not plan a vLLM worker across nodes (Dynamo runs one as a leader plus a --headless "
            "follower per node): keep tensor_parallel x pipeline_parallel within a node's GPUs, add replicas instead"
        )


def worker_process(
    ctx: PlanContext,
    group: WorkerGroup,
    placement: Placement,
    nodes: list[Node],
    model: ModelLocation,
    after: list[str],
) -> Process:
    recipe = ctx.recipe
    name = f"{group.name}-{placement.replica}"
    worker_nodes = [nodes[index] for index in placement.nodes]
    leader = worker_nodes[0]
    refuse_multinode_vllm(ctx, group, name, worker_nodes)
    mpi_world = runs_as_mpi_world(ctx, name, len(worker_nodes))
    ports = worker_ports(ctx, group, leader)
    rank_env = rank_rdma_env(worker_nodes, list(placement.gpus)) if mpi_world else []
    # The HCAs of all its GPUs for the process (what a single process spawning its own ranks can get);
    # under srun each rank gets its own from rank_env. The recipe's env may override either.
    rdma = rdma_env(nics_for_gpus(leader, list(placement.gpus)))
    env = (
        rdma
        | ctx.dynamo_env
        | model.env
        | pool_env(group.pool)
        | group.spec.env
        | advertise_env(leader.address)
        | {"CUDA_VISIBLE_DEVICES": ",".join(map(str, placement.gpus))}
        | ports.env
        | {"DYN_HEALTH_CHECK_ENABLED": "true"}
    )
    return Process(
        name=name,
        role=group.role,
        replica=placement.replica,
        nodes=[node.name for node in worker_nodes],
        gpus=list(placement.gpus),
        ports=ports.ports,
        env=env,
        command=worker_command(
            recipe, group, ctx.dynamo_tools, model.path, engine_file_path(ctx, group), mpi_world, ports.ports
        ),
        pool=group.pool.name if group.pool else None,
        module=worker_module(recipe),
        rank_env=rank_env if any(rank_env) else [],
        after=after,
        ready_url=f"http://{leader.address}:{ports.ports['system']}/health",
        ready_timeout_s=MOCKER_READY_TIMEOUT_S if recipe.engine == "mocker" else MODEL_LOAD_TIMEOUT_S,
        tasks=group.spec.gpus if mpi_world else 1,
        leftovers=TRTLLM_LEFTOVERS if recipe.engine == "trtllm" else [],
        in_container=ctx.in_container,
        log=log_of(name),
    )
