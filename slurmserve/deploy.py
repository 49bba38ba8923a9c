"""The verbs, as a small Python API: the CLI calls these, and so can scripts and notebooks.

    from slurmserve import deploy

    prepared = deploy.prepare("mocker-disagg")        # the dry run: the plan and every file, nothing started
    print(prepared.script)                           # what `submit --dry-run` prints
    deployment = deploy.submit(prepared)             # launch what prepare() returned, wait until it serves
    report = deploy.status(deployment.run)           # the supervisor's picture (or the backend's, now)
    for line in deploy.logs(deployment.run, "frontend"):
        ...
    deploy.cancel(deployment.run)                    # everything stopped; what survived, if anything

`submit` is `launch(prepare(...))`: whatever the dry run shows is what starts.
"""

from __future__ import annotations

import functools
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .backends import backend_for, traits_for
from .backends.base import Backend, Launch
from .bench.plots import draw as draw_plots
from .bench.results import BenchSummary, PointResult, read_summary, text_table
from .bench.runner import BenchRequest
from .bench.runner import bench as run_bench
from .bench.runner import compare as compare_benchmarks
from .bench.sweep import SweepPoint, current_summary, default_folder, results_key, save_point, sweep_key
from .config.fields import check_identifier
from .config.hosts import Hosts, load_hosts
from .config.recipe import Recipe, load_recipe
from .errors import DeploymentFailed, Interrupted, UserError
from .hardware.discovery import default_hosts, with_local_nodes
from .health.decisions import direct_state, direct_verdict
from .interrupts import signals_held
from .observability.dashboard import DATASOURCE_FILE, dashboard_for, datasource_provisioning
from .observability.prometheus import OPEN_LOCK, OpenedData, free_port, open_saved, open_url
from .observability.targets import file_sd_targets
from .planning.plan import FRONTEND_COMPONENT_OF_ROLE, PROMETHEUS_DATA, PROMETHEUS_READY_PATH, Plan, Process
from .planning.planner import make_plan
from .planning.ports import PORT_BLOCKS
from .private import lock_record, make_out_dir, make_private_dir, take_lock, write_private, write_whole
from .render.files import link_served_model, rendered_files, write_files
from .render.scripts import LAUNCHER_LOG
from .resources import bundled_binary
from .runs import (
    CanaryResult,
    EventKind,
    LiveMetrics,
    ProcessState,
    RunDir,
    SupervisorState,
    Verdict,
    aside_path,
    create_run,
    list_runs,
    live_runs,
    name_holders,
    new_run_name,
    remove_run,
    run_dir_for,
    set_aside,
    slurmserve_home,
)
from .runs.events import Cancelled, CancelRequested, Failed, Ready, Submitted
from .transport.http import canary_completion, http_ok, model_listed, workers_seen
from .waiting import fan_out, throttled, wait_until

LIVENESS_CHECK_INTERVAL_S = 1.0  # asking a scheduler costs more than an HTTP probe
SUPERVISOR_SETTLE_S = 5.0
HEARTBEAT_WAIT_S = 3.0  # a supervisor on another machine that has not ticked in this long is gone
LAUNCHER_REPORT_S = 5.0  # how long a launcher gets to report a failure submit saw first
DEFAULT_TIMEOUT_S = 600.0
SWEEP_DEADLINE_S = 7 * 24 * 3600.0  # deployments side by side on Slurm: each ends on its own (queue, bench)


@dataclass(frozen=True)
class Inputs:
    recipe: Recipe
    hosts: Hosts


def load_inputs(recipe: str, hosts: str | None = None, assignments: Sequence[str] = ()) -> Inputs:
    """A recipe (built-in name or file) with `--set` assignments, and a hosts file (default: the Slurm
    cluster this machine submits to, else this machine)."""
    return Inputs(load_recipe(recipe, assignments), with_local_nodes(load_hosts(hosts)) if hosts else default_hosts())


def plan_for(
    inputs: Inputs,
    run_name: str | None = None,
    run_dir: str | None = None,
    avoid_live_runs: bool = False,
    kv_preflight: bool | None = None,
) -> Plan:
    """Plan a run. With `avoid_live_runs`, pick a port block no live run on the same nodes holds."""
    name = check_identifier(run_name, "--name") if run_name else new_run_name(inputs.recipe.name)
    directory = run_dir or str(run_dir_for(name, inputs.hosts.run_root))
    python = inputs.hosts.python or sys.executable

    configured = inputs.hosts.control_plane
    # The hosts file's binaries, each of them (its Prometheus too); etcd and nats-server default to the venv's.
    binaries = configured.model_copy(
        update={
            "etcd": configured.etcd or bundled_binary("etcd", python),
            "nats_server": configured.nats_server or bundled_binary("nats-server", python),
        }
    )

    def plan_in(block: int | None) -> Plan:
        return make_plan(
            inputs.recipe,
            inputs.hosts,
            traits_for(inputs.hosts.backend),
            run_name=name,
            run_dir=directory,
            python=python,
            port_block=block,
            kv_preflight=kv_preflight,
            binaries=binaries,
        )

    plan = plan_in(None)
    if not avoid_live_runs:
        return plan
    ours = {node.name for node in plan.nodes}
    taken = {
        other.port_block for other in (run.plan() for run in live_runs()) if ours & {node.name for node in other.nodes}
    }
    for step in range(PORT_BLOCKS):
        block = (plan.port_block + step) % PORT_BLOCKS
        if block not in taken:
            return plan if step == 0 else plan_in(block)
    raise UserError("every port block is held by a live run on these nodes; cancel some runs first")


def stages_a_model(inputs: Inputs) -> bool:
    recipe, hosts = inputs.recipe, inputs.hosts
    return recipe.loads_recipe_model and recipe.model.on_hub and hosts.model_cache is not None


def pin_model(inputs: Inputs, dry_run: bool = False) -> tuple[Inputs, str | None]:
    """Resolve a staged model's revision to its commit. One call to the hub, which also checks repo,
    revision and token (exit 2) before anything starts; workers then get the snapshot path, offline.
    The hub is asked only when it must be: a pinned snapshot the model cache already holds needs no call,
    and a dry run the hub does not answer (or HF_HUB_OFFLINE=1 keeps from asking) goes on unverified,
    with the reason as a warning (returned beside the inputs)."""
    if not stages_a_model(inputs):
        return inputs, None
    # huggingface_hub: imported only when a model is staged
    from .modelcache.hub import HubUnreachable, resolve_revision
    from .modelcache.staging import staged_snapshot

    model = inputs.recipe.model
    if staged_snapshot(model, inputs.hosts.model_cache or "") is not None:
        return inputs, None
    try:
        pinned = model.model_copy(update={"revision": resolve_revision(model)})
    except HubUnreachable as error:
        if not dry_run:
            raise
        revision = model.revision or "main"
        return inputs, f"model.repo {model.repo} at revision {revision} not verified ({error.reason}): submit checks it"
    return Inputs(inputs.recipe.model_copy(update={"model": pinned}), inputs.hosts), None


@dataclass(frozen=True)
class Prepared:
    """Everything `submit` will start, before anything has: the first half of `submit`."""

    inputs: Inputs
    plan: Plan
    files: dict[str, str]  # the run directory's files that come from the plan: relative path -> text

    @property
    def script(self) -> str:
        """The script that starts the deployment (what `submit --dry-run` prints)."""
        return self.files[traits_for(self.plan.backend).launch_script]


def prepare(
    recipe: str,
    hosts: str | None = None,
    assignments: Sequence[str] = (),
    *,
    name: str | None = None,
    run_dir: str | None = None,
    kv_preflight: bool | None = None,
    dry_run: bool = False,
) -> Prepared:
    """The dry run: inputs loaded and checked, the model's revision pinned, a port block no live run
    holds, the plan and every file rendered. Starts nothing and writes nothing. With `dry_run` (only
    shown, never submitted), a hub that does not answer is a warning in the plan, not an error."""
    inputs, unverified = pin_model(load_inputs(recipe, hosts, assignments), dry_run)
    plan = plan_for(inputs, name, run_dir, avoid_live_runs=True, kv_preflight=kv_preflight)
    if unverified:
        plan = plan.model_copy(update={"warnings": [*plan.warnings, unverified]})
    # plan.json among them, read back through the plan's model: `status` and `cancel` will read it.
    return Prepared(inputs, plan, rendered_files(plan, traits_for(plan.backend)))


def render_to(prepared: Prepared, out: Path, force: bool) -> list[Path]:
    """Every file and link the scripts use, in a folder the user named."""
    written = write_files(prepared.files, out, overwrite=force)  # a run directory: private, as submit's
    try:
        link = link_served_model(prepared.plan, out)
    except OSError as error:
        raise UserError(f"--out {out}: cannot write there ({error.strerror}: {error.filename})") from None
    return written if link is None else [*written, link]


def stage_model(inputs: Inputs) -> Path:
    """Fetch the recipe's model into the hosts' shared cache, on this machine (`stage-model`)."""
    if inputs.hosts.model_cache is None:
        raise UserError("model_cache: the hosts file names no shared model cache to stage into")
    if not inputs.recipe.model.on_hub:
        raise UserError(f"model.repo {inputs.recipe.model.repo!r} is a local folder: there is nothing to stage")
    from .modelcache.staging import fetch_to_cache

    return fetch_to_cache(inputs.recipe.model, inputs.hosts.model_cache)


def save_inputs(run: RunDir, inputs: Inputs) -> None:
    """The resolved recipe and hosts, so the run can be understood (and re-planned) from its folder alone."""
    for name, model in (("recipe.yaml", inputs.recipe), ("hosts.yaml", inputs.hosts)):
        write_private(run.path / name, yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False))


@dataclass(frozen=True)
class Deployment:
    """A submitted deployment: its run directory (all that `status`, `logs` and `cancel` need) and plan."""

    run: RunDir
    plan: Plan
    sample: dict[str, Any] | None = None  # a completion, when submit waited for readiness

    @property
    def endpoint(self) -> str:
        return self.plan.endpoint


def stopped(run: RunDir) -> bool:
    """Nothing of the run runs, nor can start again, as its backend sees it: only such a run is set aside
    (its name taken again) or removed."""
    return backend_for(run.plan().backend).finished(run)


def take_name(plan: Plan) -> None:
    """Free the plan's run name: a stopped run holding it is set aside (renamed with its start time, still
    readable by `status` and `logs`); a live one keeps it (exit 2)."""
    for held in name_holders(plan):
        if held.is_symlink() and not held.exists():  # the home folder's link to a run removed by hand
            held.unlink()
            continue
        run = RunDir(held.resolve())
        if not (run.path / "plan.json").exists():
            raise UserError(
                f"--name {plan.run_name}: {held} is in the way and holds no run: remove it, or choose another name"
            )
        if not stopped(run):
            raise UserError(
                f"--name {plan.run_name}: run {run.name} ({run.path}) is live: cancel it first "
                f"(slurmserve cancel {run.name}), or choose another name"
            )
        target = aside_path(run)
        backend_for(run.plan().backend).move_run_dir(run.plan(), str(target))
        set_aside(run, target)


def remove(runs: list[RunDir]) -> None:
    """Delete stopped runs' folders; refuses (exit 2, nothing removed) when any of them is live."""
    live = [run.name for run in runs if not stopped(run)]
    if live:
        raise UserError(
            f"live run(s) {', '.join(live)}: cancel first (slurmserve cancel RUN), then remove; nothing was removed"
        )
    for run in runs:
        remove_run(run)


def prune(older_than_s: float) -> list[str]:
    """Remove every stopped run that has recorded nothing for `older_than_s` seconds; their names."""
    cutoff = time.time() - older_than_s
    old = [run for run in list_runs() if run.last_active() < cutoff and stopped(run)]
    for run in old:
        remove_run(run)
    return [run.name for run in old]


def submit(prepared: Prepared, *, wait: bool = True, timeout: float = DEFAULT_TIMEOUT_S) -> Deployment:
    """Launch what `prepare` returned. With `wait`, return once the frontend sees every planned worker,
    lists the model and has answered a real completion; raise DeploymentFailed (after stopping
    everything) when the deployment fails first or is not ready within `timeout` seconds. Interrupted
    (KeyboardInterrupt) before it returns, it cancels the run and raises Interrupted."""
    plan, inputs = prepared.plan, prepared.inputs
    backend = backend_for(plan.backend)
    take_name(plan)
    backend.preflight(plan)
    if plan.model_stage and not backend.traits.stages_model_in_job:
        stage_model(inputs)
    run: RunDir | None = None
    try:
        # An interrupt (Ctrl-C, or SIGTERM where the caller makes it one) comes only once `cancel` can find
        # everything started so far: a whole run directory, a launcher with its PID or a job with its handle.
        with signals_held():
            run = create_run(plan)
            launch = launch_run(backend, prepared, run)
        if not wait:
            return Deployment(run, plan)
        sample = wait_for_deployment(backend, launch, run, plan, timeout)
        run.record(Ready(endpoint=plan.endpoint))
        # Return once `status` agrees (the supervisor's next ticks), so that a script may ask it at once.
        wait_until(
            lambda: (state := run.supervisor_state()) is not None and state.verdict == Verdict.READY,
            SUPERVISOR_SETTLE_S,
        )
    except KeyboardInterrupt:
        if run is None:  # it came while the run directory was refused: nothing was started
            raise
        leftovers = cancel(run)  # the submit that started it is gone: `--no-wait` is the way to leave it running
        raise Interrupted(
            f"run {run.name} cancelled; "
            + (f"still running: {', '.join(leftovers)}" if leftovers else "no process left")
        ) from None
    return Deployment(run, plan, sample)


def launch_run(backend: Backend, prepared: Prepared, run: RunDir) -> Launch:
    """The run directory's files, then the backend's launch."""
    save_inputs(run, prepared.inputs)
    write_files(prepared.files, run.path, overwrite=True)
    link_served_model(prepared.plan, run.path)
    run.record(Submitted())
    try:
        return backend.submit(prepared.plan, run)
    except DeploymentFailed:
        run.record(Failed())
        raise


def wait_for_deployment(backend: Backend, launch: Launch, run: RunDir, plan: Plan, timeout: float) -> dict[str, Any]:
    """Wait until the deployment serves (the sample completion), or fail: a process died, the launch
    failed, or the deadline passed. A failure stops everything first."""

    def dead() -> list[str]:
        return [name for name, alive in backend.alive(run).items() if alive is False]

    def going() -> bool:
        return not dead() and launch.failure() is None

    missing, sample = wait_serving(plan, timeout, throttled(going, LIVENESS_CHECK_INTERVAL_S))
    if sample is not None:
        return sample
    launch.settle(LAUNCHER_REPORT_S)
    gone, launch_failure = dead(), launch.failure()
    leftovers = backend.stop(run)
    lacking = run.preflight_report()
    if lacking:
        run.record(Failed(preflight=lacking))
        raise DeploymentFailed(
            f"run {plan.run_name}: the node preflight failed, nothing was started:\n"
            + "\n".join(f"  {line}" for line in lacking)
            + (f"\n(still running: {', '.join(leftovers)})" if leftovers else "")
        )
    run.record(Failed(waiting_for=missing, dead=gone))
    if gone:
        reason = ", ".join(f"{name} exited" for name in gone)
    elif launch_failure:
        reason = "the launch failed"
    else:
        reason = f"not ready within {timeout:g} s"
    raise DeploymentFailed(
        f"run {plan.run_name}: {reason} while waiting for {missing}; everything was stopped"
        + (f" except {', '.join(leftovers)}" if leftovers else "")
        + f". Logs: {run.path / 'logs'}"
        + launcher_tail(run)
    )


def wait_serving(
    plan: Plan, timeout: float, still_worth_waiting: Callable[[], bool]
) -> tuple[str, dict[str, Any] | None]:
    """Wait until the frontend sees every planned worker, lists the model and completes a request.

    Returns ("", that completion) when serving, else (what was still missing at the deadline, None).
    """
    expected: dict[str, int] = {}
    for role, count in plan.workers_expected.items():
        component = FRONTEND_COMPONENT_OF_ROLE[role]
        expected[component] = expected.get(component, 0) + count
    sample: dict[str, Any] | None = None

    def completes() -> bool:
        nonlocal sample
        sample = canary_completion(plan.endpoint, plan.model)
        return sample is not None

    checks = [
        ("frontend answering", lambda: http_ok(f"{plan.endpoint}/health")),
        (
            "workers registered with the frontend",
            lambda: all(workers_seen(plan.endpoint)[c] >= n for c, n in expected.items()),
        ),
        (f"model {plan.model} listed", lambda: model_listed(plan.endpoint, plan.model)),
        # Listed is not yet routable (a known Dynamo race): only a real completion proves it.
        ("a completion with generated tokens", completes),
    ]
    deadline = time.monotonic() + timeout
    for label, check in checks:
        if not wait_until(check, max(0.0, deadline - time.monotonic()), still_worth_waiting):
            return label, None
    return "", sample


def launcher_tail(run: RunDir, lines: int = 15) -> str:
    """The end of the launcher's own output: where a failed readiness probe says what it saw."""
    path = run.path / LAUNCHER_LOG
    text = path.read_text(errors="replace").strip() if path.exists() else ""
    return f"\n--- last lines of {path}:\n" + "\n".join(text.splitlines()[-lines:]) if text else ""


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
    watched = state.processes if state else {}

    def process_status(process: Process, current: ProcessState) -> ProcessStatus:
        seen = watched.get(process.name)
        return ProcessStatus(
            process.name,
            process.role,
            process.nodes,
            process.gpus,
            process.ports,
            current,
            seen.since if seen else None,
            seen.restarts if seen else 0,
            seen.last_error if seen else None,
            seen.registered if seen else None,
            process.pool,
        )

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
        processes = [process_status(p, watched[p.name].state) for p in plan.processes]
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
        )
    ended = None if cancelled else scheduler.ended
    alive_of = backend.alive(run)
    stopped = cancelled or ended is not None
    processes = [
        process_status(p, direct_state(alive_of[p.name], answers_now(p, alive_of[p.name]), stopped))
        for p in plan.processes
    ]
    verdict, reason = direct_verdict(
        {p.name: (p.role, p.state) for p in processes},
        cancelled,
        ended,
        absence or "no supervisor running",
        start_failed=run.has_event(EventKind.FAILED),
    )
    return report(verdict=verdict, reason=reason, supervised=False, processes=processes)


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


def logs(run: RunDir, process: str, follow: bool = False) -> Iterator[str]:
    """A process's log, line by line; with `follow`, without end, as it grows."""
    plan = run.plan()
    plan.process(process)  # an unknown name is the user's error, whatever the backend
    return backend_for(plan.backend).log_lines(run, process, follow)


def cancel(run: RunDir) -> list[str]:
    """Stop every process of the run; returns what survived (nothing, normally)."""
    run.record(CancelRequested())  # the supervisor restarts nothing from here on
    backend = run.backend_name()  # None: the run was cut short before anything started
    leftovers = backend_for(backend).stop(run) if backend else []
    run.targets_path.unlink(missing_ok=True)  # a Prometheus watching run directories stops scraping it
    run.record(Cancelled(leftovers=leftovers))
    return leftovers


def run_recipe(run: RunDir) -> Recipe:
    """The recipe the run was planned from, as submit saved it."""
    return Recipe.model_validate(yaml.safe_load((run.path / "recipe.yaml").read_text()))


def bench(
    run: RunDir, request: BenchRequest, on_point: Callable[[PointResult], None] = lambda _: None
) -> tuple[BenchSummary, Path]:
    """aiperf against a serving run, a point at a time (`on_point` hears each); the summary and its folder."""
    return run_bench(run, run_recipe(run), request, on_point)


def compare(folders: list[Path], out: Path | None = None) -> tuple[list[BenchSummary], Path]:
    """Benchmark folders side by side: their summaries, and the folder with the combined table and plots."""
    return compare_benchmarks(folders, out)


@dataclass(frozen=True)
class SweepReport:
    folder: Path  # one folder per point (its benchmark), and the combined table and plots
    summaries: list[BenchSummary]
    measured: list[str]  # points deployed and benchmarked now
    skipped: list[str]  # points a run before had measured
    failed: dict[str, str]  # points whose deployment or benchmark failed, and why


def point_keys(
    recipe: str, hosts: Hosts, sets: Sequence[str], points: list[SweepPoint], request: BenchRequest
) -> dict[SweepPoint, str]:
    """Each point's results key (what its numbers depend on); a point that cannot be loaded is the
    user's error, found before anything starts."""
    keys = {}
    for point in points:
        try:
            keys[point] = results_key(load_recipe(recipe, [*sets, *point.assignments]), hosts, request)
        except UserError as error:
            raise UserError(f"sweep point {point.name}: {error}") from None
    return keys


def sweep(
    recipe: str,
    hosts: str | None,
    sets: Sequence[str],
    points: list[SweepPoint],
    request: BenchRequest,
    *,
    out: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    remeasure: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> SweepReport:
    """One deployment per point: submitted, benchmarked, cancelled. Deployments start side by side (on
    Slurm, as many at once as the partition has room for: the jobs queue for the rest); benchmarks run
    one at a time. A point whose folder holds a summary measured under the same key (workload, recipe,
    engine configs, hosts, versions) is skipped, unless `remeasure`: the same command resumes the sweep,
    and one that would measure other numbers measures again."""
    base = load_inputs(recipe, hosts, sets)
    keys = point_keys(recipe, base.hosts, sets, points, request)
    key = sweep_key(results_key(base.recipe, base.hosts, request), points)
    folder = out or default_folder(slurmserve_home(), recipe, key)
    todo = [point for point in points if remeasure or current_summary(folder / point.name, keys[point]) is None]
    skipped = [point.name for point in points if point not in todo]
    for name in skipped:
        say(f"{name}: measured before, skipped")
    for point in todo:
        if not remeasure and read_summary(folder / point.name) is not None:
            say(f"{point.name}: measured before with another workload, recipe, hosts or version: measuring again")
    benchmarks = threading.Lock()
    failed: dict[str, str] = {}
    # Every point planned first: a point that cannot be deployed (too many GPUs, a bad value) is the
    # user's error, found before any deployment starts.
    prepared: dict[SweepPoint, Prepared] = {}
    for point in todo:
        try:
            prepared[point] = prepare(
                recipe, hosts, [*sets, *point.assignments], name=f"sweep-{key}-{points.index(point)}"
            )
        except UserError as error:
            raise UserError(f"sweep point {point.name}: {error}") from None
    if out is None:
        make_private_dir(folder)
    else:
        make_out_dir(out)  # one that cannot be written: exit 2, before any deployment

    def measure_point(point: SweepPoint) -> None:
        name = prepared[point].plan.run_name
        try:
            deployment = submit(prepared[point], timeout=timeout)
        except (UserError, DeploymentFailed) as error:
            failed[point.name] = str(error)
            say(f"{point.name}: deployment failed: {error}")
            return
        try:
            say(f"{point.name}: run {name} serves; benchmarking")
            with benchmarks:
                summary, results = bench(deployment.run, replace(request, label=point.name))
            save_point(results, folder / point.name, keys[point], private=out is None)
            say(f"{point.name}: {'valid' if summary.valid else 'INVALID'} ({len(summary.points)} points)")
        except (UserError, DeploymentFailed) as error:  # DeploymentFailed: its run was cancelled mid-benchmark
            failed[point.name] = str(error)
        finally:
            cancel(deployment.run)

    if traits_for(base.hosts.backend).has_allocation:  # each deployment a job of its own
        try:
            fan_out(todo, measure_point, SWEEP_DEADLINE_S)
        except KeyboardInterrupt:  # the points' threads die with this process: their jobs (and aiperf) first
            for run in [RunDir(Path(p.plan.run_dir)) for p in prepared.values() if Path(p.plan.run_dir).is_dir()]:
                cancel(run)
            raise
    else:  # one machine's (or hosts') GPUs and ports: one deployment at a time
        for point in todo:
            measure_point(point)
    # What this sweep's settings measured (a point that failed now shows no earlier numbers).
    current = [point for point in points if point.name not in failed]
    summaries = [found for point in current if (found := current_summary(folder / point.name, keys[point]))]
    if summaries:
        write_whole(folder / "table.txt", text_table(summaries).encode(), private=out is None)
        draw_plots(summaries, folder, private=out is None)
    return SweepReport(folder, summaries, [p.name for p in todo if p.name not in failed], skipped, failed)


def metrics_targets(run: RunDir) -> tuple[Path, list[dict[str, Any]]]:
    """The run's Prometheus targets (file_sd), written into its folder as the supervisor keeps them."""
    if run.ended:
        raise UserError(f"run {run.name} has ended: it has no metrics endpoints any more")
    state = run.supervisor_state()
    groups = file_sd_targets(run.plan(), state.metrics_endpoint if state else None)
    run.save_targets(groups)
    return run.targets_path, groups


def run_prometheus(run: RunDir) -> tuple[Plan, str]:
    """The run's plan and its in-job Prometheus's URL; exit 2 when the recipe asked for none."""
    plan = run.plan()
    if plan.prometheus_url is None:
        raise UserError(
            f"run {run.name} has no Prometheus of its own: set observability.prometheus: true in its recipe "
            "(or --set observability.prometheus=true), or point a Prometheus at `slurmserve metrics RUN`'s targets"
        )
    return plan, plan.prometheus_url


@dataclass
class SavedMetrics:
    """Where a run's Prometheus data can be queried: its live server, or one opened on the saved data."""

    url: str
    opened: OpenedData | None  # None: the run's own Prometheus still serves, or another `metrics --open`
    elsewhere: bool = False  # another `metrics --open` serves the saved data: at `url`


def open_metrics(run: RunDir) -> SavedMetrics:
    """The run's Prometheus while it serves; after the job, a Prometheus on this machine serving the data
    it saved in the run directory (close it with `.opened.close()`)."""
    plan, live_url = run_prometheus(run)
    if http_ok(live_url + PROMETHEUS_READY_PATH):
        return SavedMetrics(live_url, None)
    if not (run.path / PROMETHEUS_DATA).is_dir():
        raise UserError(f"run {run.name} saved no Prometheus data ({run.path / PROMETHEUS_DATA} is missing)")
    configured = plan.process("prometheus").command[0]
    binary = shutil.which(configured)
    if binary is None:
        raise UserError(f"cannot open run {run.name}'s data: {configured} is not here")
    # One Prometheus at a time on the data (a second would replay, and remove, the first's write-ahead log).
    lock, port = run.path / OPEN_LOCK, free_port()
    holder = take_lock(lock, open_url(port))
    if holder is None:  # its URL follows its lock at once
        wait_until(lambda: bool(lock_record(lock)), 2.0)
        return SavedMetrics(lock_record(lock), None, elsewhere=True)
    opened_log = run.path / "logs" / "prometheus-open.log"
    make_private_dir(opened_log.parent)  # a run directory whose logs/ was removed
    opened = open_saved(binary, run.path, opened_log, port, holder)
    if opened is None:
        raise DeploymentFailed(f"Prometheus did not start on {run.path / PROMETHEUS_DATA}: see {opened_log}")
    return SavedMetrics(opened.url, opened)


def grafana_dashboard(run: RunDir) -> tuple[dict[str, Any], Path | None]:
    """The shipped dashboard set on the run; with an in-job Prometheus, also the Grafana provisioning file
    that makes it the dashboard's datasource (written in the run directory)."""
    plan = run.plan()
    dashboard = dashboard_for(run.name)
    if plan.prometheus_url is None:
        return dashboard, None
    path = run.path / DATASOURCE_FILE
    make_private_dir(path.parent)
    write_private(path, datasource_provisioning(run.name, plan.prometheus_url))
    return dashboard, path
