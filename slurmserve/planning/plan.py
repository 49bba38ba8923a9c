"""The plan: a value saying everything a backend needs. Each process's node(s), GPUs, ports, env,
command line, what it waits for and how to probe it ready. Backends and templates only read it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, PrivateAttr, ValidationError

from ..config.hosts import SlurmSpec, SshTarget
from ..config.lifetime import shown
from ..config.recipe import RestartPolicy
from ..errors import UserError
from .ports import block_ports

Role = Literal[
    "etcd", "nats", "frontend", "prefill", "decode", "agg", "router", "global_router", "prometheus", "planner"
]
WORKER_ROLES = ("prefill", "decode", "agg")
# The Dynamo component a process of each role registers as, which the frontend counts: a disaggregated
# prefill worker (and a prefill pool's router) is component "prefill"; decode and agg ones are "backend".
FRONTEND_COMPONENT_OF_ROLE = {
    "prefill": "prefill",
    "decode": "backend",
    "agg": "backend",
    "global_router": "global_router",
}


class PlanNode(BaseModel):
    name: str
    address: str
    gpus: int
    switch: str | None = None
    interface: str | None = None  # the control-plane IP interface, when the hosts file names it
    ssh: SshTarget | None = None  # how the ssh backend reaches the node


class Process(BaseModel):
    name: str
    role: Role
    replica: int | None = None
    nodes: list[str]
    gpus: list[int] = []
    ports: dict[str, int] = {}
    env: dict[str, str] = {}
    command: list[str]
    module: str | None = None  # the Python module the command runs (`python -m MODULE`), if any
    after: list[str] = []
    ready_url: str | None = None  # HTTP 200 here means the process is ready
    ready_timeout_s: int = 120
    tasks: int = 1  # MPI ranks of the worker (one world across its nodes); 1 for everything else
    fresh_dirs: list[str] = []  # emptied right before the process starts (a stale etcd would revive old leases)
    # Per MPI rank (srun's block order), what differs between ranks: each rank's own HCAs.
    rank_env: list[dict[str, str]] = []
    # Files a dead process of this kind leaves behind on its node (globs), removed before it starts
    # again unless a live process still holds them.
    leftovers: list[str] = []
    in_container: bool = False  # runs in the plan's container (with the image's own interpreter and tools)
    pool: str | None = None  # the pool (behind Dynamo's global router) its workers or local router serve
    # An autoscaled worker beyond its role's min: placed (GPUs, ports, NICs), started only when scaling adds it.
    standby: bool = False
    # A standby worker of `capacity: elastic`: started as a Slurm job of its own on its planned node, which
    # holds only its GPUs (Slurm chooses which: `gpus` counts within that job) and gives them back when it leaves.
    elastic: bool = False
    log: str  # relative to the run directory

    @property
    def is_worker(self) -> bool:
        return self.role in WORKER_ROLES

    @property
    def host(self) -> str:
        """Where the process starts: its first node (a worker wider than a node is one MPI world led from there)."""
        return self.nodes[0]

    @property
    def module_argv(self) -> list[str] | None:
        """What follows `python -m MODULE` in its command (launchers such as `env -C DIR` before it)."""
        command = self.command
        starts = [i for i in range(len(command) - 1) if command[i : i + 2] == ["-m", self.module]]
        return command[starts[0] + 2 :] if starts else None

    def parser_input(self) -> dict[str, Any] | None:
        """The process as Dynamo's argument parsers are asked about it (slurmserve.node.flagcheck's input):
        its module, what follows `-m MODULE`, and the environment its flags may default from. None when it
        runs no Python module."""
        argv = self.module_argv
        if not self.module or argv is None:
            return None
        return {"process": self.name, "module": self.module, "argv": argv, "env": self.env}


class ModelStage(BaseModel):
    """A model to fetch once into the shared cache (Hugging Face layout) before any worker starts."""

    repo: str
    revision: str  # a commit sha
    allow: list[str] = []
    ignore: list[str] = []
    cache: str

    def command(self, python: str) -> list[str]:
        patterns = [word for pattern in self.allow for word in ("--allow", pattern)]
        patterns += [word for pattern in self.ignore for word in ("--ignore", pattern)]
        return [
            python,
            "-m",
            "slurmserve.node.stage_model",
            "--repo",
            self.repo,
            "--revision",
            self.revision,
            "--cache",
            self.cache,
            *patterns,
        ]


RUN_BUNDLE = "oci"  # the run's own OCI bundle (config.json), in the run directory
# The in-job Prometheus (`observability.prometheus`): its configuration and its data, in the run directory.
PROMETHEUS_CONFIG = "prometheus/prometheus.yml"
PROMETHEUS_DATA = "prometheus/data"
PROMETHEUS_READY_PATH = "/-/ready"
GLOBAL_ROUTER_CONFIG = "global_router.json"  # Dynamo's global router's config, in the run directory
SERVED_DIR = "served"  # the run directory's links to the model folder under its served name


class PlanPool(BaseModel):
    """A pool behind the global router: its namespace, its workers and local router, and the SLA targets
    of a short request that the router's grid sends to it (None: only long requests reach it)."""

    name: str
    mode: Literal["agg", "prefill", "decode"]
    namespace: str
    workers: list[str]
    router: str
    canary_targets: dict[str, float] | None = None


class Container(BaseModel):
    """Where a Slurm job's Dynamo processes run: a Pyxis image, or an OCI bundle run by Slurm itself
    (`srun --container`). What runs inside uses the image's interpreter and tools; the run directory
    and the model are mounted at their own paths."""

    kind: Literal["pyxis", "oci"]
    source: str  # the image (Pyxis), or the bundle folder the run's own bundle takes its root from (OCI)
    mounts: list[str]  # SOURCE:TARGET[:OPTIONS]
    python: str
    llmapi_launch: str
    ucx_perftest: str

    def srun_flags(self, run_dir: str) -> list[str]:
        """What puts an srun step's tasks in the container."""
        if self.kind == "pyxis":
            return [f"--container-image={self.source}", f"--container-mounts={','.join(self.mounts)}"]
        return [f"--container={run_dir}/{RUN_BUNDLE}"]


class EngineFile(BaseModel):
    """An engine YAML copied into the run directory with the recipe's parallelism written over it."""

    path: str  # relative to the run directory
    source: str
    overrides: dict[str, int] = {}


class RoleScale(BaseModel):
    """How many workers of a role the planner may run: the deployment starts with `min`."""

    min: int
    max: int


class PlanAutoscale(BaseModel):
    """The planner's bounds per worker role (a role the recipe does not autoscale has min = max)."""

    capacity: Literal["reserved", "elastic"]
    roles: dict[str, RoleScale]


class PlanChain(BaseModel):
    """The chain's schedule: `jobs` jobs of `job_s` each, each successor ready `handover_s` before its
    predecessor's end, for `total_s` in all; the gateway on `gateway_host` (None: the submitting machine)."""

    total_s: int
    job_s: int
    handover_s: int
    jobs: int
    gateway_host: str | None = None

    def summary(self) -> str:
        gateway = f"host {self.gateway_host}" if self.gateway_host else "the machine that submits"
        return (
            f"a chain of {self.jobs} jobs of {shown(self.job_s)} for {shown(self.total_s)}, each successor ready "
            f"{shown(self.handover_s)} before its predecessor ends; gateway on {gateway}"
        )


class Plan(BaseModel):
    recipe: str
    backend: Literal["slurm", "ssh", "local"]
    run_name: str
    run_dir: str
    engine: Literal["trtllm", "vllm", "mocker"]
    mode: Literal["agg", "disagg"]
    model: str  # the served model name
    model_path: str  # what the workers load: a folder (the staged snapshot, a shipped model) or a hub id
    discovery: Literal["etcd", "file"]
    etcd_endpoint: str | None = None  # etcd's client URL, with etcd discovery
    endpoint: str
    port_block: int
    python: str
    nodes: list[PlanNode]
    processes: list[Process]
    workers_expected: dict[str, int]
    engine_files: list[EngineFile] = []
    model_stage: ModelStage | None = None
    # A short UCX transfer between every prefill node and its decode peers over the planned devices,
    # after the control plane and before any worker loads the model.
    kv_preflight: bool = False
    restart: RestartPolicy = RestartPolicy()
    scrape_interval_s: float = 5.0  # the supervisor's scrapes of /metrics for `status` (0: none)
    slurm: SlurmSpec | None = None
    container: Container | None = None
    warnings: list[str] = []  # settings of the recipe that this plan cannot honour, in words
    pools: list[PlanPool] = []  # several pools behind Dynamo's global router (none: one pool)
    global_router_config: dict[str, Any] | None = None  # written to GLOBAL_ROUTER_CONFIG
    served_link: str | None = None  # a link in the run directory to model_path, named as the model is served
    autoscale: PlanAutoscale | None = None  # Dynamo's planner chooses the worker counts (`planner` process)
    chain: PlanChain | None = None  # served as a chain of Slurm jobs (`lifetime:`)

    # Name indexes, built once: the supervisor looks processes up every tick.
    _processes: dict[str, Process] = PrivateAttr(default_factory=dict)
    _nodes: dict[str, PlanNode] = PrivateAttr(default_factory=dict)
    _stages: list[list[Process]] = PrivateAttr(default_factory=list)
    _launched: list[Process] = PrivateAttr(default_factory=list)

    def model_post_init(self, _context: object) -> None:
        self._processes = {process.name: process for process in self.processes}
        self._nodes = {node.name: node for node in self.nodes}
        self._launched = [process for process in self.processes if not process.standby]
        self._stages = _start_order(self._launched)

    @property
    def launched(self) -> list[Process]:
        """The processes the deployment starts: all but the standby workers, which only scaling starts."""
        return self._launched

    def node(self, name: str) -> PlanNode:
        return self._nodes[name]

    def checked_json(self) -> str:
        """plan.json's text, read back through this model first: what JSON cannot hold (an infinite number
        becomes null) is refused here, before anything starts, not by every command that reads the run later."""
        text = self.model_dump_json(indent=2) + "\n"
        try:
            again = Plan.model_validate_json(text)
        except ValidationError as error:
            failed = ".".join(map(str, error.errors()[0]["loc"]))
            raise UserError(f"plan.{failed}: plan.json would not read back; nothing was started") from None
        changed = first_difference(self.model_dump(), again.model_dump())
        if changed is not None:
            raise UserError(f"plan.{changed}: does not read back from plan.json as planned; nothing was started")
        return text

    @property
    def prometheus_url(self) -> str | None:
        """The in-job Prometheus's web address, when the recipe asked for one."""
        found = self._processes.get("prometheus")
        return found.ready_url.removesuffix(PROMETHEUS_READY_PATH) if found and found.ready_url else None

    def process(self, name: str) -> Process:
        found = self._processes.get(name)
        if found is None:
            raise UserError(
                f"run {self.run_name} has no process {name!r} (it has {', '.join(p.name for p in self.processes)})"
            )
        return found

    def host_node(self, process: Process) -> PlanNode:
        return self._nodes[process.host]

    def single_leaf(self) -> bool:
        """Every node under one known leaf switch: the job can ask Slurm to keep it so (--switches=1)."""
        return len({node.switch for node in self.nodes}) == 1 and self.nodes[0].switch is not None

    def gpus_per_node_used(self) -> int:
        """The most GPUs the deployment's job uses on any one node: what it asks Slurm for per node (an
        elastic worker's are its own job's)."""
        used: dict[str, int] = {}
        for process in (process for process in self.processes if not process.elastic):
            for node in process.nodes:
                used[node] = used.get(node, 0) + len(process.gpus)
        return max(used.values(), default=0)

    def stages(self) -> list[list[Process]]:
        """The launched processes grouped so that each group depends only on earlier ones: the start order."""
        return self._stages

    def kv_check_stage(self) -> int | None:
        """The stage (numbered from 1) before which the KV-path preflight runs: the first that starts a
        worker, so that the control plane is up and no model is loading yet. None: no preflight."""
        if not self.kv_preflight:
            return None
        return next((number for number, stage in enumerate(self._stages, 1) if any(p.is_worker for p in stage)), None)

    def spare_ports(self, node: str) -> list[int]:
        """Ports of the deployment's block that none of its processes uses on this node, highest first:
        inside the block no other deployment collides."""
        used = {port for p in self.processes if p.host == node for port in p.ports.values()}
        return [port for port in reversed(block_ports(self.port_block)) if port not in used]


def first_difference(planned: Any, read_back: Any, path: str = "") -> str | None:
    """The dotted path of the first value that differs between two dumps of a plan (None: none does)."""
    if isinstance(planned, dict) and isinstance(read_back, dict) and planned.keys() == read_back.keys():
        found = (first_difference(planned[key], read_back[key], f"{path}.{key}".lstrip(".")) for key in planned)
    elif isinstance(planned, list) and isinstance(read_back, list) and len(planned) == len(read_back):
        found = (
            first_difference(a, b, f"{path}[{index}]")
            for index, (a, b) in enumerate(zip(planned, read_back, strict=True))
        )
    else:
        return None if planned == read_back else path
    return next((where for where in found if where is not None), None)


def _start_order(processes: list[Process]) -> list[list[Process]]:
    done: set[str] = set()
    remaining = list(processes)
    stages = []
    while remaining:
        stage = [p for p in remaining if set(p.after) <= done]
        if not stage:
            raise UserError(f"processes {', '.join(p.name for p in remaining)} wait on each other or on no process")
        stages.append(stage)
        done |= {p.name for p in stage}
        remaining = [p for p in remaining if p.name not in done]
    return stages


def node_scratch(run_name: str) -> str:
    """A node-local folder for a run's data (etcd on network storage hits Raft timeouts)."""
    return f"/tmp/slurmserve-{run_name}"
