"""`slurmserve status`: a run's picture, from its live supervisor (state.json) when one watches it, else
from its backend, asked now."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ..backends import backend_for
from ..backends.base import Backend
from ..errors import UserError
from ..health.decisions import direct_state, direct_verdict
from ..planning.plan import Plan, Process
from ..runs import CanaryResult, EventKind, LiveMetrics, ProcessState, RunDir, SupervisorState, Verdict
from ..runs.events import Failed
from ..runs.records import ProcessWatch, RoleCounts
from ..transport.http import http_ok
from ..waiting import wait_until

HEARTBEAT_WAIT_S = 3.0  # a supervisor on another machine that has not ticked in this long is gone


@dataclass
class ProcessStatus:
    name: str
    role: str
    nodes: list[str]
    gpus: list[int]
    ports: dict[str, int]
    state: ProcessState
    since: float | None = None
    restarts: int = 0
    last_error: str | None = None
    registered: bool | None = None  # a worker the frontend routes to
    pool: str | None = None  # the pool behind the global router it belongs to


@dataclass
class RunStatus:
    run: str
    recipe: str
    backend: str
    verdict: Verdict
    reason: str
    supervised: bool  # a live supervisor's view, as opposed to asking the backend directly
    scheduler: str
    endpoint: str
    processes: list[ProcessStatus]
    frontend: dict[str, tuple[int, int]] = field(default_factory=dict)  # role -> (seen, planned)
    canary: CanaryResult | None = None
    nodes: dict[str, str] = field(default_factory=dict)  # node -> problem
    metrics: LiveMetrics | None = None  # what it serves, over the last minute (while supervised)
    prometheus: str | None = None  # the in-job Prometheus's URL, when the recipe asked for one
    pool_canaries: dict[str, CanaryResult] = field(default_factory=dict)  # per pool behind the global router
    autoscale: dict[str, RoleCounts] = field(default_factory=dict)  # per autoscaled role (while supervised)


def supervisor_absence(run: RunDir, state: SupervisorState | None) -> str | None:
    """Why no supervisor watches the run now, in words; None while one does. Judged by the supervisor's
    PID (with its start time) where this machine can see it, else by its heartbeat advancing: never by
    comparing the clocks of two machines."""
    if state is None:
        return "no supervisor has reported yet"
    if state.final:
        return f"its supervisor stopped ({state.reason})"
    where = f"pid {state.pid} on {state.host}"
    running = state.identity.running_here()
    if running is not None:
        return None if running else f"its supervisor ({where}) is gone"
    if wait_until(
        lambda: (now := run.supervisor_state()) is not None and now.heartbeat != state.heartbeat, HEARTBEAT_WAIT_S
    ):
        return None
    return f"its supervisor ({where}) has not ticked for {HEARTBEAT_WAIT_S:g} s"


def status(run: RunDir) -> RunStatus:
    """The live supervisor's picture when there is one; else the backend's answer, now."""
    try:
        plan = run.plan()
    except UserError as damage:
        return unplanned_status(run, str(damage))
    backend = backend_for(plan.backend)
    state = run.supervisor_state()
    cancelled = run.cancelled  # read once: each call parses events.jsonl
    scheduler = backend.scheduler(run)
    report = functools.partial(
        RunStatus,
        run.name,
        plan.recipe,
        plan.backend,
        scheduler=scheduler.description,
        endpoint=plan.endpoint,
        prometheus=plan.prometheus_url,
    )
    absence = "the run was cancelled" if cancelled else supervisor_absence(run, state)
    if state is not None and absence is None:
        return supervised_status(plan, state, report)
    verdict, reason, processes = direct_status(
        run, backend, state, None if cancelled else scheduler.ended, absence or "no supervisor running", cancelled
    )
    return report(verdict=verdict, reason=reason, supervised=False, processes=processes)


def supervised_status(plan: Plan, state: SupervisorState, report: Callable[..., RunStatus]) -> RunStatus:
    """The live supervisor's picture, as state.json has it."""
    processes = [
        # The launched processes, and the standby workers scaling started (those the supervisor watches).
        process_status(process, state.processes[process.name].state, state.processes)
        for process in plan.processes
        if process.name in state.processes
    ]
    return report(
        verdict=state.verdict,
        reason=state.reason,
        supervised=True,
        processes=processes,
        frontend=state.frontend,
        canary=state.canary,
        nodes=state.nodes,
        metrics=state.metrics,
        pool_canaries=state.pool_canaries,
        autoscale=state.autoscale,
    )


def direct_status(
    run: RunDir, backend: Backend, state: SupervisorState | None, ended: str | None, absence: str, cancelled: bool
) -> tuple[Verdict, str, list[ProcessStatus]]:
    """With no supervisor watching: each process as its backend and its readiness probe answer now, and
    the verdict they make (what the last supervisor saw of each process still shown)."""
    watched = state.processes if state else {}
    alive_of = backend.alive(run)
    stopped = cancelled or ended is not None
    changed = stopped_at(run, state)
    processes = [
        process_status(p, direct_state(alive_of[p.name], answers_now(p, alive_of[p.name]), stopped), watched, changed)
        for p in run.plan().launched
    ]
    verdict, reason = direct_verdict(
        {p.name: (p.role, p.state) for p in processes}, cancelled, ended, absence, start_failure=start_failure(run)
    )
    return verdict, reason, processes


def start_failure(run: RunDir) -> str:
    """Why the start failed, as submit recorded it ("" when it did not fail): a deadline that passed is said
    as such, not blamed on the deployment."""
    failed = next((event for event in reversed(run.events()) if isinstance(event, Failed)), None)
    if failed is None:
        return ""
    if failed.timeout_s is not None:
        return (
            f"the start timed out: not ready within submit's --timeout of {failed.timeout_s:g} s"
            + (f" (still waiting for {failed.waiting_for})" if failed.waiting_for else "")
            + ", and everything was stopped; submit again with a longer --timeout"
        )
    if failed.preflight:
        return "the node preflight failed, and nothing was started: " + "; ".join(failed.preflight)
    if failed.dead:
        return f"the start failed: {', '.join(failed.dead)} exited, and everything was stopped (`slurmserve logs RUN`)"
    return "the start failed, and everything was stopped (`slurmserve logs RUN` shows why)"


def stopped_at(run: RunDir, state: SupervisorState | None) -> float | None:
    """When the run's processes stopped, as far as its folder knows: when `cancel` (or a failed submit)
    recorded it, else the supervisor's last look (they still ran then)."""
    ends = [event for event in run.events() if event.event in (EventKind.CANCELLED, EventKind.FAILED)]
    if ends:
        return datetime.fromisoformat(ends[-1].time).timestamp()
    return state.updated if state else None


def process_status(
    process: Process, current: ProcessState, watched: dict[str, ProcessWatch], changed: float | None = None
) -> ProcessStatus:
    """A process of the plan in its state now, with what the supervisor saw of it (when one did). Since:
    when it came to that state; one the supervisor did not see it in (it stopped after the supervisor
    did) dates from `changed`, for a process that no longer runs, else it is not known."""
    seen = watched.get(process.name)
    since: float | None
    if seen is not None and seen.state == current:
        since = seen.since
    else:
        since = changed if current in (ProcessState.STOPPED, ProcessState.FAILED) else None
    return ProcessStatus(
        process.name,
        process.role,
        process.nodes,
        process.gpus,
        process.ports,
        current,
        since,
        seen.restarts if seen else 0,
        seen.last_error if seen else None,
        seen.registered if seen else None,
        process.pool,
    )


def unplanned_status(run: RunDir, damage: str) -> RunStatus:
    """A run whose plan.json cannot be read: what its PID records and handle still say, and how to stop it."""
    name = run.backend_name()
    backend = backend_for(name) if name else None
    cancelled = run.cancelled
    alive = backend.alive(run) if backend else {}
    # Its readiness probe is in the plan: a running process is not known to be ready, only started.
    processes = [
        ProcessStatus(process, "unknown", [], [], {}, direct_state(running, False, cancelled))
        for process, running in alive.items()
    ]
    if cancelled:
        verdict, reason = Verdict.STOPPED, f"cancelled with slurmserve cancel; {damage}"
    elif any(alive.values()):
        verdict, reason = Verdict.FAILED, f"{damage}; `slurmserve cancel {run.name}` stops what still runs"
    else:
        verdict, reason = Verdict.STOPPED, f"{damage}; no process is running"
    return RunStatus(
        run.name,
        "unknown",
        name or "unknown",
        verdict,
        reason,
        supervised=False,
        scheduler=backend.scheduler(run).description if backend else "nothing was started",
        endpoint="unknown",
        processes=processes,
    )


def answers_now(process: Process, alive: bool | None) -> bool:
    """Its readiness probe, asked only of a running process (a dead one cannot answer)."""
    return bool(alive) and (process.ready_url is None or http_ok(process.ready_url))
