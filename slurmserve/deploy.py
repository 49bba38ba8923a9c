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

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .backends import backend_for, traits_for
from .backends.base import Backend, Launch, follow_file
from .bench.compare import compare as compare_benchmarks
from .bench.measure import BenchRequest
from .bench.measure import bench as run_bench
from .bench.results import BenchSummary, PointResult
from .bench.sweep import SweepPoint, SweepReport, SweepVerbs
from .bench.sweep import sweep as run_sweep
from .config.recipe import Recipe
from .errors import DeploymentFailed, Interrupted, UserError
from .interrupts import signals_held
from .observability.saved import grafana_dashboard, metrics_targets, open_metrics
from .planning.plan import Plan
from .private import write_private
from .render.files import link_served_model, rendered_files, write_files
from .runs import HELPERS, RunDir, Verdict, create_run
from .runs.events import Cancelled, CancelRequested, Failed, Ready, Submitted
from .runtime.inputs import Inputs, flags_asked, load_inputs, pin_model, plan_for, record_flags_accepted, stages_a_model
from .runtime.launch import wait_for_deployment
from .runtime.names import prune, remove, stopped, take_name
from .runtime.scaling import ask_scale, pause_planner
from .runtime.status import RunStatus, status
from .waiting import wait_until

# The verbs this module defines, and those it takes from their packages as they are.
__all__ = [
    "Deployment",
    "Inputs",
    "Prepared",
    "RunStatus",
    "SweepReport",
    "ask_scale",
    "bench",
    "cancel",
    "compare",
    "grafana_dashboard",
    "load_inputs",
    "logs",
    "metrics_targets",
    "open_metrics",
    "pause_planner",
    "plan_for",
    "prepare",
    "prune",
    "remove",
    "render_to",
    "stage_model",
    "stages_a_model",
    "status",
    "stopped",
    "submit",
    "sweep",
]

SUPERVISOR_SETTLE_S = 5.0
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Prepared:
    """Everything `submit` will start, before anything has: the first half of `submit`."""

    inputs: Inputs
    plan: Plan
    files: dict[str, str]  # the run directory's files that come from the plan: relative path -> text
    # Waits for Dynamo's parsers' answer (raises a refusal); True when the plan's interpreter accepted them.
    flags_checked: Callable[[], bool] = lambda: False

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
    submitting: bool = False,
) -> Prepared:
    """The dry run: inputs loaded and checked, the model's revision pinned, a port block no live run
    holds, the plan and every file rendered. Starts nothing and writes nothing. With `dry_run` (only
    shown, never submitted), a hub that does not answer is a warning in the plan, not an error. With
    `submitting` (`submit` follows at once), Dynamo's parsers are still being asked when it returns:
    `submit` waits for their answer beside the backend's preflight."""
    inputs, unverified = pin_model(load_inputs(recipe, hosts, assignments), dry_run)
    plan = plan_for(inputs, name, run_dir, avoid_live_runs=True, kv_preflight=kv_preflight, check_flags=False)
    if plan.chain is not None:
        raise UserError(
            "lifetime: serving through a chain of jobs is not available yet (`slurmserve plan` shows the chain's "
            "schedule); leave lifetime (or --lifetime) out to serve one job until cancel or its time limit"
        )
    flags_checked = flags_asked(inputs, plan)
    if not submitting:
        flags_checked()
    if unverified:
        plan = plan.model_copy(update={"warnings": [*plan.warnings, unverified]})
    # plan.json among them, read back through the plan's model: `status` and `cancel` will read it.
    return Prepared(inputs, plan, rendered_files(plan, traits_for(plan.backend)), flags_checked)


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
    for path, model in ((run.paths.recipe, inputs.recipe), (run.paths.hosts, inputs.hosts)):
        write_private(path, yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False))


@dataclass(frozen=True)
class Deployment:
    """A submitted deployment: its run directory (all that `status`, `logs` and `cancel` need) and plan."""

    run: RunDir
    plan: Plan
    sample: dict[str, Any] | None = None  # a completion, when submit waited for readiness

    @property
    def endpoint(self) -> str:
        return self.plan.endpoint


def submit(prepared: Prepared, *, wait: bool = True, timeout: float = DEFAULT_TIMEOUT_S) -> Deployment:
    """Launch what `prepare` returned. With `wait`, return once the frontend sees every planned worker,
    lists the model and has answered a real completion; raise DeploymentFailed (after stopping
    everything) when the deployment fails first or is not ready within `timeout` seconds. Interrupted
    (KeyboardInterrupt) before it returns, it cancels the run and raises Interrupted."""
    plan, inputs = prepared.plan, prepared.inputs
    backend = backend_for(plan.backend)
    take_name(plan)
    backend.preflight(plan)
    flags_accepted = prepared.flags_checked()
    if plan.model_stage and not backend.traits.stages_model_in_job:
        stage_model(inputs)
    run: RunDir | None = None
    try:
        # An interrupt (Ctrl-C, or SIGTERM where the caller makes it one) comes only once `cancel` can find
        # everything started so far: a whole run directory, a launcher with its PID or a job with its handle.
        with signals_held():
            run = create_run(plan)
            launch = launch_run(backend, prepared, run, flags_accepted)
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


def launch_run(backend: Backend, prepared: Prepared, run: RunDir, flags_accepted: bool = False) -> Launch:
    """The run directory's files, then the backend's launch."""
    save_inputs(run, prepared.inputs)
    write_files(prepared.files, run.path, overwrite=True)
    if flags_accepted:
        record_flags_accepted(run, prepared.plan)
    link_served_model(prepared.plan, run.path)
    run.record(Submitted())
    try:
        return backend.submit(prepared.plan, run)
    except DeploymentFailed:
        run.record(Failed())
        raise


def logs(run: RunDir, process: str, follow: bool = False, tail: int | None = None) -> Iterator[str]:
    """A process's log, line by line (`tail`: its last lines only); with `follow`, without end, as it
    grows. The run's own helpers (the supervisor, the launcher, the scraper) count as processes here:
    their logs are in the run directory on this machine, whatever the backend."""
    if process in HELPERS:
        missing = f"run {run.name}: its {process} has no log (it has not run here)"
        return follow_file(run.paths.helper_log(process), follow, missing, tail)
    plan = run.plan()
    plan.process(process)  # an unknown name is the user's error, whatever the backend
    return backend_for(plan.backend).log_lines(run, process, follow, tail)


def cancel(run: RunDir) -> list[str]:
    """Stop every process of the run; returns what survived (nothing, normally)."""
    run.record(CancelRequested())  # the supervisor restarts nothing from here on
    backend = run.backend_name()  # None: the run was cut short before anything started
    leftovers = backend_for(backend).stop(run) if backend else []
    run.paths.targets.unlink(missing_ok=True)  # a Prometheus watching run directories stops scraping it
    run.record(Cancelled(leftovers=leftovers))
    return leftovers


def run_recipe(run: RunDir) -> Recipe:
    """The recipe the run was planned from, as submit saved it."""
    return Recipe.model_validate(yaml.safe_load(run.paths.recipe.read_text()))


def bench(
    run: RunDir, request: BenchRequest, on_point: Callable[[PointResult], None] = lambda _: None
) -> tuple[BenchSummary, Path]:
    """aiperf against a serving run, a point at a time (`on_point` hears each); the summary and its folder."""
    return run_bench(run, run_recipe(run), request, on_point)


def compare(
    sources: list[str], out: Path | None = None, mix_workloads: bool = False
) -> tuple[list[BenchSummary], Path]:
    """Benchmarks side by side (folders, sweep folders, runs): their summaries, and the folder with the
    combined table and plots."""
    return compare_benchmarks(sources, out, mix_workloads)


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
    # Each verb looked up when called, not now: a script (or a test) may stand in for one of this module's.
    verbs = SweepVerbs(
        prepare=lambda assignments, name: prepare(recipe, hosts, assignments, name=name),
        submit=lambda prepared: submit(prepared, timeout=timeout),
        bench=lambda run, point_request: bench(run, point_request),
        cancel=lambda run: cancel(run),
    )
    return run_sweep(verbs, (recipe, base.recipe, base.hosts, sets), points, request, out, remeasure, say)
