"""The supervisor: `python -m slurmserve.supervisor RUN_DIR` watches a deployment for as long as it runs.

The launcher starts it before the first process: the sbatch script inside the allocation (Slurm), the
launch script or `submit` on the launching machine (local, SSH). Every tick it asks the backend which
processes are alive and probes each one's readiness URL (worker status port, etcd /health, NATS
/healthz, frontend /health), and reads the frontend's list of worker instances; less often it checks the
nodes' daemons and sends a canary completion. State transitions (pending -> starting -> ready ->
unhealthy -> failed | stopped) go to events.jsonl with their reasons; the current picture goes to
state.json, which `slurmserve status` shows.

A process that dies after it served is started again in place (same node, GPUs, ports) through the run's
own launch script, under the recipe's restart policy. A dead worker's discovery entry is dropped at once,
so the frontend stops routing to it instead of waiting out its lease. One that dies before it ever served
is left to the launcher, which reports start-up failures.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .backends import backend_for
from .discovery import forget, owner_of
from .health import canary_completion, frontend_instances, http_ok, model_listed
from .plan import Process
from .runs import RunDir

TICK_S = 0.5
PROBE_TIMEOUT_S = 1.0  # a process that takes longer to answer its status port is not healthy
NODE_CHECK_INTERVAL_S = 2.0
CANARY_INTERVAL_S = 10.0
CANARY_RETRY_S = 1.0
LAST_LOG_LINE_CHARS = 200
LOG_LINES_SEARCHED = 20


@dataclass
class Watch:
    """What the supervisor knows of one process."""

    state: str = "pending"
    since: float = field(default_factory=time.time)
    restarts: list[float] = field(default_factory=list)  # when each restart happened
    last_error: str | None = None
    served: bool = False  # ready at least once since it last started
    restart_at: float | None = None
    given_up: bool = False
    registered: bool | None = None  # a worker the frontend routes to (None: not a worker, or unknown)

    def view(self) -> dict:
        return {"state": self.state, "since": self.since, "restarts": len(self.restarts), "last_error": self.last_error,
                "registered": self.registered, "restart_at": self.restart_at}


@dataclass
class Periodic:
    """A slow check run in the background every `interval` seconds; the tick takes its result when done."""

    interval: float
    due: float = 0.0
    running: Future | None = None

    def poll(self, pool: ThreadPoolExecutor, work, now: float):
        """Start the check when due; return its result once (None while none is new)."""
        if self.running is None:
            if now >= self.due:
                self.running = pool.submit(work)
            return None
        if not self.running.done():
            return None
        result, self.running, self.due = self.running.result(), None, now + self.interval
        return result


class Supervisor:
    def __init__(self, run: RunDir):
        self.run = run
        self.plan = run.plan()
        self.backend = backend_for(self.plan.backend)
        self.watch = {process.name: Watch() for process in self.plan.processes}
        self.verdict, self.reason = "starting", "starting the processes"
        self.served_once = False
        self.stopping: str | None = None
        self.wake = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=8)
        self.frontend: dict[str, list[int]] = {}
        self.listed: bool | None = None
        self.canary: dict = {}
        self.node_problems: dict[str, str] = {}
        self.node_check, self.canary_check = Periodic(NODE_CHECK_INTERVAL_S), Periodic(CANARY_INTERVAL_S)

    # -- the loop --------------------------------------------------------------------------------

    def run_until_stopped(self) -> None:
        self.run.record("supervisor started", pid=os.getpid(), host=socket.gethostname())
        while not self.stopping:
            self.tick()
            if self.nothing_left():
                self.stopping = "every process has ended and none will be restarted"
                break
            self.wake.wait(TICK_S)
        self.verdict, self.reason = ("failed" if self.verdict == "failed" else "stopped"), self.stopping
        self.write_state(final=True)
        self.run.record("supervisor stopped", reason=self.stopping)

    def stop_on_signal(self, signum: int, _frame) -> None:
        self.stopping = f"{signal.Signals(signum).name}: the deployment is being stopped (cancel, scancel or time limit)"
        self.wake.set()

    def tick(self) -> None:
        now = time.time()
        alive = self.backend.supervised_alive(self.run)
        answers = dict(zip(self.watch, self.pool.map(answers_probe, self.plan.processes)))
        instances = frontend_instances(self.plan.endpoint, PROBE_TIMEOUT_S) if alive.get("frontend") else None
        self.check_nodes(now)
        for process in self.plan.processes:
            self.observe(process, alive.get(process.name), answers[process.name], instances, now)
        self.restart_due(now)
        self.check_frontend(instances)
        self.check_canary(now)
        self.decide_verdict()
        self.write_state()

    def nothing_left(self) -> bool:
        watches = self.watch.values()
        return all(w.state in ("failed", "stopped") and w.restart_at is None for w in watches) and any(
            w.state == "failed" for w in watches)

    # -- processes -------------------------------------------------------------------------------

    def observe(self, process: Process, alive: bool | None, answers: bool, instances: list[dict] | None, now: float) -> None:
        watch = self.watch[process.name]
        if watch.given_up or watch.restart_at is not None:
            return  # failed: waiting for its restart, or for good
        node_problem = next((f"node {n}: {self.node_problems[n]}" for n in process.nodes if n in self.node_problems), None)
        if alive is None:
            new, why = ("pending", None) if watch.state == "pending" else ("unhealthy", node_problem or "its liveness cannot be checked")
        elif alive is False:
            new, why = "failed", self.exit_reason(process)
        elif answers:
            new, why = "ready", None
            watch.served = True
        elif watch.served:
            new, why = "unhealthy", node_problem or f"{process.ready_url} does not answer"
        else:
            new, why = "starting", None
        self.transition(process.name, new, why, now)
        if new == "failed":
            self.forget_instances(process, instances)
            self.schedule_restart(process, now)

    def transition(self, name: str, new: str, why: str | None, now: float) -> None:
        watch = self.watch[name]
        if why:
            watch.last_error = why
        if new == watch.state:
            return
        self.run.record("state", process=name, previous=watch.state, state=new, **({"reason": why} if why else {}))
        watch.state, watch.since = new, now

    def exit_reason(self, process: Process) -> str:
        """'exited', with the last error its log shows near the end (a SIGKILL leaves none)."""
        log = self.run.path / process.log
        tail = log.read_text(errors="replace").splitlines()[-LOG_LINES_SEARCHED:] if log.exists() else []
        error = next((line for line in reversed(tail) if "error" in line.lower() or "traceback" in line.lower()), None)
        return "exited" + (f"; its log: {error.strip()[:LAST_LOG_LINE_CHARS]}" if error else " (no error in its log: killed?)")

    def forget_instances(self, process: Process, instances: list[dict] | None) -> None:
        """The frontend would route to a dead worker until its lease expires: drop its entries now."""
        ids = {i["instance_id"] for i in instances or [] if owner_of(self.plan, i) == process.name}
        if ids:
            forget(self.plan, ids)
            self.run.record("deregistered", process=process.name, instances=len(ids))

    def schedule_restart(self, process: Process, now: float) -> None:
        watch, policy = self.watch[process.name], self.plan.restart
        if not (watch.served or watch.restarts):
            watch.given_up = True  # it never served: a start-up failure, which the launcher reports
            return
        recent = [at for at in watch.restarts if now - at < policy.window_s]
        if len(recent) >= policy.max_restarts:
            watch.given_up = True
            watch.last_error = f"{watch.last_error}; restart budget spent ({len(recent)} in {policy.window_s:g} s)"
            self.run.record("restart budget spent", process=process.name, restarts=len(recent), window_s=policy.window_s)
            if policy.fail_fast:
                self.cancel_everything(f"{process.name} failed for good and restart.fail_fast is set")
            return
        delay = policy.backoff_s * 2 ** len(recent)
        watch.restart_at = now + delay
        self.run.record("restart scheduled", process=process.name, in_s=delay)

    def restart_due(self, now: float) -> None:
        for process in self.plan.processes:
            watch = self.watch[process.name]
            if watch.restart_at is None or now < watch.restart_at or self.stopping:
                continue
            watch.restart_at = None
            if self.run.cancel_requested:
                self.stopping = "slurmserve cancel"
                return
            watch.restarts.append(now)
            watch.served = False
            try:
                self.backend.restart(self.run, process)
            except Exception as error:  # the backend could not start it: try again under the same budget
                watch.last_error = f"restart failed: {error}"
                self.run.record("restart failed", process=process.name, error=str(error))
                self.schedule_restart(process, now)
                continue
            self.run.record("restarted", process=process.name, restarts=len(watch.restarts))
            self.transition(process.name, "starting", None, now)

    def cancel_everything(self, why: str) -> None:
        self.run.record("cancel requested", reason=why)
        self.stopping = why
        self.verdict = "failed"
        leftovers = self.backend.stop(self.run)
        self.run.record("cancelled", reason=why, leftovers=leftovers)

    # -- the deployment as a whole -----------------------------------------------------------------

    def check_frontend(self, instances: list[dict] | None) -> None:
        if instances is None:
            self.frontend, self.listed = {}, None
            return
        owners = [owner_of(self.plan, instance) for instance in instances]
        seen = Counter(self.plan.process(owner).role for owner in owners if owner)
        self.frontend = {role: [seen[role], expected] for role, expected in self.plan.workers_expected.items()}
        for process in self.plan.processes:
            if process.is_worker:
                self.watch[process.name].registered = process.name in owners
        if all(seen[role] for role in self.plan.workers_expected):
            self.listed = model_listed(self.plan.endpoint, self.plan.model, PROBE_TIMEOUT_S)

    def check_nodes(self, now: float) -> None:
        problems = self.node_check.poll(self.pool, lambda: self.backend.node_problems(self.plan), now)
        if problems is None:
            return
        for node, problem in problems.items():
            if self.node_problems.get(node) != problem:
                self.run.record("node problem", node=node, problem=problem)
        for node in set(self.node_problems) - set(problems):
            self.run.record("node recovered", node=node)
        self.node_problems = problems

    def check_canary(self, now: float) -> None:
        if not self.served_once:
            return
        result = self.canary_check.poll(self.pool, self.send_canary, now)
        if result is None:
            return
        if self.canary.get("ok", True) != result["ok"]:
            self.run.record("canary", **result)
        if not result["ok"]:  # it holds the verdict at degraded: look again soon, not in a full interval
            self.canary_check.due = now + CANARY_RETRY_S
        self.canary = result

    def send_canary(self) -> dict:
        started = time.time()
        completion = canary_completion(self.plan.endpoint, self.plan.model)
        result = {"ok": completion is not None, "at": started, "latency_s": round(time.time() - started, 3)}
        return result if completion else result | {"error": "no completion with generated tokens (an error, or no answer within 10 s)"}

    def problems(self) -> list[str]:
        """What keeps the deployment from being fully ready, in words."""
        found = []
        for name, watch in self.watch.items():
            if watch.state != "ready":
                when = f", restart in {max(0.0, watch.restart_at - time.time()):.1f} s" if watch.restart_at else ""
                found.append(f"{name} {watch.state}{when}")
        found += [f"frontend sees {role} {seen}/{expected}" for role, (seen, expected) in self.frontend.items() if seen < expected]
        if self.listed is False:
            found.append(f"model {self.plan.model} not listed by the frontend")
        if self.canary and not self.canary["ok"]:
            found.append(f"canary: {self.canary.get('error')}")
        found += [f"node {node}: {problem}" for node, problem in self.node_problems.items()]
        return found

    def decide_verdict(self) -> None:
        problems = self.problems()
        given_up = [name for name, watch in self.watch.items() if watch.given_up]
        if given_up:
            verdict, reason = "failed", f"{', '.join(given_up)} failed for good: {self.watch[given_up[0]].last_error}"
        elif not problems and self.frontend:
            verdict, reason = "ready", f"serving at {self.plan.endpoint}"
            self.served_once = True
        elif not self.served_once:
            verdict, reason = "starting", "; ".join(problems) or "waiting for the frontend to see the workers"
        else:
            verdict, reason = "degraded", "; ".join(problems) or "the frontend does not answer"
        if verdict != self.verdict:
            self.run.record("deployment", verdict=verdict, reason=reason)
        self.verdict, self.reason = verdict, reason

    def write_state(self, final: bool = False) -> None:
        """state.json; `final` when the supervisor stops watching (the backend answers from then on)."""
        self.run.save_supervisor_state({
            "updated": time.time(), "final": final, "pid": os.getpid(), "host": socket.gethostname(),
            "verdict": self.verdict, "reason": self.reason,
            "processes": {name: watch.view() for name, watch in self.watch.items()},
            "frontend": self.frontend, "model_listed": self.listed, "canary": self.canary, "nodes": self.node_problems,
        })


def answers_probe(process: Process) -> bool:
    return process.ready_url is None or http_ok(process.ready_url, timeout=PROBE_TIMEOUT_S)


def main(run_dir: str) -> None:
    supervisor = Supervisor(RunDir(Path(run_dir)))
    signal.signal(signal.SIGTERM, supervisor.stop_on_signal)
    signal.signal(signal.SIGINT, supervisor.stop_on_signal)
    supervisor.run_until_stopped()


if __name__ == "__main__":
    main(sys.argv[1])
