"""What the supervisor decides, as pure functions of (what it knows, what it observed, the policy, now).

No I/O and no clock here: the supervisor feeds these its observations and acts on their answers, and the
unit tests feed them made-up ones.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

from ..config.recipe import RestartPolicy
from ..runs import CanaryResult, ProcessState, ProcessWatch, Verdict

CONTROL_PLANE_ROLES = ("etcd", "nats", "frontend")


@dataclass
class Watch:
    """What the supervisor knows of one process."""

    since: float
    state: ProcessState = ProcessState.PENDING
    restarts: list[float] = field(default_factory=list)  # when each restart happened
    last_error: str | None = None
    served: bool = False  # ready at least once since it last started
    restart_at: float | None = None
    given_up: bool = False
    registered: bool | None = None  # a worker the frontend routes to (None: not a worker, or unknown)
    silent: int = 0  # ticks in a row its readiness URL gave no answer within the budget
    instance_known: bool = False  # its instance id learnt since it last started (NATS request plane)

    def view(self) -> ProcessWatch:
        return ProcessWatch(
            state=self.state,
            since=self.since,
            restarts=len(self.restarts),
            last_error=self.last_error,
            registered=self.registered,
            restart_at=self.restart_at,
        )

    @property
    def settled(self) -> bool:
        """Failed for good, or waiting for its restart: observations change nothing until then."""
        return self.given_up or self.restart_at is not None


@dataclass(frozen=True)
class Observation:
    """One tick's look at a process."""

    alive: bool | None  # None: not started yet, or its liveness cannot be checked
    answers: bool  # its readiness URL answered 200 (or it has none)
    ready_url: str | None = None
    node_problem: str | None = None  # what is wrong with a node it runs on
    exit_reason: str = "exited"  # why it is gone, when it is (its log's last error)


def next_state(watch: Watch, seen: Observation) -> tuple[ProcessState, str | None]:
    """A process's new state and, when it is not well, why."""
    if seen.alive is None:
        if watch.state == ProcessState.PENDING:
            return ProcessState.PENDING, None
        return ProcessState.UNHEALTHY, seen.node_problem or "its liveness cannot be checked"
    if seen.alive is False:
        return ProcessState.FAILED, seen.exit_reason
    if seen.answers:
        return ProcessState.READY, None
    if watch.served:
        return ProcessState.UNHEALTHY, seen.node_problem or f"{seen.ready_url} does not answer"
    return ProcessState.STARTING, None


SILENT_TICKS = 3  # ticks without any answer before a ready process counts as not answering


def judge_answer(state: ProcessState, silent: int, answers: bool | None) -> tuple[bool, int]:
    """(whether the process counts as answering, ticks it has been silent): no answer within a tick's
    budget (None: slow, not refused) keeps a ready process ready until it has been silent SILENT_TICKS
    ticks in a row; an answer or a refusal counts at once."""
    if answers is not None:
        return answers, 0
    silent += 1
    return state == ProcessState.READY and silent < SILENT_TICKS, silent


def abandoned(has_allocation: bool, parent_gone: bool, launcher_running: bool, watches: dict[str, Watch]) -> str | None:
    """Why the deployment can no longer run, now that its launcher is gone (None: it can). Inside a Slurm
    job (`has_allocation`) the batch script (the supervisor's parent) ends with the job; elsewhere a
    launcher that ended with processes it never started will start none of them."""
    if has_allocation:
        return "the Slurm job's batch script has ended" if parent_gone else None
    if launcher_running:
        return None
    never = [name for name, watch in watches.items() if watch.state == ProcessState.PENDING]
    return f"the launch ended before starting {', '.join(never)}" if never else None


class RestartKind(Enum):
    STARTUP_FAILURE = "startup failure"  # it never served: the launcher reports it, nothing restarts it
    GIVE_UP = "give up"  # the restart budget is spent
    RESTART = "restart"


@dataclass(frozen=True)
class RestartDecision:
    kind: RestartKind
    delay_s: float = 0.0  # RESTART: wait this long first
    recent: int = 0  # restarts within the policy's window
    cancel_deployment: bool = False  # GIVE_UP with fail_fast


def decide_restart(served: bool, restarts: list[float], policy: RestartPolicy, now: float) -> RestartDecision:
    """After a process died: at most `max_restarts` restarts within `window_s`, waiting `backoff_s`
    before the first and twice as long before each further one in the window."""
    if not (served or restarts):
        return RestartDecision(RestartKind.STARTUP_FAILURE)
    recent = sum(1 for at in restarts if now - at < policy.window_s)
    if recent >= policy.max_restarts:
        return RestartDecision(RestartKind.GIVE_UP, recent=recent, cancel_deployment=policy.fail_fast)
    return RestartDecision(RestartKind.RESTART, delay_s=policy.backoff_s * 2**recent, recent=recent)


def frontend_counts(owner_roles: list[str], expected: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Per worker role: (instances the frontend routes to, instances planned)."""
    seen = Counter(owner_roles)
    return {role: (seen[role], planned) for role, planned in expected.items()}


@dataclass(frozen=True)
class DeploymentView:
    """Everything the verdict depends on, besides the processes."""

    frontend: dict[str, tuple[int, int]]  # empty: the frontend did not answer
    model_listed: bool | None
    canary: CanaryResult | None
    node_problems: dict[str, str]
    model: str
    endpoint: str


def problems(watches: dict[str, Watch], view: DeploymentView, now: float) -> list[str]:
    """What keeps the deployment from being fully ready, in words."""
    found = []
    for name, watch in watches.items():
        if watch.state != ProcessState.READY:
            when = f", restart in {max(0.0, watch.restart_at - now):.1f} s" if watch.restart_at else ""
            found.append(f"{name} {watch.state.value}{when}")
    found += [
        f"frontend sees {role} {seen}/{planned}" for role, (seen, planned) in view.frontend.items() if seen < planned
    ]
    if view.model_listed is False:
        found.append(f"model {view.model} not listed by the frontend")
    if view.canary and not view.canary.ok:
        found.append(f"canary: {view.canary.error}")
    found += [f"node {node}: {problem}" for node, problem in view.node_problems.items()]
    return found


def decide_verdict(
    watches: dict[str, Watch], view: DeploymentView, served_once: bool, now: float
) -> tuple[Verdict, str]:
    """One word for the whole deployment, and why: failed (a process failed for good), ready (nothing
    wrong and the frontend sees its workers), starting (never served yet) or degraded."""
    given_up = [name for name, watch in watches.items() if watch.given_up]
    if given_up:
        return Verdict.FAILED, f"{', '.join(given_up)} failed for good: {watches[given_up[0]].last_error}"
    found = problems(watches, view, now)
    if not found and view.frontend:
        return Verdict.READY, f"serving at {view.endpoint}"
    if not served_once:
        return Verdict.STARTING, "; ".join(found) or "waiting for the frontend to see the workers"
    return Verdict.DEGRADED, "; ".join(found) or "the frontend does not answer"


def nothing_left(watches: dict[str, Watch]) -> bool:
    """Every process has ended, none will be restarted, and at least one failed: nothing to watch."""
    ended = (ProcessState.FAILED, ProcessState.STOPPED)
    return all(w.state in ended and w.restart_at is None for w in watches.values()) and any(
        w.state == ProcessState.FAILED for w in watches.values()
    )


def direct_state(alive: bool | None, answers: bool, stopped: bool) -> ProcessState:
    """A process's state without a supervisor, from the backend's answer and one probe."""
    if alive is None:
        return ProcessState.STOPPED if stopped else ProcessState.PENDING
    if not alive:
        return ProcessState.STOPPED if stopped else ProcessState.FAILED
    return ProcessState.READY if answers else ProcessState.STARTING


def direct_verdict(
    states: dict[str, tuple[str, ProcessState]],
    cancelled: bool,
    ended: str | None,
    unsupervised: str = "no supervisor running",
    start_failure: str = "",
) -> tuple[Verdict, str]:
    """One word for the whole run without a supervisor (process -> (role, state)): ready, starting,
    degraded (a worker down), failed, or stopped; and why."""
    kinds = {state for _, state in states.values()}
    if cancelled:
        return Verdict.STOPPED, "cancelled with slurmserve cancel"
    if start_failure:  # why the start failed, as the run's failure event tells it
        return Verdict.FAILED, start_failure
    if ended:
        return (
            Verdict.STOPPED,
            f"{ended}: stopped outside slurmserve (or by its time limit); `slurmserve cancel` cleans up",
        )
    if kinds <= {ProcessState.STOPPED}:
        return Verdict.STOPPED, "no process is running"
    if kinds == {ProcessState.READY}:
        return Verdict.READY, unsupervised
    failed = [name for name, (_, state) in states.items() if state == ProcessState.FAILED]
    if not failed:
        return Verdict.STARTING, unsupervised
    control_failed = any(role in CONTROL_PLANE_ROLES for name, (role, _) in states.items() if name in failed)
    nothing_alive = kinds <= {ProcessState.FAILED, ProcessState.PENDING}
    verdict = Verdict.FAILED if control_failed or nothing_alive else Verdict.DEGRADED
    return verdict, f"{', '.join(failed)} exited; {unsupervised}"
