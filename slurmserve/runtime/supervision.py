"""The supervisor: watches a deployment for as long as it runs (`python -m slurmserve.node.supervisor RUN_DIR`).

The launcher starts it before the first process: the sbatch script inside the allocation (Slurm), the
launch script or the SSH launcher on the launching machine (local, SSH). Every tick it asks the backend
which processes are alive, probes each one's readiness URL (worker status port, etcd /health, NATS
/healthz, frontend /health) and reads the frontend's list of worker instances; less often it checks the
nodes' daemons and sends a canary completion. State transitions (pending -> starting -> ready ->
unhealthy -> failed | stopped) go to events.jsonl with their reasons; the current picture goes to
state.json, which `slurmserve status` shows. What to do about what it sees is decided by the pure
functions of `decisions`.

A process that dies after it served is started again in place (same node, GPUs, ports) through the run's
own launch script, under the recipe's restart policy. A dead worker's discovery entry is dropped at once,
so the frontend stops routing to it instead of waiting out its lease. One that dies before it ever served
is left to the launcher, which reports start-up failures.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any, TypeVar

from ..backends import backend_for
from ..health.decisions import (
    DeploymentView,
    Observation,
    RestartKind,
    Watch,
    abandoned,
    decide_restart,
    decide_verdict,
    frontend_counts,
    judge_answer,
    next_state,
    nothing_left,
)
from ..health.instances import InstanceOwners, forget, worker_ids
from ..observability.own_metrics import SupervisorMetrics
from ..observability.targets import file_sd_targets, metrics_url
from ..planning.plan import Process
from ..runs import CanaryResult, ProcessIdentity, ProcessState, RunDir, SupervisorState, Verdict
from ..runs.events import (
    CanaryChanged,
    Cancelled,
    CancelRequested,
    Deregistered,
    DeregistrationFailed,
    NodeProblem,
    NodeRecovered,
    RestartBudgetSpent,
    Restarted,
    RestartFailed,
    RestartRequested,
    RestartScheduled,
    RunEvent,
    StateChanged,
    SupervisorError,
    SupervisorStarted,
    SupervisorStopped,
    VerdictChanged,
)
from ..transport.http import frontend_instances, model_listed, serving, text_of
from ..transport.prober import Prober
from ..transport.procfs import pid_alive
from .background import CANARY_INTERVAL_S, Periodic, exit_reason, send_canary
from .scaling import ScalingSteps
from .scraper_child import ScraperChild

TICK_S = 0.5
READY_PROBE_TIMEOUT_S = 1.0  # the frontend's own lists, asked once a tick
PROBE_BUDGET_S = 0.4  # every readiness URL at once; what has not answered by then did not answer this tick
STATE_EVERY_S = 1.0  # state.json at least this often (its heartbeat), and at once when anything changes
TICKS_KEPT = 120  # the tick times state.json sums up (p50, p99): about the last minute
NODE_CHECK_INTERVAL_S = 2.0
CANARY_RETRY_S = 1.0

Result = TypeVar("Result")


def stopped_by(signum: int) -> str:
    return f"{signal.Signals(signum).name}: the deployment is being stopped (cancel, scancel or time limit)"


class Supervisor(ScalingSteps):
    def __init__(self, run: RunDir):
        self.run = run
        self.plan = run.plan()
        self.backend = backend_for(self.plan.backend)
        now = time.time()
        # What the supervisor watches: the launched processes, and the standby workers scaling started.
        self.active: list[Process] = list(self.plan.launched)
        self.watch = {process.name: Watch(since=now) for process in self.active}
        self.added, self.leaving, self.unstartable, self.reported = [], {}, set(), set()
        self.read_wanted()
        self.verdict, self.reason = Verdict.STARTING, "starting the processes"
        self.served_once = False
        self.stopping: str | None = None
        self.wake = threading.Event()
        self.threads = ThreadPoolExecutor(max_workers=8)  # the slow checks, off the tick
        self.frontend: dict[str, tuple[int, int]] = {}
        self.listed: bool | None = None
        self.canary: CanaryResult | None = None
        self.node_problems: dict[str, str] = {}
        self.node_check: Periodic[dict[str, str]] = Periodic(NODE_CHECK_INTERVAL_S)
        self.prober = Prober()
        self.metrics = ScraperChild(run, self.plan)  # live serving figures, scraped by a child process
        self.own_metrics = SupervisorMetrics(self.plan)
        self.metrics_endpoint: str | None = None
        self.said_stopped = False
        self.owners = InstanceOwners(self.plan)
        self.urls = sorted({p.ready_url for p in self.active if p.ready_url})
        self.identity = ProcessIdentity.of_this_process()
        self.parent = os.getppid()
        self.heartbeat, self.errors, self.tick_s = 0, 0, 0.0
        self.tick_times: deque[float] = deque(maxlen=TICKS_KEPT)
        self.recorded = 0  # events this supervisor wrote: a change of state.json when it grows
        self.written: tuple[object, ...] | None = None
        self.written_at = 0.0
        self.last_errors: set[str] = set()  # the last tick's: an error repeated tick after tick is one event
        self.tick_errors: list[str] = []
        self.canary_check: Periodic[tuple[CanaryResult, dict[str, CanaryResult]]] = Periodic(CANARY_INTERVAL_S)
        self.pool_canaries: dict[str, CanaryResult] = {}

    # -- the loop --------------------------------------------------------------------------------

    def run_until_stopped(self) -> None:
        self.record(SupervisorStarted(pid=os.getpid(), host=socket.gethostname()))
        if not self.stopping:  # stopped while it started: it watches nothing, it only records its stop
            self.guarded(lambda: self.adopt_added(time.time()))
            self.serve_own_metrics()
            self.run.save_targets(file_sd_targets(self.plan, self.metrics_endpoint))
            self.guarded(self.metrics.start)
            self.guarded(self.start_planner_link)
        while not self.stopping:
            started = time.monotonic()
            self.guarded_tick()
            if nothing_left(self.watch):
                self.stopping = "every process has ended and none will be restarted"
                break
            self.stopping = self.stopping or self.launch_abandoned()
            self.tick_s = time.monotonic() - started
            self.tick_times.append(self.tick_s)
            self.wake.wait(max(0.0, TICK_S - self.tick_s))
        self.metrics.stop()
        self.stop_planner_link()
        self.guarded(self.release_elastic)
        self.verdict = Verdict.FAILED if self.verdict == Verdict.FAILED else Verdict.STOPPED
        self.reason = self.stopping
        self.write_state(final=True)
        self.say_stopped()

    def serve_own_metrics(self) -> None:
        try:
            self.metrics_endpoint = self.own_metrics.serve()
        except OSError as error:  # no route to the head node from here, say: the deployment runs without them
            self.record(SupervisorError(error=f"cannot serve the supervisor's own metrics: {error}"))

    def say_stopped(self) -> None:
        """The `supervisor stopped` event, once."""
        if not self.said_stopped:
            self.said_stopped = True
            self.record(SupervisorStopped(reason=self.stopping))

    def stop_on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = stopped_by(signum)
        self.wake.set()
        # Said at once: Slurm kills what is left of a step KillWait seconds after its SIGTERM, which may
        # fall in the middle of a tick, before the loop gets to its end.
        self.say_stopped()

    def guarded_tick(self) -> None:
        """One tick; whatever one of its checks throws (a torn file, an odd reply) is recorded and counted,
        the other checks still run, and the next tick comes as usual: the supervisor never ends on a bad
        observation."""
        self.heartbeat += 1
        self.tick_errors = []
        self.guarded(self.tick)
        self.last_errors = set(self.tick_errors)

    def guarded(self, step: Callable[[], Result]) -> Result | None:
        """One step of a tick, its result (None when it raised); what it raises is recorded, once while
        it repeats tick after tick."""
        try:
            return step()
        except Exception as error:
            if not self.tick_errors:
                self.errors += 1  # ticks that failed, however many of their steps did
            message = f"{type(error).__name__}: {error}"
            if message not in self.last_errors and message not in self.tick_errors:
                self.record(SupervisorError(error=message, errors=self.errors))
            self.tick_errors.append(message)
            return None

    def launch_abandoned(self) -> str | None:
        """Why the deployment can no longer run, now that its launcher is gone: inside a Slurm job the
        batch script (the supervisor's parent) ends with the job; elsewhere a launcher that ended with
        processes never started will start none of them."""
        if self.backend.traits.has_allocation:
            return abandoned(self.backend.traits.has_allocation, os.getppid() != self.parent, True, self.watch)
        launcher = self.run.pid_record("launcher")
        return abandoned(
            self.backend.traits.has_allocation, False, launcher is not None and pid_alive(*launcher), self.watch
        )

    def tick(self) -> None:
        now = time.time()
        # Each check on its own: one that raises (a stray entry under requests/, an odd reply) is recorded
        # and the others still run; the verdict above all never freezes.
        self.guarded(self.read_wanted)
        self.guarded(lambda: self.check_nodes(now))
        instances = self.guarded(lambda: self.observe_processes(now))
        self.guarded(lambda: self.restart_due(now))
        self.guarded(lambda: self.restart_requested(now))
        self.guarded(lambda: self.scale(now, instances))
        self.guarded(lambda: self.check_frontend(instances))
        self.guarded(lambda: self.check_canary(now))
        self.guarded(lambda: self.decide_verdict(now))
        self.write_state()

    # -- processes -------------------------------------------------------------------------------

    def observe_processes(self, now: float) -> list[dict[str, Any]] | None:
        """Each process, from the backend and its readiness probe; returns the frontend's instances (None
        when the frontend does not run, or does not answer)."""
        alive = self.backend.alive(self.run, in_job=True)
        answered = self.prober.probe(self.urls, PROBE_BUDGET_S)
        answers = {p.name: answered.get(p.ready_url) if p.ready_url else True for p in self.active}
        instances = frontend_instances(self.plan.endpoint, READY_PROBE_TIMEOUT_S) if alive.get("frontend") else None
        for process in self.active:
            self.observe(process, alive.get(process.name), answers[process.name], instances, now)
        return instances

    def observe(
        self,
        process: Process,
        alive: bool | None,
        answers: bool | None,
        instances: list[dict[str, Any]] | None,
        now: float,
    ) -> None:
        watch = self.watch[process.name]
        if watch.settled:
            return  # failed: waiting for its restart, or for good
        # No answer within the tick's budget (a slow reply, not a refusal) keeps a process as it was,
        # until it has not answered for SILENT_TICKS in a row.
        answers, watch.silent = judge_answer(watch.state, watch.silent, answers)
        node_problem = next(
            (f"node {n}: {self.node_problems[n]}" for n in process.nodes if n in self.node_problems), None
        )
        seen = Observation(
            alive=alive,
            answers=answers,
            ready_url=process.ready_url,
            node_problem=node_problem,
            exit_reason=exit_reason(self.run, process) if alive is False else "exited",
        )
        new, why = next_state(watch, seen)
        if new == ProcessState.READY:
            watch.served = True
        self.transition(process.name, new, why, now)
        if new == ProcessState.FAILED:
            self.forget_instances(process, instances)
            self.schedule_restart(process, now)

    def transition(self, name: str, new: ProcessState, why: str | None, now: float) -> None:
        watch = self.watch[name]
        if why:
            watch.last_error = why
        if new == watch.state:
            return
        self.record(StateChanged(process=name, previous=watch.state, state=new, reason=why or None))
        watch.state, watch.since = new, now
        self.own_metrics.changed(name, new)

    def forget_instances(self, process: Process, instances: list[dict[str, Any]] | None) -> None:
        """The frontend would route to a dead worker until its lease expires: drop its entries now."""
        ids = {i["instance_id"] for i in instances or [] if self.owners.owner(i) == process.name}
        if not ids:
            return
        removed = forget(self.plan, ids)
        if removed:
            self.record(Deregistered(process=process.name, instances=len(removed)))
        if removed != ids:
            self.record(DeregistrationFailed(process=process.name, instances=len(ids - removed)))

    def learn_instance_ids(self) -> None:
        """Instances that name no address (a NATS request plane): each serving worker's instance id, from
        its own /metrics, once per start."""
        for process in self.active:
            watch = self.watch[process.name]
            url = metrics_url(self.plan, process) if process.is_worker else None
            if url and watch.served and not watch.instance_known:
                ids = worker_ids(text_of(url))
                self.owners.learn(process.name, ids)
                watch.instance_known = bool(ids)

    def schedule_restart(self, process: Process, now: float) -> None:
        watch, policy = self.watch[process.name], self.plan.restart
        decision = decide_restart(watch.served, watch.restarts, policy, now)
        if decision.kind == RestartKind.STARTUP_FAILURE:
            watch.given_up = True  # it never served: a start-up failure, which the launcher reports
            return
        if decision.kind == RestartKind.GIVE_UP:
            watch.given_up = True
            watch.last_error = f"{watch.last_error}; restart budget spent ({decision.recent} in {policy.window_s:g} s)"
            self.record(RestartBudgetSpent(process=process.name, restarts=decision.recent, window_s=policy.window_s))
            if decision.cancel_deployment:
                self.cancel_everything(f"{process.name} failed for good and restart.fail_fast is set")
            return
        watch.restart_at = now + decision.delay_s
        self.record(RestartScheduled(process=process.name, in_s=decision.delay_s))

    def restart_due(self, now: float) -> None:
        for process in self.active:
            watch = self.watch[process.name]
            if watch.restart_at is None or now < watch.restart_at or self.stopping:
                continue
            watch.restart_at = None
            if self.run.cancel_requested:
                self.stopping = "slurmserve cancel"
                return
            watch.restarts.append(now)
            if not self.start_again(process, now, restarts=len(watch.restarts)):
                self.schedule_restart(process, now)  # try again under the same budget

    def restart_requested(self, now: float) -> None:
        """Restarts asked for (`RunDir.request_restart`: a benchmark's fresh caches): the process is stopped
        and started again in place by the same backend restart, but outside the restart budget."""
        for name in self.run.restart_requests():
            self.run.restart_done(name)
            if name not in self.watch or self.stopping or self.run.cancel_requested:
                continue
            self.record(RestartRequested(process=name))
            self.watch[name].restart_at = None
            self.start_again(self.plan.process(name), now, requested=True)

    def start_again(self, process: Process, now: float, restarts: int | None = None, requested: bool = False) -> bool:
        """The backend's restart of a process in place, recorded either way (after a failure: the
        restarts so far; or requested); False when it could not."""
        watch = self.watch[process.name]
        watch.served = watch.instance_known = False
        try:
            self.backend.restart(self.run, process)
        except Exception as error:  # the backend could not start it
            watch.last_error = f"restart failed: {error}"
            self.record(RestartFailed(process=process.name, error=str(error)))
            return False
        self.record(Restarted(process=process.name, restarts=restarts, requested=requested))
        self.own_metrics.restarted(process.name, requested)
        self.transition(process.name, ProcessState.STARTING, None, now)
        return True

    def cancel_everything(self, why: str) -> None:
        self.record(CancelRequested(reason=why))
        self.stopping = why
        self.verdict = Verdict.FAILED
        leftovers = self.backend.stop(self.run)
        self.record(Cancelled(reason=why, leftovers=leftovers))

    # -- the deployment as a whole -----------------------------------------------------------------

    def check_frontend(self, instances: list[dict[str, Any]] | None) -> None:
        if instances is None:
            self.frontend, self.listed = {}, None
            return
        routed = serving(instances)
        found = [self.owners.owner(instance) for instance in routed]
        if None in found:
            self.learn_instance_ids()
            found = [self.owners.owner(instance) for instance in routed]
        owners = list(dict.fromkeys(owner for owner in found if owner))  # a disagg global router serves two
        self.frontend = frontend_counts([self.plan.process(owner).role for owner in owners], self.wanted)
        registered = set(owners)  # a set: thousands of workers are looked up every tick
        for process in self.active:
            if process.is_worker:
                self.watch[process.name].registered = process.name in registered
        if all(seen for seen, _ in self.frontend.values()):
            self.listed = model_listed(self.plan.endpoint, self.plan.model, READY_PROBE_TIMEOUT_S)

    def check_nodes(self, now: float) -> None:
        problems = self.node_check.poll(self.threads, lambda: self.backend.node_problems(self.plan), now)
        if problems is None:
            return
        for node, problem in problems.items():
            if self.node_problems.get(node) != problem:
                self.record(NodeProblem(node=node, problem=problem))
        for node in set(self.node_problems) - set(problems):
            self.record(NodeRecovered(node=node))
        self.node_problems = problems

    def check_canary(self, now: float) -> None:
        if not self.served_once:
            return
        sent = self.canary_check.poll(self.threads, lambda: send_canary(self.plan), now)
        if sent is None:
            return
        result, self.pool_canaries = sent
        self.own_metrics.canary(result.ok, result.latency_s)
        if (self.canary.ok if self.canary else True) != result.ok:
            self.record(CanaryChanged(**result.model_dump()))
        if not result.ok:  # it holds the verdict at degraded: look again soon, not in a full interval
            self.canary_check.due = now + CANARY_RETRY_S
        self.canary = result

    def decide_verdict(self, now: float) -> None:
        view = DeploymentView(
            frontend=self.frontend,
            model_listed=self.listed,
            canary=self.canary,
            node_problems=self.node_problems,
            model=self.plan.model,
            endpoint=self.plan.endpoint,
        )
        # A worker scaling adds counts once it serves (or failed to start): meanwhile the deployment serves on.
        counted = {name: watch for name, watch in self.watch.items() if name not in self.added or name in self.reported}
        verdict, reason = decide_verdict(counted, view, self.served_once, now)
        if verdict == Verdict.READY:
            self.served_once = True
        if verdict != self.verdict:
            self.record(VerdictChanged(verdict=verdict, reason=reason))
            self.own_metrics.deployment_ready.set(1 if verdict == Verdict.READY else 0)
        self.verdict, self.reason = verdict, reason

    def record(self, event: RunEvent) -> None:
        self.recorded += 1
        self.run.record(event)

    def write_state(self, final: bool = False) -> None:
        """state.json; `final` when the supervisor stops watching (the backend answers from then on).
        Written when anything in it changed, else once a STATE_EVERY_S for the heartbeat: at thousands
        of processes the writing is a good part of a tick."""
        live = self.metrics.latest()
        changed = (
            self.verdict,
            self.reason,
            self.recorded,
            self.errors,
            tuple(self.frontend.items()),
            self.listed,
            self.canary,
            tuple(self.node_problems.items()),
            live.at if live else None,
        )
        if not final and changed == self.written and time.monotonic() - self.written_at < STATE_EVERY_S:
            return
        self.written, self.written_at = changed, time.monotonic()
        ticks = sorted(self.tick_times) or [0.0]
        self.run.save_supervisor_state(
            SupervisorState(
                updated=time.time(),
                final=final,
                pid=os.getpid(),
                host=socket.gethostname(),
                identity=self.identity,
                heartbeat=self.heartbeat,
                errors=self.errors,
                tick_s=round(self.tick_s, 4),
                tick_p50_s=round(ticks[len(ticks) // 2], 4),
                tick_p99_s=round(ticks[min(len(ticks) - 1, int(len(ticks) * 0.99))], 4),
                verdict=self.verdict,
                reason=self.reason,
                processes={name: watch.view() for name, watch in self.watch.items()},
                frontend=self.frontend,
                model_listed=self.listed,
                canary=self.canary,
                nodes=self.node_problems,
                metrics=live,
                metrics_endpoint=self.metrics_endpoint,
                pool_canaries=self.pool_canaries,
                autoscale=self.autoscale_view(),
            )
        )


def supervise(run: RunDir, signalled: list[int] | None = None) -> None:
    """Watch the run until it is stopped (SIGTERM, SIGINT) or nothing is left to watch. `signalled`: the
    signals that came while the program was starting (it then records its start and its stop, and ends)."""
    supervisor = Supervisor(run)
    signal.signal(signal.SIGTERM, supervisor.stop_on_signal)
    signal.signal(signal.SIGINT, supervisor.stop_on_signal)
    if signalled:
        supervisor.stopping = stopped_by(signalled[0])
    supervisor.run_until_stopped()
