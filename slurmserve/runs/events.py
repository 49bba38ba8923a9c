"""The events a run records in events.jsonl: one model per kind, told apart by their `event` field.

A line is `{"version": ..., "time": ..., "event": KIND, ...the kind's fields}`: the fields sit at the top
level, as tools reading events.jsonl (and older slurmserve versions) expect them. The states an event
carries (a process's, the deployment's verdict, a canary's result) are defined here too: runs.py's
state.json carries them as well, and imports them from here.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

SCHEMA_VERSION = 1


class ProcessState(str, Enum):
    PENDING = "pending"
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    FAILED = "failed"
    STOPPED = "stopped"


class Verdict(str, Enum):
    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"
    FAILED = "failed"
    STOPPED = "stopped"


class CanaryResult(BaseModel):
    ok: bool
    at: float
    latency_s: float
    error: str | None = None


class EventKind(str, Enum):
    CREATED = "created"
    SUBMITTED = "submitted"
    JOB_SUBMITTED = "job submitted"
    KV_PATH_CHECKED = "kv path checked"
    READY = "ready"
    FAILED = "failed"
    SUPERVISOR_STARTED = "supervisor started"
    SUPERVISOR_STOPPED = "supervisor stopped"
    STATE = "state"
    DEREGISTERED = "deregistered"
    RESTART_SCHEDULED = "restart scheduled"
    RESTARTED = "restarted"
    RESTART_FAILED = "restart failed"
    RESTART_BUDGET_SPENT = "restart budget spent"
    NODE_PROBLEM = "node problem"
    NODE_RECOVERED = "node recovered"
    CANARY = "canary"
    DEPLOYMENT = "deployment"
    CANCEL_REQUESTED = "cancel requested"
    CANCELLED = "cancelled"
    SUPERVISOR_ERROR = "supervisor error"
    DEREGISTRATION_FAILED = "deregistration failed"
    RESTART_REQUESTED = "restart requested"
    BENCH_STARTED = "bench started"
    BENCH_DONE = "bench done"
    SCALE_ASKED = "scale asked"
    SCALED = "scaled"
    PLANNER_DECIDED = "planner decided"
    PLANNER_ACKNOWLEDGED = "planner acknowledged"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class BaseEvent(BaseModel):
    """What every line carries: when it was recorded. Fields a newer writer adds are ignored (pydantic's
    default), so that its events still count; a line whose kind or fields do not fit is skipped."""

    version: int = SCHEMA_VERSION
    time: str = Field(default_factory=utc_now)


class Created(BaseEvent):
    event: Literal[EventKind.CREATED] = EventKind.CREATED
    recipe: str
    backend: str


class Submitted(BaseEvent):
    event: Literal[EventKind.SUBMITTED] = EventKind.SUBMITTED


class JobSubmitted(BaseEvent):
    event: Literal[EventKind.JOB_SUBMITTED] = EventKind.JOB_SUBMITTED
    job_id: str


class KvPathChecked(BaseEvent):
    event: Literal[EventKind.KV_PATH_CHECKED] = EventKind.KV_PATH_CHECKED
    result: str  # the check's one-line verdict


class Ready(BaseEvent):
    event: Literal[EventKind.READY] = EventKind.READY
    endpoint: str


class Failed(BaseEvent):
    """The deployment could not start; what is known of why (each field only where it applies)."""

    event: Literal[EventKind.FAILED] = EventKind.FAILED
    reason: str | None = None  # the launcher's error
    preflight: list[str] | None = None  # what the node preflight found lacking, a line per node
    waiting_for: str | None = None  # what had not come up by the deadline
    dead: list[str] | None = None  # the processes that had exited
    timeout_s: float | None = None  # the deadline that passed, when nothing had failed before it


class SupervisorStarted(BaseEvent):
    event: Literal[EventKind.SUPERVISOR_STARTED] = EventKind.SUPERVISOR_STARTED
    pid: int
    host: str


class SupervisorStopped(BaseEvent):
    event: Literal[EventKind.SUPERVISOR_STOPPED] = EventKind.SUPERVISOR_STOPPED
    reason: str | None = None


class SupervisorError(BaseEvent):
    event: Literal[EventKind.SUPERVISOR_ERROR] = EventKind.SUPERVISOR_ERROR
    error: str
    errors: int | None = None  # ticks that failed so far (none for an error outside a tick)


class StateChanged(BaseEvent):
    event: Literal[EventKind.STATE] = EventKind.STATE
    process: str
    previous: ProcessState
    state: ProcessState
    reason: str | None = None


class Deregistered(BaseEvent):
    event: Literal[EventKind.DEREGISTERED] = EventKind.DEREGISTERED
    process: str
    instances: int


class DeregistrationFailed(BaseEvent):
    event: Literal[EventKind.DEREGISTRATION_FAILED] = EventKind.DEREGISTRATION_FAILED
    process: str
    instances: int


class RestartScheduled(BaseEvent):
    event: Literal[EventKind.RESTART_SCHEDULED] = EventKind.RESTART_SCHEDULED
    process: str
    in_s: float


class RestartRequested(BaseEvent):
    event: Literal[EventKind.RESTART_REQUESTED] = EventKind.RESTART_REQUESTED
    process: str


class Restarted(BaseEvent):
    event: Literal[EventKind.RESTARTED] = EventKind.RESTARTED
    process: str
    restarts: int | None = None  # a restart after a failure: how many so far
    requested: bool = False  # a restart asked for (`RunDir.request_restart`), outside the budget


class RestartFailed(BaseEvent):
    event: Literal[EventKind.RESTART_FAILED] = EventKind.RESTART_FAILED
    process: str
    error: str


class RestartBudgetSpent(BaseEvent):
    event: Literal[EventKind.RESTART_BUDGET_SPENT] = EventKind.RESTART_BUDGET_SPENT
    process: str
    restarts: int
    window_s: float


class NodeProblem(BaseEvent):
    event: Literal[EventKind.NODE_PROBLEM] = EventKind.NODE_PROBLEM
    node: str
    problem: str


class NodeRecovered(BaseEvent):
    event: Literal[EventKind.NODE_RECOVERED] = EventKind.NODE_RECOVERED
    node: str


class CanaryChanged(CanaryResult, BaseEvent):
    """The canary's result, when it turns from passing to failing or back."""

    event: Literal[EventKind.CANARY] = EventKind.CANARY


class VerdictChanged(BaseEvent):
    event: Literal[EventKind.DEPLOYMENT] = EventKind.DEPLOYMENT
    verdict: Verdict
    reason: str


class CancelRequested(BaseEvent):
    event: Literal[EventKind.CANCEL_REQUESTED] = EventKind.CANCEL_REQUESTED
    reason: str | None = None  # the supervisor's, when it cancels the deployment itself


class Cancelled(BaseEvent):
    event: Literal[EventKind.CANCELLED] = EventKind.CANCELLED
    leftovers: list[str] = []  # what survived the stop
    reason: str | None = None


class BenchStarted(BaseEvent):
    event: Literal[EventKind.BENCH_STARTED] = EventKind.BENCH_STARTED
    bench: str  # its folder's name
    points: list[int]  # the concurrencies it measures


class BenchDone(BaseEvent):
    event: Literal[EventKind.BENCH_DONE] = EventKind.BENCH_DONE
    bench: str
    valid: bool


class ScaleAsked(BaseEvent):
    """A worker count asked of an autoscaled role (`slurmserve scale`)."""

    event: Literal[EventKind.SCALE_ASKED] = EventKind.SCALE_ASKED
    role: str
    count: int


class Scaled(BaseEvent):
    """What the supervisor did to meet a count, and how it went: a standby worker `added` (`started`, then
    `serving` once ready and counted by the frontend, or `failed`), or the latest added one `removed`
    (`leaving`: out of discovery and draining, then `stopped`)."""

    event: Literal[EventKind.SCALED] = EventKind.SCALED
    role: str
    process: str
    action: Literal["add", "remove"]
    outcome: Literal["started", "serving", "failed", "leaving", "stopped"]
    detail: str | None = None


class PlannerDecided(BaseEvent):
    """A decision of Dynamo's planner, as slurmserve follows it: the count of each autoscaled role."""

    event: Literal[EventKind.PLANNER_DECIDED] = EventKind.PLANNER_DECIDED
    decision_id: int
    counts: dict[str, int]
    reason: str | None = None  # from the planner's log, where this machine can read it


class PlannerAcknowledged(BaseEvent):
    """The decision met (its workers ready and counted by the frontend) and acknowledged to the planner; or
    acknowledged as failed (`failed`: why), when a worker it needs could not start: never waited for forever."""

    event: Literal[EventKind.PLANNER_ACKNOWLEDGED] = EventKind.PLANNER_ACKNOWLEDGED
    decision_id: int
    failed: str | None = None


RunEvent = Annotated[
    Created
    | Submitted
    | JobSubmitted
    | KvPathChecked
    | Ready
    | Failed
    | SupervisorStarted
    | SupervisorStopped
    | SupervisorError
    | StateChanged
    | Deregistered
    | DeregistrationFailed
    | RestartScheduled
    | RestartRequested
    | Restarted
    | RestartFailed
    | RestartBudgetSpent
    | NodeProblem
    | NodeRecovered
    | CanaryChanged
    | VerdictChanged
    | CancelRequested
    | Cancelled
    | BenchStarted
    | BenchDone
    | ScaleAsked
    | Scaled
    | PlannerDecided
    | PlannerAcknowledged,
    Field(discriminator="event"),
]
RUN_EVENT: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)


def event_of(kind: EventKind, fields: dict[str, Any]) -> RunEvent:
    """The event of that kind with those fields. A field the kind does not carry is a mistake here (a
    reader would ignore it: nothing would ever see it): TypeError; a field of the wrong type, or one
    missing, ValidationError."""
    event = RUN_EVENT.validate_python({"event": kind, **fields})
    unknown = fields.keys() - type(event).model_fields.keys()
    if unknown:
        raise TypeError(f"a {kind.value!r} event carries no {', '.join(sorted(unknown))}")
    return event


def event_line(event: RunEvent) -> bytes:
    """The event as one line of events.jsonl. A field with nothing to say is left out, as it always was."""
    return event.model_dump_json(exclude_none=True).encode() + b"\n"
