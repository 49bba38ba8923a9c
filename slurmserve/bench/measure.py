"""`slurmserve bench RUN`: aiperf against a running deployment, one run per concurrency point, where the
backend runs clients (a step of the job on Slurm, a process here otherwise), each point checked by the
validity gate; the results in RUN_DIR/bench/<id>/: aiperf's artifacts per point, summary.json, a table
and the plots."""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import count
from pathlib import Path

from ..backends import backend_for
from ..config.recipe import BenchSpec, Recipe
from ..errors import DeploymentFailed, UserError
from ..observability.metrics import frontend_counters
from ..private import lock_record, make_private_dir, take_lock, write_private, write_whole
from ..resources import bundled_aiperf
from ..runs import ProcessState, RunDir, Verdict
from ..runs.events import BenchDone, BenchStarted, Restarted
from ..runs.layout import client_record_of
from ..transport.http import canary_completion
from ..waiting import wait_until
from . import plots
from .results import (
    SUMMARY_JSON,
    BenchSummary,
    PointResult,
    failed_point,
    gate,
    per_user_rates,
    point_result,
    read_export,
)
from .table import text_table
from .workload import Point, Tokenizer, Workload, check_replay_covers, replay_trace_of

POINT_TIMEOUT_S = 1800.0
FRESH_TIMEOUT_S = 300.0  # workers restarted between points: a real engine reloads its model
LOG_TAIL_LINES = 5
# A duration-bound run's request count, as a multiple of what its first run's rate sends in that time: the
# duration ends it, not the count (warm caches serve faster).
DURATION_HEADROOM = 4
SNAPSHOT = re.compile(r"^(?P<cache>/.+)/hub/models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<rev>[0-9a-f]{40})$")
LOCAL_REVISION = "0" * 40  # the snapshot name aiperf's offline tokenizer lookup finds for a local folder
# aiperf leaves memory-mapped stores in TMPDIR and puts its ZeroMQ sockets there (paths of at most 107
# bytes): a short scratch folder of its own on the node where it runs, removed after (also when stopped).
# Its log starts with the host it ran on. Before aiperf starts, the shell (the leader of aiperf's session)
# records itself in the record file given as its first argument ("PID START-TIME"), as the launch scripts'
# processes do: wherever it runs, `cancel` and an interrupted bench find aiperf's whole group there.
IN_SCRATCH = [
    "sh",
    "-c",
    'echo "aiperf on $(cat /proc/sys/kernel/hostname)"; '
    'echo "$$ $(sed "s/^.*) //" /proc/$$/stat | cut -d" " -f20)" >"$1.tmp" && mv -f "$1.tmp" "$1"; shift; '
    "trap 'exit 143' TERM INT; d=$(mktemp -d /tmp/sb-XXXXXX) && trap 'rm -rf \"$d\"' EXIT && TMPDIR=$d \"$@\"",
    "aiperf",
]
INCOMPLETE = "incomplete"  # in a point's folder until its result is made: what is there is no result


@dataclass(frozen=True)
class BenchRequest:
    """The command line's changes to the recipe's bench profile (None: the recipe's)."""

    concurrency: list[int] | None = None
    isl: int | None = None
    osl: int | None = None
    requests: int | None = None  # exactly this many per point (default: see Workload.points)
    aiperf: str | None = None
    label: str | None = None  # the benchmark's name in tables and plots (default: the run's)
    fresh_between_points: bool = False  # restart the workers between points: caches start empty
    quick: bool = False  # a smoke run: the recipe's request count alone, no floor of requests or seconds

    def applied_to(self, spec: BenchSpec) -> BenchSpec:
        changes: dict[str, object] = {key: value for key in ("isl", "osl") if (value := getattr(self, key))}
        if self.concurrency:
            changes |= {"concurrency": self.concurrency, "concurrency_per_gpu": []}
        return spec.model_copy(update=changes)


def bench_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def unused_bench_id(parent: Path) -> str:
    """A benchmark id no folder in `parent` has yet: the time, with -2, -3... after another of that second."""
    stamp = bench_id()
    return next(name for n in count(1) if not (parent / (name := stamp if n == 1 else f"{stamp}-{n}")).exists())


def tokenizer_for(model_path: str, bench_root: Path) -> Tokenizer:
    """How aiperf reads the served model's tokenizer without reaching the hub: a staged snapshot from the
    model cache itself; a local folder through a Hugging Face cache layout made for it (aiperf takes
    a hub name, not a folder, offline)."""
    staged = SNAPSHOT.match(model_path)
    if staged:
        return Tokenizer(f"{staged['org']}/{staged['name']}", staged["cache"], staged["rev"])
    if not model_path.startswith("/"):
        hub_cache = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
        return Tokenizer(model_path, hub_cache, offline=False)
    folder = Path(model_path)
    name = re.sub(r"[^A-Za-z0-9._-]", "-", folder.name) or "model"
    cache = bench_root / "hf"
    snapshot = cache / "hub" / f"models--local--{name}" / "snapshots" / LOCAL_REVISION
    make_private_dir(snapshot)
    for source in folder.iterdir():
        if source.is_file() and source.suffix in (".json", ".txt", ".model", ".jinja"):
            write_whole(snapshot / source.name, source.read_bytes(), private=True)
    make_private_dir(snapshot.parent.parent / "refs")
    write_private(snapshot.parent.parent / "refs" / "main", LOCAL_REVISION)
    return Tokenizer(f"local/{name}", str(cache))


def log_tail(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-LOG_TAIL_LINES:])


def measure(
    run: RunDir, workload: Workload, point: Point, folder: Path, aiperf: str, tokenizer: Tokenizer, before: float
) -> PointResult:
    """One point, for at least its requests and its seconds. aiperf stops at the first of a request count
    and a duration, never at the later, so the point is bound by the one that comes last: by its seconds
    when the rate `before` (requests/s of the previous point, 0: none; a higher concurrency serves at
    least as many) sends its requests sooner, else by its count. A guess proved wrong is measured again
    the other way (the first run its warm-up): a count reached too soon, for the seconds; seconds that
    ended too few requests, for the count (which then takes longer than the seconds)."""
    by_time = before * point.min_measuring_s >= point.requests > 0 and point.min_measuring_s > 0
    first = for_duration(point, before) if by_time else point
    result = measure_once(run, workload, first, folder, aiperf, tokenizer)
    if not result.valid:
        return result
    if not by_time and result.measuring_s < point.min_measuring_s:
        again = measure_once(run, workload, for_duration(point, result.requests_per_s), folder, aiperf, tokenizer)
    elif by_time and result.requests < point.requests:
        again = measure_once(run, workload, point, folder, aiperf, tokenizer)
    else:
        return result
    return again.model_copy(update={"aiperf_s": result.aiperf_s + again.aiperf_s})  # both runs' time


def for_duration(point: Point, rate: float) -> Point:
    """The point bound by its seconds, with a request count that `rate` (requests/s) does not reach."""
    reachable = math.ceil(rate * point.min_measuring_s * DURATION_HEADROOM)
    return replace(point, requests=max(point.requests, reachable), duration_s=point.min_measuring_s)


def measure_once(
    run: RunDir, workload: Workload, point: Point, folder: Path, aiperf: str, tokenizer: Tokenizer
) -> PointResult:
    """One aiperf run between two readings of the frontend's counters, then the validity gate."""
    plan = run.plan()
    out = folder / point.label
    make_private_dir(out)
    env = {"HF_HOME": tokenizer.hf_home, "COLUMNS": "200", "NO_COLOR": "1"}
    if tokenizer.offline:
        env["HF_HUB_OFFLINE"] = "1"
    before = frontend_counters(plan.endpoint, plan.model)
    record = client_record_of(plan.run_dir)
    argv = [*IN_SCRATCH, record, *workload.aiperf_argv(aiperf, plan, point, tokenizer, out)]
    write_private(out / INCOMPLETE, "aiperf was stopped before this point ended: its files here are no result\n")
    backend = backend_for(plan.backend)
    started = time.monotonic()
    try:
        status = backend.run_beside(run, argv, env, out / "aiperf.log", POINT_TIMEOUT_S)
    except BaseException:  # Ctrl-C or a TERM: aiperf goes with the bench that started it
        backend.stop_beside(run)
        raise
    aiperf_s = time.monotonic() - started
    if run.cancel_requested:
        raise DeploymentFailed(f"run {run.name} was cancelled during the benchmark (point {point.label} incomplete)")
    after = frontend_counters(plan.endpoint, plan.model)
    export = read_export(out)
    (out / INCOMPLETE).unlink()
    if export is None:
        why = f"aiperf exited {status} without results: {log_tail(out / 'aiperf.log')}"
        return failed_point(point.concurrency, point.label, why)
    result = point_result(export, point.concurrency, workload.gpus, point.label, per_user_rates(out)).model_copy(
        update={"aiperf_s": aiperf_s}
    )
    counted = after - before if after and before else None
    problems = gate(result, workload.spec.osl, workload.spec.ignore_eos, counted)
    return result.model_copy(update={"valid": not problems, "problems": problems})


def restarted_since(run: RunDir, seen: int) -> set[str]:
    """The processes the supervisor restarted on request in the events it recorded after the first `seen`:
    confirmed by the order of its own record, never by its clock (its machine's clock need not be ours)."""
    return {event.process for event in run.events()[seen:] if isinstance(event, Restarted) and event.requested}


def start_afresh(run: RunDir) -> None:
    """Every worker restarted through the supervisor (empty prefix and KV caches), and serving again:
    each one restarted and ready, and a completion answered. UserError if not within FRESH_TIMEOUT_S."""
    plan = run.plan()
    workers = {process.name for process in plan.processes if process.is_worker}
    seen = len(run.events())  # the restarts that answer this request are recorded after these
    for name in sorted(workers):
        run.request_restart(name)

    def serving_again() -> bool:
        state = run.supervisor_state()
        return (
            workers <= restarted_since(run, seen)
            and state is not None
            and state.verdict == Verdict.READY
            and all(state.processes[name].state == ProcessState.READY for name in workers)
            and canary_completion(plan.endpoint, plan.model) is not None
        )

    if not wait_until(serving_again, FRESH_TIMEOUT_S):
        raise UserError(f"run {run.name}: the workers did not serve again within {FRESH_TIMEOUT_S:g} s of a restart")


def deployment_gpus(run: RunDir) -> int:
    return sum(len(process.gpus) * len(process.nodes) for process in run.plan().processes)


def bench(
    run: RunDir, recipe: Recipe, request: BenchRequest, on_point: Callable[[PointResult], None] = lambda _: None
) -> tuple[BenchSummary, Path]:
    """Benchmark a serving deployment; returns the summary and its folder. Raises UserError before
    anything runs when aiperf or the plots' library is missing, or the run does not serve."""
    plan = run.plan()
    spec = request.applied_to(recipe.bench)
    aiperf = request.aiperf or bundled_aiperf(plan.python)
    if not Path(aiperf).is_file():
        raise UserError(f"--aiperf {aiperf}: not found; `./install.sh --bench` installs aiperf beside slurmserve")
    state = run.supervisor_state()
    if run.ended or state is None or state.verdict != Verdict.READY:
        raise UserError(f"run {run.name} is not serving (see `slurmserve status {run.name}`)")
    trace = replay_trace_of(plan)
    if trace:
        check_replay_covers(trace, spec.osl)
    workload = Workload(spec, deployment_gpus(run), replay=trace is not None)
    points = workload.points(request.requests, request.quick)
    # One benchmark at a time per deployment: each one's validity gate counts the frontend's requests.
    lock = run.paths.bench_lock
    folder = run.paths.bench / unused_bench_id(run.paths.bench)
    holder = take_lock(lock, f"bench {folder.name} (started {time.strftime('%H:%M:%S')}, pid {os.getpid()})")
    if holder is None:
        raise UserError(
            f"run {run.name} is being measured by {lock_record(lock) or 'another bench'}: wait for it to end, "
            "or stop it (Ctrl-C where it runs)"
        )
    with holder:
        return measure_all(run, request, Benchmark(workload, points, aiperf, folder), on_point)


@dataclass(frozen=True)
class Benchmark:
    """What `bench` decided: the points of the workload, the aiperf that measures them, and the folder."""

    workload: Workload
    points: list[Point]
    aiperf: str
    folder: Path


def measure_all(
    run: RunDir, request: BenchRequest, benchmark: Benchmark, on_point: Callable[[PointResult], None]
) -> tuple[BenchSummary, Path]:
    """Every point in turn (under the benchmark's lock); the summary saved in the benchmark's folder."""
    plan, workload, points, folder = run.plan(), benchmark.workload, benchmark.points, benchmark.folder
    spec, aiperf = workload.spec, benchmark.aiperf
    make_private_dir(folder)
    tokenizer = tokenizer_for(plan.model_path, folder.parent)
    summary = BenchSummary(
        id=folder.name,
        run=run.name,
        recipe=plan.recipe,
        backend=plan.backend,
        engine=plan.engine,
        mode=plan.mode,
        model=plan.model,
        gpus=workload.gpus,
        endpoint_type=spec.endpoint_type,
        isl=spec.isl,
        osl=spec.osl,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        label=request.label or run.name,
    )
    run.record(BenchStarted(bench=folder.name, points=[point.concurrency for point in points]))
    rate = 0.0  # the last point's requests/s: how the next is bound (see measure)
    for number, point in enumerate(points):
        if request.fresh_between_points and number:
            start_afresh(run)
        result = measure(run, workload, point, folder, aiperf, tokenizer, rate)
        rate = result.requests_per_s if result.valid else 0.0
        summary.points.append(result)
        on_point(result)
    save(summary, folder)
    run.record(BenchDone(bench=folder.name, valid=summary.valid))
    return summary, folder


def save(summary: BenchSummary, folder: Path) -> None:
    """summary.json, table.txt and the plots, in the benchmark's folder."""
    write_private(folder / SUMMARY_JSON, summary.model_dump_json(indent=2) + "\n")
    write_private(folder / "table.txt", text_table([summary]))
    plots.draw([summary], folder)
