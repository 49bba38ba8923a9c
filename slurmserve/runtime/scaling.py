"""Scaling a running deployment within its recipe's `autoscale:` bounds: the counts asked (`slurmserve scale`),
and how the supervisor meets them (runtime.supervision): a standby worker started in place to add one, the
most recently added one stopped to remove one, after it left discovery and drained."""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..backends.base import Backend, start_detached
from ..errors import UserError
from ..health.decisions import Watch
from ..planning.plan import Plan, Process
from ..runs import ProcessState, RunDir
from ..runs.events import RunEvent, ScaleAsked, Scaled
from ..runs.records import RoleCounts, SupervisorState
from ..transport.runner import Detached

# Dynamo's own default for DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS, when neither the recipe nor the plan sets it.
DYNAMO_SHUTDOWN_GRACE_S = 5.0
DRAIN_MARGIN_S = 5.0  # beyond a worker's own grace period: its exit after its last stream
REASON_LINES_BEFORE = 16  # how far before a planner's decision its log says why (a line per engine between)


def asked_counts(plan: Plan, assignments: list[str]) -> dict[str, int]:
    """`decode=3` -> {"decode": 3}, each role autoscaled and each count within its min and max (else exit 2)."""
    if plan.autoscale is None:
        raise UserError(f"run {plan.run_name}: its recipe {plan.recipe} does not autoscale (no autoscale: section)")
    counts = {}
    for assignment in assignments:
        role, _, value = assignment.partition("=")
        scale = plan.autoscale.roles.get(role)
        if scale is None or scale.min == scale.max:
            scaled = [name for name, each in plan.autoscale.roles.items() if each.min < each.max]
            raise UserError(f"{assignment!r}: run {plan.run_name} autoscales {', '.join(scaled)}, not {role!r}")
        if not value.isdigit() or not scale.min <= int(value) <= scale.max:
            raise UserError(f"{assignment!r}: {role} takes a count from {scale.min} to {scale.max} (autoscale.{role})")
        counts[role] = int(value)
    return counts


def ask_scale(run: RunDir, assignments: list[str]) -> dict[str, int]:
    """Ask the run's supervisor for these counts; recorded as events. Returns them."""
    counts = asked_counts(run.plan(), assignments)
    if not counts:
        raise UserError("scale: say which role and how many, e.g. slurmserve scale RUN decode=3")
    run.request_scale(counts)
    for role, count in counts.items():
        run.record(ScaleAsked(role=role, count=count))
    return counts


def pause_planner(run: RunDir, paused: bool) -> None:
    """Stop or go back to following the planner's decisions (counts asked by hand meanwhile stand)."""
    plan = run.plan()
    if plan.autoscale is None:
        raise UserError(f"run {plan.run_name}: its recipe {plan.recipe} does not autoscale (no planner to pause)")
    run.pause_planner(paused)


def wanted_counts(plan: Plan, asked: dict[str, int]) -> dict[str, int]:
    """Each role's count to meet: what was asked, else its min (every role: min = max = replicas if fixed)."""
    if plan.autoscale is None:
        return dict(plan.workers_expected)
    return {role: asked.get(role, scale.min) for role, scale in plan.autoscale.roles.items()}


def decision_counts(plan: Plan, prefill: int, decode: int) -> dict[str, int]:
    """A planner decision as counts of the roles it scales (an agg worker is its decode engine); a value it
    left unset (negative) is skipped, one beyond the role's bounds (which the planner's were derived from)
    held to them."""
    if plan.autoscale is None:
        return {}
    decided = {"prefill": prefill, "decode": decode, "agg": decode}
    return {
        role: min(max(decided[role], scale.min), scale.max)
        for role, scale in plan.autoscale.roles.items()
        if scale.min < scale.max and decided[role] >= 0
    }


def counts_met(state: SupervisorState | None, counts: dict[str, int]) -> bool:
    """Whether the supervisor has each role at its count: as many workers ready as asked for, and as many
    counted by the frontend."""
    if state is None:
        return False
    scaled, seen = state.autoscale, state.frontend
    return all(
        role in scaled and scaled[role].desired == scaled[role].actual == seen.get(role, (0, 0))[0] == count
        for role, count in counts.items()
    )


def decision_reason(log: str, decision_id: int) -> str | None:
    """Why Dynamo's planner made a decision, as its log says it (its virtual connector carries no reason):
    the load-based scaling's line about the threshold crossed, logged just before the decision ("Easy decode:
    engine(s) above scale-up threshold (0.01), scaling up to 2"). The latest decision of that id (a restarted
    planner counts from 0 again); None where the log does not say (another Dynamo version or mode)."""
    lines = log.splitlines()
    marker = f"Updated scaling decision decision_id={decision_id} "
    decided = next((index for index in range(len(lines) - 1, -1, -1) if marker in lines[index]), None)
    if decided is None:
        return None
    for line in reversed(lines[max(0, decided - REASON_LINES_BEFORE) : decided]):
        if "load_scaling." in line and "threshold" in line and ": " in line:
            return line.split(": ", 1)[1].strip()  # after "TIME LEVEL logger: "
    return None


def unmeetable(state: SupervisorState | None, counts: dict[str, int]) -> str | None:
    """Why these counts cannot be met (a role asked for more workers than it can still start: its standby
    workers that failed to start are not tried again); None when they can."""
    scaled = state.autoscale if state else {}
    short = [
        f"{role} {count} asked, at most {scaled[role].startable} can start"
        for role, count in counts.items()
        if role in scaled and scaled[role].startable is not None and count > (scaled[role].startable or 0)
    ]
    return "; ".join(short) or None


def drain_bound_s(process: Process) -> float:
    """How long a removed worker may take to finish its streams in flight: Dynamo's grace period (its own
    SIGTERM handling deregisters it, then waits for them that long), and a margin for its exit."""
    try:
        grace = float(process.env["DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS"])
    except (KeyError, ValueError):  # unset, or not a number Dynamo would read either
        grace = DYNAMO_SHUTDOWN_GRACE_S
    return grace + DRAIN_MARGIN_S


class ScalingSteps:
    """The supervisor's scaling (runtime.supervision.Supervisor): each tick, `scale` meets each autoscaled
    role's asked count. What it uses of the supervisor is declared here."""

    plan: Plan
    run: RunDir
    backend: Backend
    threads: ThreadPoolExecutor
    stopping: str | None
    watch: dict[str, Watch]
    urls: list[str]
    active: list[Process]  # what the supervisor watches: the launched processes and the standby ones added
    added: list[str]  # standby workers started by scaling, latest last
    leaving: dict[str, Future[None]]  # removed workers draining, until they stopped
    unstartable: set[str]  # standby workers that failed to start: never tried again
    reported: set[str]  # added workers whose outcome (serving, failed) was recorded
    record: Callable[[RunEvent], None]
    forget_instances: Callable[[Process, list[dict[str, Any]] | None], None]
    planner_link: Detached | None = None
    wanted: dict[str, int]  # each worker role's count to meet this tick (read_wanted)

    def read_wanted(self) -> None:
        """The counts to meet this tick, for every step that needs them: the counts asked (a file of the run)
        are read once a tick, and only for a plan that autoscales."""
        self.wanted = wanted_counts(self.plan, self.run.scale_request() if self.plan.autoscale else {})

    def adopt_added(self, now: float) -> None:
        """Standby workers that an earlier supervisor of the run started and that still run (it was killed,
        or restarted): one it watched is watched and counted again, removable as before, never started
        twice (taken in plan order, the order they were added in); one it had stopped watching was being
        removed, and its stop is finished here."""
        if self.plan.autoscale is None or (earlier := self.run.supervisor_state()) is None:
            return
        alive = self.backend.alive(self.run, in_job=True)
        for process in self.plan.processes:
            if process.elastic and alive.get(process.name) is None:
                # A worker job still queued (or never started): this supervisor did not ask for it.
                self.threads.submit(self.backend.stop_process, self.run, process, 0.0)
            if not (process.standby and alive.get(process.name)):
                continue
            if process.name not in earlier.processes:
                self.leaving[process.name] = self.threads.submit(
                    self.backend.stop_process, self.run, process, drain_bound_s(process)
                )
                continue
            self.active.append(process)
            self.added.append(process.name)
            self.reported.add(process.name)  # its `serving` was recorded by the earlier supervisor
            self.watch[process.name] = Watch(since=now, state=ProcessState.STARTING)
        self.urls = sorted({*self.urls, *(p.ready_url for p in self.active if p.ready_url)})

    def start_planner_link(self) -> None:
        """The child that follows Dynamo's planner (slurmserve.node.planner_link), when the plan runs one."""
        if any(process.role == "planner" for process in self.plan.launched):
            argv = [sys.executable, "-m", "slurmserve.node.planner_link", str(self.run.path)]
            self.planner_link = start_detached(self.run, "planner-link", argv)

    def stop_planner_link(self) -> None:
        if self.planner_link is not None:
            self.planner_link.terminate()

    def scale(self, now: float, instances: list[dict[str, Any]] | None) -> None:
        """Meet each autoscaled role's asked count, one worker per role and tick: add the next standby
        worker, or remove the latest added one; and report what the earlier steps came to."""
        if self.plan.autoscale is None or self.stopping:
            return
        self.report_added()
        self.report_left()
        for role, count in self.wanted.items():
            serving = [process for process in self.active if process.role == role]
            if len(serving) < count:
                spare = next((p for p in self.standby_of(role) if p.name not in self.unstartable), None)
                if spare is not None:
                    self.add_worker(spare, now)
            elif len(serving) > count:
                latest = next((name for name in reversed(self.added) if self.plan.process(name).role == role), None)
                if latest is not None:
                    self.remove_worker(self.plan.process(latest), instances)

    def standby_of(self, role: str) -> list[Process]:
        """The role's standby workers neither serving nor leaving, in plan order."""
        busy = {process.name for process in self.active} | set(self.leaving)
        return [p for p in self.plan.processes if p.standby and p.role == role and p.name not in busy]

    def add_worker(self, process: Process, now: float) -> None:
        """Start a standby worker in place (its planned node, GPUs, ports), watched like any from now on."""
        try:
            self.backend.restart(self.run, process)
        except Exception as error:  # the backend could not start it: reported, not tried again
            self.unstartable.add(process.name)
            self.record(
                Scaled(role=process.role, process=process.name, action="add", outcome="failed", detail=str(error))
            )
            return
        self.active.append(process)
        self.added.append(process.name)
        self.urls = sorted({*self.urls, *([process.ready_url] if process.ready_url else [])})
        self.watch[process.name] = Watch(since=now, state=ProcessState.STARTING)
        self.record(Scaled(role=process.role, process=process.name, action="add", outcome="started"))

    def report_added(self) -> None:
        """An added worker is serving once ready and counted by the frontend; one that never served and
        will not be restarted failed to start (its GPUs stay reserved, it is not tried again)."""
        for name in list(self.added):  # one that failed to start leaves it
            watch = self.watch[name]
            if name in self.reported:
                continue
            role = self.plan.process(name).role
            if watch.state == ProcessState.READY and watch.registered:
                self.reported.add(name)
                self.record(Scaled(role=role, process=name, action="add", outcome="serving"))
            elif watch.given_up and not watch.served:
                self.give_up_on(self.plan.process(name))
                self.record(Scaled(role=role, process=name, action="add", outcome="failed", detail=watch.last_error))

    def give_up_on(self, process: Process) -> None:
        """An added worker that never served: no longer counted or watched (the deployment's verdict does not
        wait for it), whatever is left of it stopped, never started again (its GPUs stay reserved)."""
        self.unstartable.add(process.name)
        self.active.remove(process)
        self.added.remove(process.name)
        del self.watch[process.name]
        self.threads.submit(self.backend.stop_process, self.run, process, 0.0)

    def release_elastic(self) -> None:
        """When the supervisor stops: the elastic workers' own jobs end with it (the deployment's job is ending:
        their GPUs go back to the cluster rather than serving nobody until their own time limit)."""
        for name in self.added:
            if (process := self.plan.process(name)).elastic:
                self.backend.stop_process(self.run, process, 0.0)

    def remove_worker(self, process: Process, instances: list[dict[str, Any]] | None) -> None:
        """Out of the frontend's routing first, then SIGTERM: Dynamo's worker leaves discovery and finishes its
        streams in flight within its grace period (drain_bound_s), then stops; SIGKILL after that bound."""
        self.active.remove(process)
        self.added.remove(process.name)
        self.reported.discard(process.name)
        self.forget_instances(process, instances)
        del self.watch[process.name]
        bound = drain_bound_s(process)
        self.leaving[process.name] = self.threads.submit(self.backend.stop_process, self.run, process, bound)
        self.record(
            Scaled(
                role=process.role,
                process=process.name,
                action="remove",
                outcome="leaving",
                detail=f"drains within {bound:g} s",
            )
        )

    def report_left(self) -> None:
        for name, stopping in list(self.leaving.items()):
            if stopping.done():
                del self.leaving[name]
                error = stopping.exception()
                self.record(
                    Scaled(
                        role=self.plan.process(name).role,
                        process=name,
                        action="remove",
                        outcome="stopped",
                        detail=f"{type(error).__name__}: {error}" if error else None,
                    )
                )

    def autoscale_view(self) -> dict[str, RoleCounts]:
        """Per role: its bounds, the count asked, and the workers serving it."""
        if self.plan.autoscale is None:
            return {}
        return {
            role: RoleCounts(
                min=scale.min,
                max=scale.max,
                desired=self.wanted[role],
                actual=sum(1 for p in self.active if p.role == role and self.watch[p.name].state == ProcessState.READY),
                startable=scale.max - sum(1 for name in self.unstartable if self.plan.process(name).role == role),
            )
            for role, scale in self.plan.autoscale.roles.items()
        }
