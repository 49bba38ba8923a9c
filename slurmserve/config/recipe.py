"""Recipes: what to serve and in which worker shapes; the built-in catalogue; `--set` overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from ..errors import UserError, describe_validation_error
from ..resources import builtin_recipes_dir, resource_dir
from .engine_schema import engine_file_problems, schema_version
from .fields import AbsolutePath, EnvKey, EnvValue, FlagName, Identifier, Revision, Text
from .files import Strict, read_yaml_mapping
from .overrides import apply_overrides

ArgValue = Text | int | float | bool


class ModelSpec(Strict):
    repo: Text = Field(
        description="Hugging Face repo id, a local path, or builtin:NAME (a model folder shipped with slurmserve)"
    )
    revision: Revision | None = None
    allow: list[Text] = []
    ignore: list[Text] = []
    served_name: Text | None = None

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
    extra_args: list[Text] = []


class WorkerSpec(Strict):
    replicas: int = Field(1, ge=1)
    tensor_parallel: int = Field(1, ge=1)
    pipeline_parallel: int = Field(1, ge=1)
    expert_parallel: int = Field(1, ge=1)
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
    model_path: AbsolutePath | None = None
    # True: load the recipe's own model (staged from the hub like a real engine's) instead.
    use_recipe_model: bool = False
    speedup_ratio: float = Field(100.0, gt=0)
    # What the mocker answers a request annotated `output_replay_id:osl-N` (rows of printable token ids,
    # so that a benchmark sees text); None: the trace shipped with the tiny model, when it is the model.
    replay_trace: AbsolutePath | None = None


GoodputMetric = Literal["time_to_first_token", "inter_token_latency", "request_latency"]


class BenchSpec(Strict):
    """What `slurmserve bench` runs by default: one aiperf run per concurrency point, as Dynamo's
    perf.yaml files run them (streaming chat, fixed ISL/OSL, 10x concurrency requests, the concurrency
    as warm-up, a fixed seed, ignore_eos)."""

    endpoint_type: Literal["chat", "completions"] = "chat"
    isl: int = Field(128, ge=1)
    osl: int = Field(64, ge=1)
    concurrency: list[Annotated[int, Field(ge=1)]] = []
    concurrency_per_gpu: list[Annotated[int, Field(ge=1)]] = []  # times the deployment's GPUs
    requests_per_concurrency: int = Field(10, ge=1)
    warmup_requests: int | None = Field(None, ge=0)  # None: as many as the concurrency
    seed: int = 100
    ignore_eos: bool = True  # and min_tokens = max_tokens = osl: every output exactly osl tokens
    extra_inputs: dict[FlagName, ArgValue] = {}  # further request fields, e.g. temperature: 0.0
    goodput: dict[GoodputMetric, Annotated[float, Field(gt=0)]] = {}  # SLOs in ms for aiperf's goodput

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

    scrape_interval_s: float = Field(5.0, ge=0)  # live figures in `status`; 0: no scraping
    prometheus: bool = False


class RestartPolicy(Strict):
    """What the supervisor does when a process that was serving dies: start it again in place (same
    node, GPUs and ports), at most `max_restarts` times within `window_s`, waiting `backoff_s` before
    the first restart and twice as long before each further one in the window."""

    max_restarts: int = Field(3, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    window_s: float = Field(600.0, gt=0)
    # When the budget is spent: cancel the whole deployment (True) or leave what still runs serving (False).
    fail_fast: bool = False


class Recipe(Strict):
    name: Identifier
    description: str = ""
    model: ModelSpec
    engine: Literal["trtllm", "mocker"] = "trtllm"
    mode: Literal["agg", "disagg"] = "disagg"
    frontend: FrontendSpec = FrontendSpec()
    prefill: WorkerSpec | None = None
    decode: WorkerSpec | None = None
    agg: WorkerSpec | None = None
    parsers: ParserSpec = ParserSpec()
    # auto: a file store for a deployment on one host, etcd when it spans several.
    discovery: Literal["auto", "etcd", "file"] = "auto"
    request_plane: Literal["tcp", "nats"] = "tcp"
    event_plane: Literal["zmq", "nats"] = "zmq"
    env: dict[EnvKey, EnvValue] = {}
    mocker: MockerSpec = MockerSpec()
    restart: RestartPolicy = RestartPolicy()
    bench: BenchSpec = BenchSpec()
    observability: ObservabilitySpec = ObservabilitySpec()

    @model_validator(mode="after")
    def _sections_match_mode(self) -> Recipe:
        if self.mode == "disagg":
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
        return self

    def worker_roles(self) -> list[tuple[str, WorkerSpec]]:
        """The worker sections in start order (prefill before decode, as Dynamo's examples do)."""
        roles = ("prefill", "decode") if self.mode == "disagg" else ("agg",)
        return [(role, getattr(self, role)) for role in roles]

    @property
    def loads_recipe_model(self) -> bool:
        """Whether the workers load model.repo (a real engine, or a mocker told to), not the tiny model."""
        return self.engine == "trtllm" or self.mocker.use_recipe_model

    def ignored_settings(self) -> list[str]:
        """Settings the chosen engine cannot take (dotted paths): TensorRT-LLM's under the mock engine
        (a rehearsal keeps placement, ports and env), the mock engine's under TensorRT-LLM."""
        if self.engine == "trtllm":
            return [f"mocker.{key}" for key in sorted(self.mocker.model_fields_set)]
        ignored = [f"parsers.{key}" for key in ("reasoning", "tool_call") if getattr(self.parsers, key)]
        for role, spec in self.worker_roles():
            ignored += [f"{role}.{key}" for key in ("engine_config", "args", "extra_args") if getattr(spec, key)]
        return ignored

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
    raise UserError(
        f"--recipe {name_or_path!r}: no such file and no built-in recipe of that name "
        f"(built-in: {', '.join(builtin_recipe_names())})"
    )


def resolve_engine_config(value: str, field: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = resource_dir("engine_configs") / value
    if not path.is_file():
        raise UserError(f"{field}: engine config {value!r} not found (looked for {path})")
    try:
        # A malformed engine YAML, or a key TensorRT-LLM does not take, fails here: before anything is
        # planned, not on the GPU node after the queue wait and the model load.
        problems = engine_file_problems(path)
    except UserError as error:
        raise UserError(f"{field}: {error}") from None
    if problems:
        raise UserError(
            f"{field}: engine config {path} does not fit TensorRT-LLM {schema_version()}'s arguments: "
            + "; ".join(problem.removeprefix(f"{path}: ") for problem in problems)
        )
    return path


def refuse_ignored_overrides(recipe: Recipe, assignments: Sequence[str]) -> None:
    """A `--set` the engine would ignore is refused: the user asked for it, and it would not happen."""
    ignored = recipe.ignored_settings()
    for assignment in assignments:
        key = assignment.partition("=")[0]
        hit = next((path for path in ignored if key == path or key.startswith(path + ".")), None)
        if hit:
            raise UserError(
                f"--set {key}: engine {recipe.engine} does not use {hit}, so this setting would have no effect"
                + (" (the mock engine takes no TensorRT-LLM settings)" if recipe.engine == "mocker" else "")
            )


def load_recipe(name_or_path: str, assignments: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe; engine config paths come back absolute and checked."""
    source = recipe_path(name_or_path)
    data = apply_overrides(read_yaml_mapping(source), list(assignments))
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as error:
        raise describe_validation_error(source, error) from None
    refuse_ignored_overrides(recipe, assignments)
    for role, worker in recipe.worker_roles():
        if worker.engine_config is not None:
            worker.engine_config = str(resolve_engine_config(worker.engine_config, f"{source}: {role}.engine_config"))
    return recipe
