"""The planner: (recipe, hosts, run identity) -> Plan. Pure and deterministic: no I/O, no clock."""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal, NamedTuple

from ..config.hosts import ControlPlaneSpec, Hosts, Node, concrete_nodes
from ..config.recipe import MockerSpec, PoolSpec, Recipe, WorkerGroup
from ..errors import UserError
from ..resources import builtin_model_dir
from .placement import Placement, place_workers
from .plan import (
    GLOBAL_ROUTER_CONFIG,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DATA,
    PROMETHEUS_READY_PATH,
    SERVED_DIR,
    Container,
    EngineFile,
    ModelStage,
    Plan,
    PlanNode,
    PlanPool,
    Process,
    Role,
    node_scratch,
)
from .ports import PortAllocator, default_port_block
from .router_grid import RouterConfig, router_config
from .topology import nics_for_gpus, rank_rdma_env, rdma_env

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
MOCKER_READY_TIMEOUT_S = 120
ETCD_LEASE_TTL_S = 5
MODEL_LOAD_TIMEOUT_S = 3600  # a 120B model from a shared filesystem can take half an hour to load
# TRT-LLM's MoE workers keep expert state in shared-memory files that outlive a killed worker.
TRTLLM_LEFTOVERS = ["/dev/shm/moe_*"]
# The in-job Prometheus keeps what it scraped for as long as the run directory lives (its default: 15 days,
# after which `metrics RUN --open` would find the data deleted).
PROMETHEUS_RETENTION = "10y"
REPLAY_TRACE = "replay.jsonl"  # beside the tiny model (scripts/make_replay_trace.py)


def choose_discovery(recipe: Recipe, hosts: Hosts, used_nodes: list[Node]) -> Literal["etcd", "file"]:
    if recipe.discovery != "auto":
        if recipe.discovery == "file" and len(used_nodes) > 1:
            raise UserError(
                "discovery: file discovery works on one host only (inotify); this deployment spans several nodes, "
                "use etcd"
            )
        return recipe.discovery
    return "file" if hosts.backend == "local" and len(used_nodes) == 1 else "etcd"


def pinned(revision: str | None) -> bool:
    return revision is not None and COMMIT_SHA.fullmatch(revision) is not None


def model_location(recipe: Recipe, hosts: Hosts) -> tuple[str, dict[str, str]]:
    """The --model-path a worker gets, and the env it needs to read it."""
    model = recipe.model
    if not recipe.loads_recipe_model:
        return recipe.mocker.model_path or str(builtin_model_dir("tiny-mock")), {}
    if model.repo.startswith("builtin:"):
        return str(builtin_model_dir(model.repo.removeprefix("builtin:"))), {}
    if not model.on_hub or hosts.model_cache is None:
        return model.repo, {}
    env = {"HF_HOME": hosts.model_cache}
    if not pinned(model.revision):  # submit pins it first; a bare plan shows what workers would fetch
        return model.repo, env
    # A pinned snapshot on the shared filesystem, staged before the workers: every rank reads it, none downloads.
    snapshot = f"{hosts.model_cache}/hub/models--{model.repo.replace('/', '--')}/snapshots/{model.revision}"
    return snapshot, env | {"HF_HUB_OFFLINE": "1"}


def model_stage(recipe: Recipe, hosts: Hosts) -> ModelStage | None:
    """What to stage on the shared filesystem before the workers start, if anything."""
    model = recipe.model
    if not (recipe.loads_recipe_model and model.on_hub and hosts.model_cache and pinned(model.revision)):
        return None
    return ModelStage(
        repo=model.repo, revision=model.revision, allow=model.allow, ignore=model.ignore, cache=hosts.model_cache
    )


def container_for(hosts: Hosts, run_dir: str, model_path: str) -> Container | None:
    """The hosts file's container, for a Slurm job; it sees the run directory, the model cache (or the
    model's own folder) and the hosts file's mounts, each at its own path."""
    slurm = hosts.slurm
    if hosts.backend != "slurm" or not (slurm.container_image or slurm.container_bundle):
        return None
    shared = [run_dir, hosts.model_cache or (model_path if model_path.startswith("/") else None)]
    mounts = [f"{path}:{path}" for path in shared if path] + slurm.container_mounts
    tools = slurm.container_tools
    return Container(
        kind="pyxis" if slurm.container_image else "oci",
        source=slurm.container_image or slurm.container_bundle or "",
        mounts=mounts,
        python=tools.python,
        llmapi_launch=tools.llmapi_launch,
        ucx_perftest=tools.ucx_perftest,
    )


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


def plane_flags(recipe: Recipe) -> list[str]:
    """Explicit, since Dynamo's defaults differ between components and discovery backends."""
    return ["--request-plane", recipe.request_plane, "--event-plane", recipe.event_plane]


def replay_trace(mocker: MockerSpec, model_path: str) -> str | None:
    """The mocker's response replay trace: the recipe's, or the one shipped with the tiny model."""
    if mocker.replay_trace:
        return mocker.replay_trace
    shipped = builtin_model_dir("tiny-mock")
    return str(shipped / REPLAY_TRACE) if model_path == str(shipped) else None


def worker_module(recipe: Recipe) -> str:
    return "dynamo.mocker" if recipe.engine == "mocker" else "dynamo.trtllm"


class Tools(NamedTuple):
    """What the Dynamo processes run through: their interpreter, and TRT-LLM's MPI launcher."""

    python: str
    llmapi_launch: str


def served_name(recipe: Recipe, group: WorkerGroup) -> str:
    """The model name a worker registers. A pool's workers get one of their own: under the public name
    the frontend would reach them directly, around the global router."""
    return f"{group.pool.name}--{recipe.model.name}" if group.pool else recipe.model.name


def worker_command(
    recipe: Recipe, group: WorkerGroup, tools: Tools, model_path: str, engine_file: str | None, mpi_world: bool
) -> list[str]:
    role, spec = group.role, group.spec
    if recipe.engine == "mocker":
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
            role,
            *plane_flags(recipe),
            *(["--response-replay-trace-path", trace] if (trace := replay_trace(mocker, model_path)) else []),
        ]
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
    if role != "agg":
        command += ["--disaggregation-mode", role]
    if recipe.parsers.reasoning:
        command += ["--dyn-reasoning-parser", recipe.parsers.reasoning]
    if recipe.parsers.tool_call:
        command += ["--dyn-tool-call-parser", recipe.parsers.tool_call]
    command += engine_args(spec.args) + spec.extra_args
    # One MPI world per worker: TRT-LLM's launcher makes rank 0 the Dynamo worker, the rest its engine ranks.
    return [tools.llmapi_launch, *command] if mpi_world else command


def runs_as_mpi_world(ctx: _Context, name: str, node_count: int) -> bool:
    """TRT-LLM workers under Slurm are one srun MPI world (a task per GPU), as Dynamo's Slurm examples
    run them; elsewhere a worker on one node is a single process that spawns its own ranks. So are they
    in Slurm's OCI containers, which run one task per node and step (Slurm 22.05): a worker wider than
    a node cannot run there."""
    if ctx.recipe.engine != "trtllm":
        return False
    if ctx.container and ctx.container.kind == "oci":
        if node_count > 1:
            raise UserError(
                f"slurm.container_bundle: worker {name} spans {node_count} nodes, but Slurm's OCI containers "
                "run one task per node and step, so its MPI world cannot start; use container_image (Pyxis)"
            )
        return False
    return ctx.backend == "slurm" or node_count > 1


def advertise_env(address: str) -> dict[str, str]:
    """Unset, Dynamo advertises the machine's resolved IP: wrong on multi-homed nodes."""
    return {
        name: address
        for name in ("DYN_TCP_RPC_HOST", "DYN_TCP_RESPONSE_STREAM_HOST", "DYN_EVENT_PLANE_HOST", "DYN_SYSTEM_HOST")
    }


def log_of(name: str) -> str:
    return str(PurePosixPath("logs") / f"{name}.log")


@dataclass
class _Context:
    """What every part of one plan shares."""

    recipe: Recipe
    backend: str
    run_name: str
    run_dir: str
    python: str
    head: Node
    ports: PortAllocator
    dynamo_env: dict[str, str]  # what every Dynamo process of the deployment gets
    binaries: ControlPlaneSpec  # etcd's and nats-server's paths (None: found on PATH)
    container: Container | None  # where the Dynamo processes run (Slurm), None: on the nodes themselves

    @property
    def dynamo_tools(self) -> Tools:
        """The interpreter and launcher of the Dynamo processes: the image's in a container."""
        if self.container:
            return Tools(self.container.python, self.container.llmapi_launch)
        return Tools(self.python, "trtllm-llmapi-launch")


def head_service(
    ctx: _Context,
    role: Role,
    port_names: tuple[str, str],
    ready: tuple[str, str],
    command: Callable[[str, dict[str, int], str], list[str]],
) -> Process:
    """A control-plane server on the deployment's head node: two ports from the block, a fresh store on
    node-local disk, and a readiness URL (`ready`: which port, which path)."""
    address = ctx.head.address
    ports = {name: ctx.ports.take(ctx.head.name) for name in port_names}
    store = f"{node_scratch(ctx.run_name)}/{role}"
    return Process(
        name=role,
        role=role,
        nodes=[ctx.head.name],
        ports=ports,
        fresh_dirs=[store],
        command=command(address, ports, store),
        ready_url=f"http://{address}:{ports[ready[0]]}{ready[1]}",
        log=log_of(role),
    )


def etcd_command(binary: str, address: str, ports: dict[str, int], data_dir: str) -> list[str]:
    client, peer = f"http://{address}:{ports['client']}", f"http://{address}:{ports['peer']}"
    return [
        binary,
        "--name",
        "etcd",
        "--data-dir",
        data_dir,
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"etcd={peer}",
    ]


def nats_command(binary: str, address: str, ports: dict[str, int], store: str) -> list[str]:
    return [binary, "-js", "-a", address, "-p", str(ports["client"]), "-m", str(ports["monitor"]), "-sd", store]


def etcd_endpoint(address: str, etcd: Process) -> str:
    return f"http://{address}:{etcd.ports['client']}"


def control_plane(ctx: _Context, discovery: str) -> list[Process]:
    """etcd (or a file store) for discovery, NATS only when a plane needs it; fills in ctx.dynamo_env."""
    control = []
    if discovery == "etcd":
        etcd_of = functools.partial(etcd_command, ctx.binaries.etcd or "etcd")
        etcd = head_service(ctx, "etcd", ("client", "peer"), ("client", "/health"), etcd_of)
        control.append(etcd)
        ctx.dynamo_env |= {"DYN_DISCOVERY_BACKEND": "etcd", "ETCD_ENDPOINTS": etcd_endpoint(ctx.head.address, etcd)}
        # A short lease: the frontend drops a dead worker after ~4 s instead of etcd's default ~26 s (the
        # recipe's env may set another).
        ctx.dynamo_env.setdefault("ETCD_LEASE_TTL", str(ETCD_LEASE_TTL_S))
    else:
        ctx.dynamo_env |= {"DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": f"{ctx.run_dir}/discovery"}
    if ctx.recipe.needs_nats:
        nats_of = functools.partial(nats_command, ctx.binaries.nats_server or "nats-server")
        nats = head_service(ctx, "nats", ("client", "monitor"), ("monitor", "/healthz"), nats_of)
        control.append(nats)
        ctx.dynamo_env["NATS_SERVER"] = f"nats://{ctx.head.address}:{nats.ports['client']}"
    return control


def prometheus_process(ctx: _Context) -> Process:
    """The in-job Prometheus on the head node, beside etcd: it scrapes the run's targets from the start and
    keeps its data in the run directory, where `metrics RUN --open` finds it after the job."""
    address, port = ctx.head.address, ctx.ports.take(ctx.head.name)
    return Process(
        name="prometheus",
        role="prometheus",
        nodes=[ctx.head.name],
        ports={"http": port},
        command=[
            ctx.binaries.prometheus or "prometheus",
            f"--config.file={ctx.run_dir}/{PROMETHEUS_CONFIG}",
            f"--storage.tsdb.path={ctx.run_dir}/{PROMETHEUS_DATA}",
            f"--storage.tsdb.retention.time={PROMETHEUS_RETENTION}",
            f"--web.listen-address={address}:{port}",
        ],
        ready_url=f"http://{address}:{port}{PROMETHEUS_READY_PATH}",
        log=log_of("prometheus"),
    )


def engine_file_path(ctx: _Context, group: WorkerGroup) -> str | None:
    wanted = ctx.recipe.engine == "trtllm" and group.spec.engine_config
    return f"{ctx.run_dir}/engine/{group.name}.yaml" if wanted else None


def engine_files(ctx: _Context) -> list[EngineFile]:
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


def worker_process(
    ctx: _Context,
    group: WorkerGroup,
    placement: Placement,
    nodes: list[Node],
    model: tuple[str, dict[str, str]],
    after: list[str],
) -> Process:
    recipe, role, spec = ctx.recipe, group.role, group.spec
    name = f"{group.name}-{placement.replica}"
    leader = nodes[placement.nodes[0]]
    mpi_world = runs_as_mpi_world(ctx, name, len(placement.nodes))
    model_path, model_env = model
    ports, port_env = system_ports(ctx, leader)
    worker_nodes = [nodes[index] for index in placement.nodes]
    rank_env = rank_rdma_env(worker_nodes, list(placement.gpus)) if mpi_world else []
    # The HCAs of all its GPUs for the process (what a single process spawning its own ranks can get);
    # under srun each rank gets its own from rank_env. The recipe's env may override either.
    rdma = rdma_env(nics_for_gpus(leader, list(placement.gpus)))
    env = (
        rdma
        | ctx.dynamo_env
        | model_env
        | pool_env(group.pool)
        | spec.env
        | advertise_env(leader.address)
        | {"CUDA_VISIBLE_DEVICES": ",".join(map(str, placement.gpus))}
        | port_env
        | {"DYN_HEALTH_CHECK_ENABLED": "true"}
    )
    return Process(
        name=name,
        role=role,
        replica=placement.replica,
        nodes=[nodes[index].name for index in placement.nodes],
        gpus=list(placement.gpus),
        ports=ports,
        env=env,
        command=worker_command(recipe, group, ctx.dynamo_tools, model_path, engine_file_path(ctx, group), mpi_world),
        pool=group.pool.name if group.pool else None,
        module=worker_module(recipe),
        rank_env=rank_env if any(rank_env) else [],
        after=after,
        ready_url=f"http://{leader.address}:{ports['system']}/health",
        ready_timeout_s=MOCKER_READY_TIMEOUT_S if recipe.engine == "mocker" else MODEL_LOAD_TIMEOUT_S,
        tasks=spec.gpus if mpi_world else 1,
        leftovers=TRTLLM_LEFTOVERS if recipe.engine == "trtllm" else [],
        in_container=ctx.container is not None,
        log=log_of(name),
    )


def pool_env(pool: PoolSpec | None) -> dict[str, str]:
    """A pool's processes live in its Dynamo namespace."""
    return pool.env | {"DYN_NAMESPACE": pool.dynamo_namespace} if pool else {}


def system_ports(ctx: _Context, node: Node) -> tuple[dict[str, int], dict[str, str]]:
    """A Dynamo process's status and request-plane ports on its node, and the env that fixes them. Both
    fixed: an ephemeral request-plane port could land in another deployment's block."""
    system, rpc = ctx.ports.take(node.name), ctx.ports.take(node.name)
    return {"system": system, "rpc": rpc}, {"DYN_SYSTEM_PORT": str(system), "DYN_TCP_RPC_PORT": str(rpc)}


# Dynamo's routers answer /health 503 ("notready") for ever unless told to start ready: they register
# no health-check payload of their own (seen with ai-dynamo 1.6.1).
ROUTER_HEALTH_ENV = {"DYN_SYSTEM_STARTING_HEALTH_STATUS": "ready"}


def router_process(ctx: _Context, pool: PoolSpec, workers: list[str]) -> Process:
    """A pool's local router on the head node: it serves `<pool namespace>.router.generate`, which the
    global router forwards to, over the pool's workers (`prefill` component for prefill workers)."""
    ports, port_env = system_ports(ctx, ctx.head)
    component = "prefill" if pool.mode == "prefill" else "backend"
    address = ctx.head.address
    return Process(
        name=f"{pool.name}-router",
        role="router",
        pool=pool.name,
        nodes=[ctx.head.name],
        ports=ports,
        env=ctx.dynamo_env | pool_env(pool) | advertise_env(address) | port_env | ROUTER_HEALTH_ENV,
        module="dynamo.router",
        command=[
            ctx.dynamo_tools.python,
            "-m",
            "dynamo.router",
            "--endpoint",
            f"{pool.dynamo_namespace}.{component}.generate",
        ],
        after=workers,
        ready_url=f"http://{address}:{ports['system']}/health",
        in_container=ctx.container is not None,
        log=log_of(f"{pool.name}-router"),
    )


def served_link(recipe: Recipe, model_path: str) -> str | None:
    """Where the run directory links the model folder under its served name (`served/NAME`), for the
    global router: in 1.6.1 its --model-name is both the model's path and the name it serves, so it starts
    in `served/` and is given the served name. None: the model is a hub id, served under that id."""
    if not PurePosixPath(model_path).is_absolute():
        return None
    name = recipe.model.name
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise UserError(
            f"model.served_name {name!r}: with pools it names a folder in the run directory; use a name "
            "like org/model, without empty, '.' or '..' parts"
        )
    return f"{SERVED_DIR}/{name}"


def public_model(recipe: Recipe, model_path: str) -> str:
    """The name the global router serves the model under (what clients ask for)."""
    return recipe.model.name if served_link(recipe, model_path) else model_path


def global_router_process(ctx: _Context, routing: RouterConfig, model_path: str, routers: list[str]) -> Process:
    """Dynamo's global router on the head node: it picks a pool per request (its config in the run
    directory) and serves the public model in its own namespace, which the frontend is scoped to."""
    assert ctx.recipe.global_router is not None
    namespace = ctx.recipe.global_router.namespace
    ports, port_env = system_ports(ctx, ctx.head)
    in_served = ["env", "-C", f"{ctx.run_dir}/{SERVED_DIR}"] if served_link(ctx.recipe, model_path) else []
    defaults = [word for target, value in routing.default_targets.items() for word in default_flag(target, value)]
    address = ctx.head.address
    return Process(
        name="global-router",
        role="global_router",
        nodes=[ctx.head.name],
        ports=ports,
        env=ctx.dynamo_env | {"DYN_NAMESPACE": namespace} | advertise_env(address) | port_env | ROUTER_HEALTH_ENV,
        module="dynamo.global_router",
        command=[
            *in_served,
            ctx.dynamo_tools.python,
            "-m",
            "dynamo.global_router",
            "--config",
            f"{ctx.run_dir}/{GLOBAL_ROUTER_CONFIG}",
            "--model-name",
            public_model(ctx.recipe, model_path),
            "--namespace",
            namespace,
            *defaults,
        ],
        after=routers,
        ready_url=f"http://{address}:{ports['system']}/health",
        in_container=ctx.container is not None,
        log=log_of("global-router"),
    )


def default_flag(target: str, value: float) -> list[str]:
    """ttft_target -> --default-ttft-target-ms VALUE."""
    return [f"--default-{target.removesuffix('_target')}-target-ms", f"{value:g}"]


def pool_processes(ctx: _Context, workers: list[Process], model_path: str) -> tuple[list[Process], RouterConfig]:
    """Each pool's local router, then the global router (with its config): after the workers, before
    the frontend."""
    routing = router_config(ctx.recipe)
    routers = [
        router_process(ctx, pool, [worker.name for worker in workers if worker.pool == pool.name])
        for pool in ctx.recipe.pools
    ]
    return [*routers, global_router_process(ctx, routing, model_path, [r.name for r in routers])], routing


def frontend_process(ctx: _Context, http_port: int, after: list[str]) -> Process:
    address, response_port = ctx.head.address, ctx.ports.take(ctx.head.name)
    return Process(
        name="frontend",
        role="frontend",
        nodes=[ctx.head.name],
        ports={"http": http_port, "response_stream": response_port},
        env=ctx.dynamo_env | advertise_env(address) | {"DYN_TCP_RESPONSE_STREAM_PORT": str(response_port)},
        module="dynamo.frontend",
        command=[
            ctx.dynamo_tools.python,
            "-m",
            "dynamo.frontend",
            "--http-host",
            address,
            "--http-port",
            str(http_port),
            "--router-mode",
            ctx.recipe.frontend.router_mode,
            *plane_flags(ctx.recipe),
            # Scoped to the global router's namespace: it sees the public model there, never a pool's.
            *(["--namespace", ctx.recipe.global_router.namespace] if ctx.recipe.global_router else []),
            *ctx.recipe.frontend.extra_args,
        ],
        after=after,
        ready_url=f"http://{address}:{http_port}/health",
        in_container=ctx.container is not None,
        log=log_of("frontend"),
    )


def make_plan(
    recipe: Recipe,
    hosts: Hosts,
    *,
    run_name: str,
    run_dir: str,
    python: str,
    port_block: int | None = None,
    kv_preflight: bool | None = None,
    binaries: ControlPlaneSpec | None = None,
) -> Plan:
    """kv_preflight None: on for real engines (a bad KV path costs a model load), off for the mock one.
    binaries: the etcd and nats-server to run (default: the hosts file's, else found on the nodes' PATH)."""
    nodes = concrete_nodes(hosts)
    groups = {group.field: group for group in recipe.worker_groups()}
    placements = place_workers([(field, group.spec) for field, group in groups.items()], nodes)
    used_nodes = [nodes[index] for index in sorted({index for placement in placements for index in placement.nodes})]
    head = used_nodes[0]  # control plane and frontend live on the first node of the deployment
    block = default_port_block(run_name) if port_block is None else port_block
    fixed_http = recipe.frontend.http_port
    ctx = _Context(
        recipe=recipe,
        backend=hosts.backend,
        run_name=run_name,
        run_dir=run_dir,
        python=python,
        head=head,
        ports=PortAllocator(block, {fixed_http} if fixed_http else set()),
        # Logs go to files, not terminals: no colour codes in them.
        dynamo_env={"DYN_SDK_DISABLE_ANSI_LOGGING": "1", **recipe.env},
        binaries=binaries or hosts.control_plane,
        container=container_for(hosts, run_dir, model_location(recipe, hosts)[0]),
    )

    discovery = choose_discovery(recipe, hosts, used_nodes)
    control = control_plane(ctx, discovery)
    # Beside the control plane, gating nothing: a Prometheus that fails to start costs no deployment.
    watchers = [prometheus_process(ctx)] if recipe.observability.prometheus else []
    control_names = [process.name for process in control]
    model = model_location(recipe, hosts)
    workers = [
        worker_process(ctx, groups[placement.role], placement, nodes, model, control_names) for placement in placements
    ]
    routing = pool_processes(ctx, workers, model[0]) if recipe.pools else None
    routers = routing[0] if routing else []
    http_port = fixed_http or ctx.ports.take(head.name)
    frontend = frontend_process(ctx, http_port, [p.name for p in routers[-1:]] or [worker.name for worker in workers])
    processes = [*control, *watchers, *workers, *routers, frontend]
    check_unique_names(processes)

    return Plan(
        recipe=recipe.name,
        backend=hosts.backend,
        run_name=run_name,
        run_dir=run_dir,
        engine=recipe.engine,
        mode=recipe.mode,
        model=public_model(recipe, model[0]) if recipe.pools else recipe.model.name,
        model_path=model[0],
        discovery=discovery,
        etcd_endpoint=ctx.dynamo_env.get("ETCD_ENDPOINTS") if discovery == "etcd" else None,
        endpoint=f"http://{head.address}:{http_port}",
        port_block=block,
        python=python,
        nodes=[
            PlanNode(name=n.name, address=n.address, gpus=n.gpus, switch=n.switch, interface=n.interface, ssh=n.ssh)
            for n in used_nodes
        ],
        processes=processes,
        # With pools the frontend routes to the global router only.
        workers_expected={"global_router": 1} if routing else {g.role: g.spec.replicas for g in groups.values()},
        pools=pools_of(recipe, workers, routing[1]) if routing else [],
        global_router_config=routing[1].config if routing else None,
        served_link=served_link(recipe, model[0]) if routing else None,
        engine_files=engine_files(ctx),
        model_stage=model_stage(recipe, hosts),
        kv_preflight=recipe.engine == "trtllm" if kv_preflight is None else kv_preflight,
        restart=recipe.restart,
        scrape_interval_s=recipe.observability.scrape_interval_s,
        slurm=hosts.slurm if hosts.backend == "slurm" else None,
        container=ctx.container,
        warnings=ignored_settings_warning(recipe),
    )


def check_unique_names(processes: list[Process]) -> None:
    """Each process has a name of its own: the launch script, PID records and logs know them by name, so of
    two with one name only one would start. A pool's name makes its processes' names (a pool `global` has
    a router `global-router`, Dynamo's global router's name)."""
    # Counted once: a plan may hold thousands of processes.
    twice = sorted(name for name, count in Counter(process.name for process in processes).items() if count > 1)
    if twice:
        # Only a pool's processes take a name from the recipe; every other process's name is fixed.
        pool = next(process.pool for process in processes if process.name == twice[0] and process.pool)
        raise UserError(
            f"pools.{pool}.name: pool {pool} makes a process named {twice[0]}, the name of another process of "
            "the deployment; give the pool another name"
        )


def pools_of(recipe: Recipe, workers: list[Process], routing: RouterConfig) -> list[PlanPool]:
    return [
        PlanPool(
            name=pool.name,
            mode=pool.mode,
            namespace=pool.dynamo_namespace,
            workers=[worker.name for worker in workers if worker.pool == pool.name],
            router=f"{pool.name}-router",
            canary_targets=routing.canary_targets.get(pool.name),
        )
        for pool in recipe.pools
    ]


def ignored_settings_warning(recipe: Recipe) -> list[str]:
    ignored = recipe.ignored_settings()
    if not ignored:
        return []
    why = (
        "the mock engine takes no TensorRT-LLM settings" if recipe.engine == "mocker" else "they are the mock engine's"
    )
    return [f"engine {recipe.engine} ignores {', '.join(ignored)} ({why}; placement, ports and env are as planned)"]
