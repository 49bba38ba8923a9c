"""The run directory's typed records: the supervisor's state.json, the backend's handle.json and the
launch scripts' PID records (pids/NAME.pid: "PID START-TIME"). What crosses process boundaries here is a
pydantic model with a schema version, written atomically; a damaged or foreign one reads as absent."""

from __future__ import annotations

import os

from pydantic import BaseModel, field_validator

from ..planning.plan import PlanNode
from ..transport.procfs import boot_id, pid_alive, pid_namespace, start_time
from ..transport.slurm import JobState, parse_job_state
from .events import SCHEMA_VERSION, CanaryResult, ProcessState, Verdict

# The run's own helpers, in pids/ too: the launcher and the supervisor (on the submitting machine, or the
# supervisor in the job), and the supervisor's child that scrapes live metrics.
HELPERS = ("launcher", "supervisor", "scraper", "planner-link")
# What in pids/ names a process of the plan: NAME.pid (local, SSH), NAME.srun and NAME.tasks (Slurm). Not
# the benchmark's record or lock, also there.
PROCESS_RECORDS = (".pid", ".srun", ".tasks")


class ProcessWatch(BaseModel):
    """The supervisor's view of one process, as state.json carries it."""

    state: ProcessState
    since: float
    restarts: int = 0
    last_error: str | None = None
    registered: bool | None = None  # a worker the frontend routes to (None: not a worker, or unknown)
    restart_at: float | None = None


class ProcessIdentity(BaseModel):
    """Who a PID is: a reused PID has another start time; another machine or PID namespace another meaning."""

    pid: int
    start_time: str  # /proc/PID/stat field 22
    boot_id: str
    pid_namespace: str | None

    def running_here(self) -> bool | None:
        """True/False when this machine can see the PID; None when it cannot (another node)."""
        if boot_id() != self.boot_id or pid_namespace() != self.pid_namespace:
            return None
        return pid_alive(self.pid, self.start_time)

    @classmethod
    def of_this_process(cls) -> ProcessIdentity:
        return cls(
            pid=os.getpid(), start_time=start_time(os.getpid()) or "", boot_id=boot_id(), pid_namespace=pid_namespace()
        )


class Quantiles(BaseModel):
    p50: float
    p99: float


class WorkerLive(BaseModel):
    requests_per_s: float
    kv_cache_usage: float | None = None  # fraction of the KV cache in use, when the engine says


class TrendPoint(BaseModel):
    at: float
    requests_per_s: float
    ttft_p50_ms: float | None = None


class LiveMetrics(BaseModel):
    """What the deployment is serving, from the frontend's and workers' /metrics over the last window."""

    at: float
    window_s: float  # the span the rates and percentiles cover (up to a minute)
    requests_per_s: float
    in_flight: float
    queued: float
    ttft_ms: Quantiles | None = None  # None: no request finished its first token in the window
    itl_ms: Quantiles | None = None
    output_tokens_per_s: float
    # Of the window's prompt tokens, the share the workers found in their KV cache; None: no prompt in it.
    kv_hit_rate: float | None = None
    kv_hit_rate_from: str = "dynamo_frontend_cached_tokens_sum / dynamo_frontend_input_sequence_tokens_sum"
    workers: dict[str, WorkerLive] = {}
    trend: list[TrendPoint] = []  # one per scrape, oldest first (status --watch draws them)


class RoleCounts(BaseModel):
    """An autoscaled role: its bounds, the count asked (by hand, or its min), and its workers ready."""

    min: int
    max: int
    desired: int
    actual: int
    # The most workers the role can have: its max less the standby workers that failed to start (never tried
    # again). A count beyond it cannot be met.
    startable: int | None = None  # None: written by a slurmserve that did not say (its max, then)


class PlannerDecision(BaseModel):
    """planner.json: Dynamo's planner's last decision, as slurmserve follows it (node.planner_link)."""

    decision_id: int
    counts: dict[str, int]  # per autoscaled role
    at: float  # when it was first seen
    acknowledged: bool = False  # met (ready and counted by the frontend) and acknowledged to the planner
    failed: str | None = None  # acknowledged unmet: why it cannot be met
    reason: str | None = None  # why the planner decided it, from its log (where this machine can read it)


class SupervisorState(BaseModel):
    """state.json: the supervisor's latest picture of the deployment."""

    version: int = SCHEMA_VERSION
    updated: float
    final: bool  # the supervisor stopped watching: the backend answers from then on
    pid: int
    host: str
    identity: ProcessIdentity
    heartbeat: int  # ticks so far: a reader on another machine sees it advance, whatever the clocks say
    errors: int = 0  # ticks that failed (each recorded as a "supervisor error" event)
    tick_s: float = 0.0  # how long the last tick took
    tick_p50_s: float = 0.0  # over about the last minute
    tick_p99_s: float = 0.0
    verdict: Verdict
    reason: str
    processes: dict[str, ProcessWatch]
    frontend: dict[str, tuple[int, int]] = {}  # role -> (instances the frontend sees, planned)
    model_listed: bool | None = None
    canary: CanaryResult | None = None
    nodes: dict[str, str] = {}  # node -> what is wrong with it
    metrics: LiveMetrics | None = None
    metrics_endpoint: str | None = None  # where the supervisor serves its own /metrics ("host:port")
    pool_canaries: dict[str, CanaryResult] = {}  # per pool behind the global router: its own canary
    autoscale: dict[str, RoleCounts] = {}  # per worker role, when the recipe autoscales


class StartedGroup(BaseModel):
    """A process the SSH backend started: its host and its process group."""

    host: str
    pgid: int
    started: str | None = None  # its leader's start time: a reused PID is not ours


class Handle(BaseModel):
    """handle.json: what the backend needs to find the deployment again."""

    version: int = SCHEMA_VERSION
    backend: str
    job_id: str | None = None  # Slurm
    final_state: JobState | None = None  # Slurm: a terminal job state, once seen (Slurm forgets jobs)
    processes: dict[str, StartedGroup] = {}  # SSH
    # SSH: how to reach the hosts that started processes, and their interpreter: what stopping them needs
    # when plan.json cannot be read.
    nodes: dict[str, PlanNode] = {}
    python: str | None = None

    @field_validator("final_state", mode="before")
    @classmethod
    def _slurm_spelling(cls, value: object) -> object:
        """Older handle.json files kept the state as Slurm printed it (a deployment outlives upgrades). One
        that reads as no end (a state this version has no name for) is as none kept: Slurm is asked again."""
        if not isinstance(value, str):
            return value
        state = parse_job_state(value)
        return state if state.terminal else None
