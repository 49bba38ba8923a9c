"""Recipes: what to serve and in which worker shapes; the built-in catalogue; `--set` overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from ..errors import UserError, did_you_mean
from ..resources import builtin_recipes_dir
from .autoscale import AutoscaleSpec
from .engine_schema import resolve_engine_config
from .fields import (
    AbsolutePath,
    Count,
    EnvKey,
    EnvValue,
    Factor,
    FlagName,
    FolderNames,
    Identifier,
    Integer,
    Milliseconds,
    ModelRepo,
    MountablePath,
    PositiveCount,
    Revision,
    Seconds,
    Text,
    Tokens,
    WholeMilliseconds,
)
from .files import Strict, read_yaml_mapping
from .kv_routing import (
    BlockSize,
    agreed_block_size,
    mocker_block_size,
    refuse_disabled_block_reuse,
    trtllm_block_size,
    vllm_block_size,
)
from .lifetime import LifetimeSpec
from .overrides import apply_overrides
from .problems import describe_validation_error
from .runtimes import runtime_for

ArgValue = Text | Integer | float | bool


class ModelSpec(Strict):
    repo: ModelRepo = Field(
        description="Hugging Face repo id, a local path, or builtin:NAME (a model folder shipped with slurmserve)"
    )
    revision: Revision | None = None
    allow: list[Text] = []
    ignore: list[Text] = []
    served_name: FolderNames | None = None  # with pools, also a folder of the run directory

    @property
    def name(self) -> str:
        return self.served_name or self.repo

    @property
    def on_hub(self) -> bool:
        """A Hugging Face repo id, as opposed to a local folder or one shipped with slurmserve."""
        return not self.repo.startswith(("builtin:", "/", "~", "."))


class FrontendSpec(Strict):
    router_mode: Literal["round-robin", "random", "kv"] = "round-robin"
    # None: a port from the deployment's own block, so two deployments on one node never collide.
    http_port: int | None = Field(None, ge=1024, le=65535)
    # router_mode kv: the router's KV block size in tokens (None: the workers', which it must equal: kv_routing)
    kv_cache_block_size: Tokens | None = None
    extra_args: list[Text] = []


class WorkerSpec(Strict):
    replicas: PositiveCount = 1
    tensor_parallel: PositiveCount = 1
    pipeline_parallel: PositiveCount = 1
    expert_parallel: PositiveCount = 1
    engine_config: Text | None = None  # relative to engine_configs/, or an absolute path
    args: dict[FlagName, ArgValue] = {}  # engine flags: max_num_tokens: 20000 -> --max-num-tokens 20000
    extra_args: list[Text] = []
    env: dict[EnvKey, EnvValue] = {}

    @property
    def gpus(self) -> int:
        """Expert parallelism shares the tensor-parallel GPUs; it does not add any."""
        return self.tensor_parallel * self.pipeline_parallel


class ParserSpec(Strict):
    reasoning: Identifier | None = None
    tool_call: Identifier | None = None


class MockerSpec(Strict):
    """How Dynamo's mock engine stands in for the real one (recipes with engine: mocker, and rehearsals)."""

    # The mocker needs a config and a tokenizer, never weights; None = the tiny model shipped with slurmserve.
    model_path: MountablePath | None = None
    # True: load the recipe's own model (staged from the hub like a real engine's) instead.
    use_recipe_model: bool = False
    speedup_ratio: Factor = 100.0
    # What the mocker answers a request annotated `output_replay_id:osl-N` (rows of printable token ids,
    # so that a benchmark sees text); None: the trace shipped with the tiny model, when it is the model.
    replay_trace: AbsolutePath | None = None
    block_size: Tokens | None = None  # tokens per KV block (None: the mock engine's default)


WorkerRole = Literal["agg", "prefill", "decode"]
Engine = Literal["trtllm", "vllm", "mocker"]
RealEngine = Literal["trtllm", "vllm"]


class PoolSpec(Strict):
    """One pool behind Dynamo's global router: its own Dynamo namespace, workers and local router. An agg
    pool serves whole requests; in a disagg deployment prefill pools and decode pools are apart (each
    namespace holds one local router, so one role)."""

    name: Identifier
    mode: WorkerRole = "agg"
    namespace: Identifier | None = None  # its Dynamo namespace (default: the pool's name)
    agg: WorkerSpec | None = None
    prefill: WorkerSpec | None = None
    decode: WorkerSpec | None = None
    env: dict[EnvKey, EnvValue] = {}  # for the pool's workers and router
    mocker: MockerSpec | None = None  # the pool's own mock-engine settings (speedup_ratio...), over the recipe's

    @model_validator(mode="after")
    def _one_section_for_its_mode(self) -> PoolSpec:
        given = [role for role in ("agg", "prefill", "decode") if getattr(self, role) is not None]
        if given != [self.mode]:
            raise ValueError(f"pool {self.name} of mode {self.mode} takes one {self.mode} section (it has: {given})")
        return self

    @property
    def dynamo_namespace(self) -> str:
        return self.namespace or self.name

    @property
    def workers_name(self) -> str:
        """What its workers are called (`NAME-0`...): the pool's name, with its role where the name does not
        already say it (`fast-agg`, but `prefill-fast`, not `prefill-fast-prefill`)."""
        return self.name if self.mode in self.name.split("-") else f"{self.name}-{self.mode}"

    @property
    def worker(self) -> WorkerSpec:
        spec: WorkerSpec = getattr(self, self.mode)
        return spec


class TierSpec(Strict):
    """The short form of the global router's grid: a request goes to the first tier whose every limit it
    is under (its TTFT/ITL targets, its prompt or context length); the last tier has no limits."""

    pool: Identifier
    ttft_ms: WholeMilliseconds | None = None
    itl_ms: WholeMilliseconds | None = None
    isl_tokens: Tokens | None = None  # prefill tiers: prompts shorter than this
    context_tokens: Tokens | None = None  # decode tiers: contexts shorter than this


class GlobalRouterSpec(Strict):
    """Dynamo's global router: a selection grid as Dynamo writes it (`*_pool_selection_strategy`, with the
    pool counts and namespaces optional: slurmserve fills them in from `pools:`), or the short form
    (`tiers` in agg mode, `prefill_tiers` and `decode_tiers` in disagg mode)."""

    mode: Literal["agg", "disagg"] = "agg"
    namespace: Identifier = "global-router"  # the global router's and the frontend's Dynamo namespace
    tiers: list[TierSpec] = []
    prefill_tiers: list[TierSpec] = []
    decode_tiers: list[TierSpec] = []
    num_agg_pools: Count | None = None
    agg_pool_dynamo_namespaces: list[Identifier] | None = None
    agg_pool_priorities: list[Integer] | None = None
    agg_pool_selection_strategy: dict[str, object] | None = None
    num_prefill_pools: Count | None = None
    prefill_pool_dynamo_namespaces: list[Identifier] | None = None
    prefill_pool_priorities: list[Integer] | None = None
    prefill_pool_selection_strategy: dict[str, object] | None = None
    num_decode_pools: Count | None = None
    decode_pool_dynamo_namespaces: list[Identifier] | None = None
    decode_pool_priorities: list[Integer] | None = None
    decode_pool_selection_strategy: dict[str, object] | None = None
    enable_priority_retry: bool = False
    # Dynamo 1.6.1 does not validate TensorRT-LLM disagg pools behind the global router: refused unless set.
    allow_unvalidated_trtllm_disagg: bool = False


GoodputMetric = Literal["time_to_first_token", "inter_token_latency", "request_latency"]


class BenchSpec(Strict):
    """What `slurmserve bench` runs by default: one aiperf run per concurrency point, as Dynamo's
    perf.yaml files run them (streaming chat, fixed ISL/OSL, 10x concurrency requests, the concurrency
    as warm-up, a fixed seed, ignore_eos)."""

    endpoint_type: Literal["chat", "completions"] = "chat"
    isl: Tokens = 128
    osl: Tokens = 64
    concurrency: list[PositiveCount] = []
    concurrency_per_gpu: list[PositiveCount] = []  # times the deployment's GPUs
    # perf.yaml's "10x concurrency"; a point measures at least 200 requests and 30 s unless --quick (see
    # bench.workload.Workload.points): 10 requests at concurrency 1 make the p99 the slowest request.
    requests_per_concurrency: PositiveCount = 10
    warmup_requests: Count | None = None  # None: as many as the concurrency
    seed: Integer = 100
    ignore_eos: bool = True  # and min_tokens = max_tokens = osl: every output exactly osl tokens
    extra_inputs: dict[FlagName, ArgValue] = {}  # further request fields, e.g. temperature: 0.0
    goodput: dict[GoodputMetric, Milliseconds] = {}  # SLOs in ms for aiperf's goodput

    @model_validator(mode="after")
    def _one_kind_of_concurrency(self) -> BenchSpec:
        if self.concurrency and self.concurrency_per_gpu:
            raise ValueError("set concurrency or concurrency_per_gpu, not both")
        return self

    def concurrencies(self, gpus: int) -> list[int]:
        """The concurrency points for a deployment of `gpus` GPUs (default: 1)."""
        if self.concurrency_per_gpu:
            return [per_gpu * max(gpus, 1) for per_gpu in self.concurrency_per_gpu]
        return self.concurrency or [1]


class ObservabilitySpec(Strict):
    """How the deployment is watched beyond its health: the supervisor's scrapes of every /metrics, and
    on request a Prometheus server of the job's own that keeps every series in the run directory."""

    scrape_interval_s: Seconds = 5.0  # live figures in `status`; 0: no scraping
    prometheus: bool = False


class RestartPolicy(Strict):
    """What the supervisor does when a process that was serving dies: start it again in place (same
    node, GPUs and ports), at most `max_restarts` times within `window_s`, waiting `backoff_s` before
    the first restart and twice as long before each further one in the window."""

    # Each restart in the window doubles the wait: beyond about a thousand, backoff_s * 2**restarts is no float.
    max_restarts: Annotated[int, Field(ge=0, le=100)] = 3
    backoff_s: Seconds = 1.0
    window_s: Annotated[Seconds, Field(gt=0)] = 600.0
    # When the budget is spent: cancel the whole deployment (True) or leave what still runs serving (False).
    fail_fast: bool = False


class WorkerGroup(NamedTuple):
    """The workers of one section: `name` names its processes (`NAME-0`...), `field` its place in the recipe."""

    name: str
    role: WorkerRole
    spec: WorkerSpec
    pool: PoolSpec | None

    @property
    def field(self) -> str:
        return f"pools.{self.pool.name}.{self.role}" if self.pool else self.role


class Recipe(Strict):
    name: Identifier
    description: str = ""
    model: ModelSpec
    engine: Engine = "trtllm"
    mode: Literal["agg", "disagg"] = "disagg"
    frontend: FrontendSpec = FrontendSpec()
    prefill: WorkerSpec | None = None
    decode: WorkerSpec | None = None
    agg: WorkerSpec | None = None
    parsers: ParserSpec = ParserSpec()
    discovery: Literal["auto", "etcd", "file"] = "auto"  # auto: a file store on one host, etcd across several
    request_plane: Literal["tcp", "nats"] = "tcp"
    event_plane: Literal["zmq", "nats"] = "zmq"
    env: dict[EnvKey, EnvValue] = {}
    container_image: Text | None = None  # an imported manifest's image; hosts' `container_image: recipe` runs it
    mocker: MockerSpec = MockerSpec()
    restart: RestartPolicy = RestartPolicy()
    bench: BenchSpec = BenchSpec()
    observability: ObservabilitySpec = ObservabilitySpec()
    pools: list[PoolSpec] = []  # several pools behind Dynamo's global router (none: one pool, as ever)
    global_router: GlobalRouterSpec | None = None
    autoscale: AutoscaleSpec | None = None  # Dynamo's planner chooses the worker counts, between per-role bounds
    lifetime: LifetimeSpec | None = None  # served as a chain of Slurm jobs behind one gateway (`submit --lifetime`)
    # The real engine a rehearsal (`--set engine=mocker`) stands in for: its workers keep that engine's
    # ports and env. Set by load_recipe from the file's own engine, never written in a recipe.
    _rehearses: RealEngine | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _sections_match_mode(self) -> Recipe:
        if self.pools or self.global_router:
            self._check_pools()
        elif self.mode == "disagg":
            missing = [role for role in ("prefill", "decode") if getattr(self, role) is None]
            if missing:
                raise ValueError(f"mode disagg needs a {' and a '.join(missing)} section")
            if self.agg is not None:
                raise ValueError("mode disagg takes prefill and decode sections, not agg")
        else:
            if self.agg is None:
                raise ValueError("mode agg needs an agg section")
            if self.prefill is not None or self.decode is not None:
                raise ValueError("mode agg takes an agg section, not prefill/decode")
        self._check_engine_settings()
        if self.lifetime is not None and (self.autoscale is not None or self.pools):
            raise ValueError(f"lifetime: not with {'autoscale' if self.autoscale else 'pools'} for now")
        if self.autoscale is not None:
            sections = {role: getattr(self, role) for role in ("prefill", "decode", "agg")}
            self.autoscale.check_against(self.mode, bool(self.pools), self.discovery, sections)
        return self

    def _check_engine_settings(self) -> None:
        """What only TensorRT-LLM reads, refused under vLLM: set, it would silently change nothing."""
        if self.engine != "vllm":
            return
        for group in self.worker_groups():
            if group.spec.engine_config is not None:
                raise ValueError(
                    f"{group.field}.engine_config: engine vllm takes no engine config (TensorRT-LLM's YAML): vLLM is "
                    f"configured by command-line flags; put its settings in {group.field}.args "
                    "(gpu_memory_utilization: 0.9 -> --gpu-memory-utilization 0.9)"
                )
            spec = group.spec
            if spec.expert_parallel not in (1, spec.tensor_parallel):
                raise ValueError(
                    f"{group.field}.expert_parallel: vLLM's expert parallelism spans a worker's tensor-parallel GPUs "
                    f"(--enable-expert-parallel takes no size): set it to 1 or to tensor_parallel "
                    f"({spec.tensor_parallel}), not {spec.expert_parallel}"
                )
        if self.global_router and self.global_router.allow_unvalidated_trtllm_disagg:
            raise ValueError(
                "global_router.allow_unvalidated_trtllm_disagg: a TensorRT-LLM setting; Dynamo validates vLLM's "
                "disagg pools, so engine vllm needs no such allowance"
            )

    def _check_pools(self) -> None:
        router = self.global_router
        if router is None or not self.pools:
            raise ValueError("pools and global_router go together: pools behind Dynamo's global router")
        taken = [role for role in ("agg", "prefill", "decode") if getattr(self, role) is not None]
        if taken:
            raise ValueError(f"a recipe with pools has its workers in the pools, not in {', '.join(taken)}")
        if self.mode != router.mode:
            raise ValueError(f"mode {self.mode} and global_router.mode {router.mode} differ")
        names = [pool.name for pool in self.pools]
        namespaces = [pool.dynamo_namespace for pool in self.pools] + [router.namespace]
        for kind, values in (("name", names), ("namespace", namespaces)):
            twice = sorted({value for value in values if values.count(value) > 1})
            if twice:
                raise ValueError(f"pools: {kind} {', '.join(twice)} is used twice (each pool needs its own)")
        modes = {pool.mode for pool in self.pools}
        if router.mode == "agg" and modes != {"agg"}:
            raise ValueError("global_router.mode agg takes agg pools only")
        if router.mode == "disagg" and modes != {"prefill", "decode"}:
            raise ValueError("global_router.mode disagg takes prefill pools and decode pools (at least one of each)")

    def worker_groups(self) -> list[WorkerGroup]:
        """The worker sections in start order (prefill before decode, as Dynamo's examples do); with pools,
        each pool's section in the recipe's order."""
        if self.pools:
            return [WorkerGroup(pool.workers_name, pool.mode, pool.worker, pool) for pool in self.pools]
        roles: tuple[WorkerRole, ...] = ("prefill", "decode") if self.mode == "disagg" else ("agg",)
        return [WorkerGroup(role, role, getattr(self, role), None) for role in roles]

    def worker_roles(self) -> list[tuple[str, WorkerSpec]]:
        """(name, section) of every worker group: the role, or with pools the pool's workers_name."""
        return [(group.name, group.spec) for group in self.worker_groups()]

    def mocker_of(self, pool: PoolSpec | None) -> MockerSpec:
        """The mock engine's settings for a pool's workers: the pool's own over the recipe's."""
        if pool is None or pool.mocker is None:
            return self.mocker
        return self.mocker.model_copy(update={key: getattr(pool.mocker, key) for key in pool.mocker.model_fields_set})

    @property
    def loads_recipe_model(self) -> bool:
        """Whether the workers load model.repo (a real engine, or a mocker told to), not the tiny model."""
        return self.engine != "mocker" or self.mocker.use_recipe_model

    @property
    def layout_engine(self) -> Engine:
        """The engine whose ports and env the workers get: a rehearsal keeps those of the one it stands in for."""
        return self._rehearses or self.engine

    def rehearsing(self, written: object) -> None:
        """Note the engine the recipe file names, when `--set engine=mocker` rehearses it."""
        if self.engine == "mocker" and written in ("trtllm", "vllm"):
            self._rehearses = "vllm" if written == "vllm" else "trtllm"

    def ignored_settings(self) -> list[str]:
        """Settings the chosen engine cannot take (dotted paths): a real engine's under the mock engine
        (a rehearsal keeps placement, ports and env), the mock engine's under a real engine."""
        if self.engine != "mocker":
            return [f"mocker.{key}" for key in sorted(self.mocker.model_fields_set)]
        ignored = [f"parsers.{key}" for key in ("reasoning", "tool_call") if getattr(self.parsers, key)]
        for group in self.worker_groups():
            ignored += [
                f"{group.field}.{key}" for key in ("engine_config", "args", "extra_args") if getattr(group.spec, key)
            ]
        return ignored

    @property
    def needs_gpus(self) -> bool:
        """A real engine runs on GPUs; the mock engine needs none (it only simulates their timing)."""
        return self.engine != "mocker"

    @property
    def needs_nats(self) -> bool:
        return "nats" in (self.request_plane, self.event_plane)


def builtin_recipe_names() -> list[str]:
    return sorted(path.stem for path in builtin_recipes_dir().glob("*.yaml"))


def recipe_path(name_or_path: str) -> Path:
    """A recipe file by path, or a built-in recipe by name."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    builtin = builtin_recipes_dir() / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    names = builtin_recipe_names()
    raise UserError(
        f"--recipe {name_or_path!r}: no such file and no built-in recipe of that name"
        f"{did_you_mean(name_or_path, names)} (built-in: {', '.join(names)})"
    )


def refuse_ignored_overrides(recipe: Recipe, assignments: Sequence[str]) -> None:
    """A `--set` the engine would ignore is refused: the user asked for it, and it would not happen."""
    ignored = recipe.ignored_settings()
    for assignment in assignments:
        key = assignment.partition("=")[0]
        hit = next((path for path in ignored if key == path or key.startswith(path + ".")), None)
        if hit:
            raise UserError(
                f"--set {key}: engine {recipe.engine} does not use {hit}, so this setting would have no effect"
                + (" (the mock engine takes no engine settings)" if recipe.engine == "mocker" else "")
            )


def worker_block_size(recipe: Recipe, group: WorkerGroup) -> BlockSize:
    """A worker group's KV block size, by engine."""
    if recipe.engine == "trtllm":
        return trtllm_block_size(group.spec.engine_config)
    if recipe.engine == "vllm":
        return vllm_block_size(group.spec.args, f"{group.field}.args.block_size")
    pool = f"pools.{group.pool.name}." if group.pool and group.pool.mocker else ""
    return mocker_block_size(recipe.mocker_of(group.pool).block_size, f"{pool}mocker.block_size")


def settle_kv_routing(recipe: Recipe, recipe_file: Path) -> None:
    """For router_mode kv: refuse what defeats KV routing (see config.kv_routing), and set the frontend's KV
    block size to the workers'."""
    if recipe.frontend.router_mode != "kv":
        return
    groups = recipe.worker_groups()
    if recipe.engine == "trtllm":
        for group in groups:
            refuse_disabled_block_reuse(group.spec.engine_config, f"{group.field}.engine_config", recipe_file)
    sizes = [(group.field, worker_block_size(recipe, group)) for group in groups]
    recipe.frontend.kv_cache_block_size = agreed_block_size(sizes, recipe.frontend.kv_cache_block_size, recipe_file)


def load_recipe(name_or_path: str, assignments: Sequence[str] = (), dynamo: str | None = None) -> Recipe:
    """Read, override and validate a recipe; engine config paths come back absolute and checked against
    the TensorRT-LLM of `dynamo` (the hosts file's `runtime.dynamo`; None: this venv's Dynamo)."""
    source = recipe_path(name_or_path)
    data = read_yaml_mapping(source)
    written_engine = data.get("engine", "trtllm")  # before the overrides, which change data in place
    data = apply_overrides(data, list(assignments))
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as error:
        raise describe_validation_error(source, error, data, Recipe, assignments) from None
    recipe.rehearsing(written_engine)
    refuse_ignored_overrides(recipe, assignments)
    for group in recipe.worker_groups():
        if group.spec.engine_config is not None:
            field = f"{source}: {group.field}.engine_config"
            path = resolve_engine_config(group.spec.engine_config, field, runtime_for(dynamo), source.parent)
            group.spec.engine_config = str(path)
    settle_kv_routing(recipe, source)
    return recipe
