"""What the CLI verbs do, above the backends: build a plan, submit it, report on it, tear it down."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .backends import backend_for
from .errors import DeploymentFailed, UserError
from .health import canary_completion, http_ok, model_listed, throttled, wait_until, workers_seen
from .hosts import Hosts, default_hosts, load_hosts
from .plan import PORT_BLOCKS, Plan, make_plan
from .recipe import Recipe, load_recipe
from .render import LAUNCHER_LOG, rendered_files, write_files
from .runs import RunDir, create_run, live_runs, new_run_name, run_dir_for

LIVENESS_CHECK_INTERVAL_S = 1.0  # asking a scheduler costs more than an HTTP probe
SUPERVISOR_SETTLE_S = 5.0
SUPERVISOR_STALE_S = 10.0  # a state.json older than this: the supervisor is gone
# Dynamo registers a disaggregated prefill worker as component "prefill"; decode and agg workers as "backend".
FRONTEND_COMPONENT_OF_ROLE = {"prefill": "prefill", "decode": "backend", "agg": "backend"}


@dataclass
class Inputs:
    recipe: Recipe
    hosts: Hosts


def load_inputs(recipe: str, hosts: str | None, assignments: list[str]) -> Inputs:
    return Inputs(load_recipe(recipe, assignments), load_hosts(hosts) if hosts else default_hosts())


def plan_for(inputs: Inputs, run_name: str | None = None, run_dir: str | None = None, avoid_live_runs: bool = False,
             kv_preflight: bool | None = None) -> Plan:
    """Plan a run. With `avoid_live_runs`, pick a port block no live run on the same nodes holds."""
    name = run_name or new_run_name(inputs.recipe.name)
    directory = run_dir or str(run_dir_for(name, inputs.hosts.run_root))
    python = inputs.hosts.python or sys.executable
    plan = make_plan(inputs.recipe, inputs.hosts, run_name=name, run_dir=directory, python=python, kv_preflight=kv_preflight)
    if not avoid_live_runs:
        return plan
    ours = {node.name for node in plan.nodes}
    taken = {other.port_block for other in (run.plan() for run in live_runs()) if ours & {node.name for node in other.nodes}}
    if plan.port_block not in taken:
        return plan
    for step in range(1, PORT_BLOCKS):
        block = (plan.port_block + step) % PORT_BLOCKS
        if block not in taken:
            return make_plan(inputs.recipe, inputs.hosts, run_name=name, run_dir=directory, python=python, port_block=block,
                             kv_preflight=kv_preflight)
    raise UserError("every port block is held by a live run on these nodes; cancel some runs first")


def stages_a_model(inputs: Inputs) -> bool:
    recipe, hosts = inputs.recipe, inputs.hosts
    return recipe.loads_recipe_model and recipe.model.on_hub and hosts.model_cache is not None


def pin_model(inputs: Inputs) -> Inputs:
    """Resolve a staged model's revision to its commit. One call to the hub, which also checks repo,
    revision and token (exit 2) before anything starts; workers then get the snapshot path, offline."""
    if not stages_a_model(inputs):
        return inputs
    from .modelcache import resolve_revision  # huggingface_hub: imported only when a model is staged

    model = inputs.recipe.model
    pinned = model.model_copy(update={"revision": resolve_revision(model)})
    return Inputs(inputs.recipe.model_copy(update={"model": pinned}), inputs.hosts)


def stage_model(inputs: Inputs) -> Path:
    """Fetch the recipe's model into the hosts' shared cache, on this machine (`stage-model`)."""
    if inputs.hosts.model_cache is None:
        raise UserError("model_cache: the hosts file names no shared model cache to stage into")
    if not inputs.recipe.model.on_hub:
        raise UserError(f"model.repo {inputs.recipe.model.repo!r} is a local folder: there is nothing to stage")
    from .modelcache import stage_model as fetch

    return fetch(inputs.recipe.model, inputs.hosts.model_cache)


def render_to(plan: Plan, out: Path, force: bool) -> list[Path]:
    return write_files(rendered_files(plan), out, overwrite=force)


def save_inputs(run: RunDir, inputs: Inputs) -> None:
    """The resolved recipe and hosts, so the run can be understood (and re-planned) from its folder alone."""
    for name, model in (("recipe.yaml", inputs.recipe), ("hosts.yaml", inputs.hosts)):
        (run.path / name).write_text(yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False))


def wait_serving(plan: Plan, timeout: float, still_worth_waiting) -> tuple[str | None, dict | None]:
    """Wait until the frontend sees every planned worker, lists the model and completes a request.

    Returns (None, that completion) when serving, else (what was still missing at the deadline, None).
    """
    expected = {}
    for role, count in plan.workers_expected.items():
        component = FRONTEND_COMPONENT_OF_ROLE[role]
        expected[component] = expected.get(component, 0) + count
    checks = [
        ("frontend answering", lambda: http_ok(f"{plan.endpoint}/health")),
        ("workers registered with the frontend", lambda: all(workers_seen(plan.endpoint)[c] >= n for c, n in expected.items())),
        (f"model {plan.model} listed", lambda: model_listed(plan.endpoint, plan.model)),
    ]
    deadline = time.monotonic() + timeout
    for label, check in checks:
        if not wait_until(check, max(0.0, deadline - time.monotonic()), still_worth_waiting):
            return label, None
    # Listed is not yet routable (a known Dynamo race): only a real completion proves it.
    sample = None

    def completes() -> bool:
        nonlocal sample
        sample = canary_completion(plan.endpoint, plan.model)
        return sample is not None

    if not wait_until(completes, max(0.0, deadline - time.monotonic()), still_worth_waiting):
        return "a completion with generated tokens", None
    return None, sample


def launcher_tail(run: RunDir, lines: int = 15) -> str:
    """The end of the launch script's own output: where a failed readiness probe says what it saw."""
    path = run.path / LAUNCHER_LOG
    if not path.exists() or not path.read_text().strip():
        return ""
    return f"\n--- last lines of {path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Submitted:
    run: RunDir
    plan: Plan
    sample: dict | None  # a completion, when submit waited for readiness


def submit(inputs: Inputs, run_name: str | None, wait: bool, timeout: float, kv_preflight: bool | None = None) -> Submitted:
    inputs = pin_model(inputs)
    plan = plan_for(inputs, run_name, avoid_live_runs=True, kv_preflight=kv_preflight)
    backend = backend_for(plan.backend)
    backend.preflight(plan)
    if plan.model_stage and plan.backend != "slurm":  # Slurm stages in a step of the job, on a node
        stage_model(inputs)
    run = create_run(plan)
    save_inputs(run, inputs)
    write_files(rendered_files(plan), run.path, overwrite=True)
    run.record("submitted")
    try:
        backend.launch(plan, run, wait=wait)
    except DeploymentFailed:
        run.record("failed")
        raise
    if not wait:
        return Submitted(run, plan, None)

    def dead() -> list[str]:
        return [name for name, alive in backend.alive(run).items() if alive is False]

    missing, sample = wait_serving(plan, timeout, throttled(lambda: not dead(), LIVENESS_CHECK_INTERVAL_S))
    if missing:
        gone = dead()
        leftovers = backend.stop(run)
        run.record("failed", waiting_for=missing, dead=gone)
        reason = f"process(es) {', '.join(gone)} exited" if gone else f"not ready within {timeout:g} s"
        raise DeploymentFailed(
            f"run {plan.run_name}: {reason} while waiting for {missing}; everything was stopped"
            + (f" except {', '.join(leftovers)}" if leftovers else "") + f". Logs: {run.path / 'logs'}"
            + launcher_tail(run))
    run.record("ready", endpoint=plan.endpoint)
    # Return once `status` agrees (the supervisor's next ticks), so that a script may ask it at once.
    wait_until(lambda: (run.supervisor_state() or {}).get("verdict") == "ready", SUPERVISOR_SETTLE_S)
    return Submitted(run, plan, sample)


@dataclass
class ProcessState:
    name: str
    role: str
    nodes: list[str]
    gpus: list[int]
    ports: dict[str, int]
    state: str  # pending | starting | ready | unhealthy | failed | stopped
    since: float | None = None
    restarts: int = 0
    last_error: str | None = None
    registered: bool | None = None  # a worker the frontend routes to


@dataclass
class RunStatus:
    run: str
    verdict: str  # starting | ready | degraded | failed | stopped
    reason: str
    supervised: bool  # a live supervisor's view, as opposed to asking the backend directly
    scheduler: str
    endpoint: str
    processes: list[ProcessState]
    frontend: dict  # role -> [seen, expected]
    canary: dict
    nodes: dict  # node -> problem


def run_status(run: RunDir) -> RunStatus:
    """The live supervisor's picture when there is one; else the backend's answer, now."""
    plan = run.plan()
    backend = backend_for(plan.backend)
    state = run.supervisor_state()
    cancelled = run.cancelled  # read once: each call parses events.jsonl
    live = state is not None and not state["final"] and time.time() - state["updated"] < SUPERVISOR_STALE_S and not cancelled
    watched = state["processes"] if state else {}

    def process_state(process, current: str) -> ProcessState:
        seen = watched.get(process.name, {})
        return ProcessState(process.name, process.role, process.nodes, process.gpus, process.ports, current,
                            seen.get("since"), seen.get("restarts", 0), seen.get("last_error"), seen.get("registered"))

    common = {"run": run.name, "scheduler": backend.describe(run), "endpoint": plan.endpoint}
    if live:
        processes = [process_state(p, watched[p.name]["state"]) for p in plan.processes]
        return RunStatus(verdict=state["verdict"], reason=state["reason"], supervised=True, processes=processes,
                         frontend=state["frontend"], canary=state["canary"], nodes=state["nodes"], **common)
    ended = None if cancelled else backend.ended(run)
    alive_of = backend.alive(run)
    processes = [process_state(p, direct_state(p, alive_of[p.name], cancelled or ended is not None)) for p in plan.processes]
    verdict, reason = direct_verdict(processes, cancelled, ended)
    return RunStatus(verdict=verdict, reason=reason, supervised=False, processes=processes, frontend={}, canary={},
                     nodes={}, **common)


def direct_state(process, alive: bool | None, stopped: bool) -> str:
    if alive is None:
        return "stopped" if stopped else "pending"
    if not alive:
        return "stopped" if stopped else "failed"
    return "ready" if process.ready_url is None or http_ok(process.ready_url) else "starting"


def direct_verdict(states: list[ProcessState], cancelled: bool, ended: str | None) -> tuple[str, str]:
    """One word for the whole run, without a supervisor: ready, starting, degraded (a worker down),
    failed, or stopped; and why."""
    kinds = {state.state for state in states}
    if cancelled:
        return "stopped", "cancelled with slurmserve cancel"
    if ended:
        return "stopped", f"{ended}: stopped outside slurmserve (or by its time limit); `slurmserve cancel` cleans up"
    if kinds <= {"stopped"}:
        return "stopped", "no process is running"
    unsupervised = "no supervisor running"
    if kinds == {"ready"}:
        return "ready", unsupervised
    failed = [s.name for s in states if s.state == "failed"]
    if not failed:
        return "starting", unsupervised
    control_failed = any(s.state == "failed" and s.role in ("etcd", "nats", "frontend") for s in states)
    nothing_alive = kinds <= {"failed", "pending"}
    return ("failed" if control_failed or nothing_alive else "degraded"), f"{', '.join(failed)} exited; {unsupervised}"


def show_log(run: RunDir, process: str, follow: bool) -> None:
    run.plan().process(process)  # an unknown name is the user's error, whatever the backend
    backend_for(run.plan().backend).show_log(run, process, follow)


def cancel(run: RunDir) -> list[str]:
    run.record("cancel requested")  # the supervisor restarts nothing from here on
    leftovers = backend_for(run.plan().backend).stop(run)
    run.record("cancelled", leftovers=leftovers)
    return leftovers
