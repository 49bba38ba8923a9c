"""The `slurmserve` command: parse, call deploy/render, print. Bad input exits 2, a failed deployment 1."""

from __future__ import annotations

import functools
import json
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from textwrap import shorten
from types import FrameType
from typing import Any, Optional, TypeVar, cast

import httpx
import typer
from pydantic import TypeAdapter
from rich.console import Console
from rich.live import Live
from rich.table import Column, Table

from . import deploy
from .bench.results import TABLE_COLUMNS, BenchSummary, PointResult, invalid_points, table_rows
from .bench.runner import BenchRequest
from .bench.sweep import sweep_points
from .config.hosts import load_hosts
from .config.recipe import builtin_recipe_names, load_recipe
from .errors import DeploymentFailed, Interrupted, UserError
from .hardware.discovery import default_hosts
from .planning.plan import Plan
from .render.files import write_files
from .runs import LiveMetrics, Quantiles, RunDir, UnreadableRun, open_run, scan_runs

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Disaggregated LLM serving on Slurm, SSH hosts and this machine."
)
console = Console(soft_wrap=True)  # long lines (URLs, curl commands) stay copyable
errors = Console(stderr=True, soft_wrap=True)  # one paragraph; the terminal wraps it

RecipeOption = typer.Option(..., "--recipe", help="A built-in recipe name or a recipe file")
HostsOption = typer.Option(None, "--hosts", help="Hosts file (default: this machine)")
SetOption = typer.Option([], "--set", help="Override a recipe field: --set decode.replicas=2")
# What `bench` and `sweep` share: the command line's changes to the recipe's bench profile.
ConcurrencyOption = typer.Option(None, "--concurrency", help="Concurrency points, e.g. 1,8,32 (default: the recipe's)")
IslOption = typer.Option(None, "--isl", min=1, help="Input tokens per request")
OslOption = typer.Option(None, "--osl", min=1, help="Output tokens per request")
RequestsOption = typer.Option(None, "--requests", min=1, help="Requests per point")
AiperfOption = typer.Option(None, "--aiperf", help="aiperf to run (default: the one install.sh --bench installs)")
FreshOption = typer.Option(
    False, "--fresh-between-points", help="Restart the workers between points (prefix and KV caches empty)"
)
INTERRUPT_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as shells report it
LAST_ERROR_CHARS = 80  # in the table; --json has all of it
UNREADABLE = "unreadable"  # the state `status` lists a run in whose plan it cannot read
STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "pending": "dim",
    "unhealthy": "yellow",
    "failed": "red",
    "stopped": "dim",
    "degraded": "yellow",
    UNREADABLE: "red",
}


Command = TypeVar("Command", bound=Callable[..., Any])


def clean_errors(command: Command) -> Command:
    """Bad input: one paragraph, exit 2, no traceback. A deployment that failed: exit 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as error:
            errors.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(2) from None
        except DeploymentFailed as error:
            errors.print(f"[bold red]deployment failed:[/] {error}", highlight=False)
            raise typer.Exit(1) from None
        except httpx.HTTPError as error:
            errors.print(f"[bold red]deployment failed:[/] {error.request.url}: {error}", highlight=False)
            raise typer.Exit(1) from None

    return cast(Command, wrapper)


def warn(plan: Plan) -> None:
    """What the plan cannot honour, on stderr: said, never silently dropped."""
    for warning in plan.warnings:
        errors.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


def placement_table(plan: Plan) -> Table:
    table = Table(title=f"{plan.recipe} ({plan.engine}, {plan.mode}) on {plan.backend}: run {plan.run_name}")
    for column in ("process", "role", "node", "leaf", "GPUs", "ports", "after"):
        table.add_column(column)
    switch_of = {node.name: node.switch or "" for node in plan.nodes}
    for process in plan.processes:
        table.add_row(
            process.name,
            process.role,
            ",".join(process.nodes),
            ",".join(switch_of[n] for n in process.nodes),
            ",".join(map(str, process.gpus)) or "-",
            " ".join(f"{k}={v}" for k, v in process.ports.items()),
            ",".join(process.after) if len(process.after) <= 3 else f"{len(process.after)} processes",
        )
    table.caption = f"endpoint {plan.endpoint} · discovery {plan.discovery} · model {plan.model}"
    return table


@app.command()
@clean_errors
def recipes(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the built-in recipes."""
    catalogue = [load_recipe(name) for name in builtin_recipe_names()]
    if as_json:
        fields = ("name", "engine", "mode", "description")
        print(json.dumps([{**r.model_dump(include=set(fields)), "model": r.model.repo} for r in catalogue], indent=2))
        return
    # Recipe names whole, as run names in `status`: the other columns fold instead.
    width = max(len(recipe.name) for recipe in catalogue)
    table = Table(
        Column("name", no_wrap=True, min_width=width), "engine", "mode", "workers", Column("model", overflow="fold")
    )
    for recipe in catalogue:
        workers = ", ".join(f"{spec.replicas}x {role} TP{spec.tensor_parallel}" for role, spec in recipe.worker_roles())
        table.add_row(recipe.name, recipe.engine, recipe.mode, workers, recipe.model.repo)
    console.print(table)


@app.command()
@clean_errors
def plan(
    recipe: str = RecipeOption,
    hosts: Optional[str] = HostsOption,
    set_: list[str] = SetOption,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show where every process would run: node, GPUs, ports (--json: the plan itself)."""
    the_plan = deploy.plan_for(deploy.load_inputs(recipe, hosts, set_))
    warn(the_plan)
    if as_json:
        print(the_plan.model_dump_json(indent=2))
    else:
        console.print(placement_table(the_plan))


@app.command()
@clean_errors
def probe(
    hosts: Optional[str] = HostsOption,
    interface: Optional[str] = typer.Option(
        None, "--interface", help="IP interface for control-plane traffic (e.g. ib0)"
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the hosts file here (never over an existing file)"),
) -> None:
    """Probe every node's GPUs, RDMA NICs (and the GPUs they sit next to) and addresses; print a hosts file."""
    from .backends import backend_for
    from .hardware.inventory import probed_hosts_file

    probed = load_hosts(hosts) if hosts else default_hosts()
    text = probed_hosts_file(probed, interface, backend_for(probed.backend).probe_runners(probed))
    if out is None:
        print(text, end="")
        return
    write_files({out.name: text}, out.parent.resolve(), private=False)
    console.print(f"wrote {out}")


@app.command("stage-model")
@clean_errors
def stage_model(recipe: str = RecipeOption, hosts: Optional[str] = HostsOption, set_: list[str] = SetOption) -> None:
    """Fetch the recipe's model once into the hosts file's shared model cache, and print its snapshot folder."""
    inputs = deploy.load_inputs(recipe, hosts, set_)
    print(deploy.stage_model(inputs))


@app.command()
@clean_errors
def render(
    recipe: str = RecipeOption,
    hosts: Optional[str] = HostsOption,
    set_: list[str] = SetOption,
    out: Path = typer.Option(..., "--out", help="Folder to write the scripts, plan.json and engine YAMLs to"),
    force: bool = typer.Option(False, "--force", help="Replace files already in --out"),
) -> None:
    """Write the deployment's script(s), plan and engine configs to a folder, without running anything."""
    out = out.resolve()
    prepared = deploy.prepare(recipe, hosts, set_, run_dir=str(out), dry_run=True)
    warn(prepared.plan)
    for path in deploy.render_to(prepared, out, force):
        console.print(f"wrote {path}")


@contextmanager
def stopped_on_interrupt(command: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM: what the command started is stopped (deploy raises Interrupted saying what),
    one line, exit 130 (SIGINT) or 143 (SIGTERM). A second signal does not cut that cleanup short."""
    received: list[int] = []

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in INTERRUPT_EXIT}
    try:
        yield
    except KeyboardInterrupt as error:
        signum = signal.Signals(received[0] if received else signal.SIGINT)
        done = str(error) if isinstance(error, Interrupted) else "nothing had started"
        errors.print(
            f"[bold red]{command} interrupted[/] ({signum.name}, exit {INTERRUPT_EXIT[signum]}): {done}",
            highlight=False,
        )
        raise typer.Exit(INTERRUPT_EXIT[signum]) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def said_on_interrupt(line: str) -> Iterator[None]:
    """Ctrl-C, or a TERM made one: what the command started is stopped on the way out (deploy sees to it),
    then `line`, exit 130."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        errors.print(line)
        raise typer.Exit(130) from None


@app.command()
@clean_errors
def submit(
    recipe: str = RecipeOption,
    hosts: Optional[str] = HostsOption,
    set_: list[str] = SetOption,
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default: recipe-date-time-random)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the script that would run; start nothing"),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="Return once started, without waiting for readiness (it runs on after this command)"
    ),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for the deployment to serve"),
    preflight: Optional[bool] = typer.Option(
        None,
        "--preflight/--no-preflight",
        help="UCX transfer test of every prefill->decode path before the model loads (default: on for TRT-LLM)",
    ),
) -> None:
    """Start a deployment and wait until it serves (exit 0 ready, 1 failed, 2 bad input). Ctrl-C or SIGTERM
    before then cancels it (exit 130 or 143)."""
    with stopped_on_interrupt("submit"):
        prepared = deploy.prepare(recipe, hosts, set_, name=name, kv_preflight=preflight, dry_run=dry_run)
        warn(prepared.plan)
        if dry_run:
            print(prepared.script, end="")
            return
        with console.status("starting..."):
            submitted = deploy.submit(prepared, wait=not no_wait, timeout=timeout)
    run, the_plan = submitted.run, submitted.plan
    if submitted.sample is None:
        console.print(f"run [bold]{run.name}[/] started; follow it with: slurmserve status {run.name} --watch")
        return
    choice = submitted.sample["choices"][0]
    text = (choice.get("message") or {}).get("content") or "(no text: the mock engine generates random token ids)"
    console.print(f"run [bold]{run.name}[/] is ready at [bold]{the_plan.endpoint}[/] (model {the_plan.model})")
    console.print(
        f"sample completion: {submitted.sample['usage']['completion_tokens']} tokens, "
        f"finish_reason {choice.get('finish_reason')}: {text}",
        highlight=False,
    )
    console.print(
        f"try: curl {the_plan.endpoint}/v1/chat/completions -H 'Content-Type: application/json' "
        f'-d \'{{"model": "{the_plan.model}", "messages": [{{"role": "user", "content": "Hello"}}], '
        f'"max_tokens": 32}}\''
    )
    console.print(
        f"status: slurmserve status {run.name}    logs: slurmserve logs {run.name} frontend    "
        f"stop: slurmserve cancel {run.name}"
    )


def ago(moment: float | None) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int(time.time() - moment))
    if seconds < 120:
        return f"{seconds} s ago"
    return f"{seconds // 60} min ago" if seconds < 7200 else f"{seconds // 3600} h ago"


def styled(word: str) -> str:
    return f"[{STATE_STYLE[word]}]{word}[/]"


def status_table(report: deploy.RunStatus, trend: bool = False) -> Table:
    table = Table(
        "process",
        "node",
        "GPUs",
        "state",
        "since",
        "restarts",
        "last error",
        title=f"run {report.run}: {styled(report.verdict.value)} ({report.reason})",
    )
    for s in report.processes:
        table.add_row(
            s.name,
            ",".join(s.nodes),
            ",".join(map(str, s.gpus)) or "-",
            styled(s.state.value),
            ago(s.since),
            str(s.restarts),
            shorten(s.last_error or "", LAST_ERROR_CHARS, placeholder="..."),
        )
    watcher = "watched by its supervisor" if report.supervised else "not supervised now: states asked of the backend"
    lines = [f"{report.scheduler} · endpoint {report.endpoint} · {watcher}"]
    if report.prometheus:
        lines.append(f"Prometheus {report.prometheus} (the run's own: every series since the start)")
    if report.frontend:
        seen = ", ".join(f"{role} {count}/{planned}" for role, (count, planned) in report.frontend.items())
        lines.append(f"frontend sees {seen}")
    if report.canary:
        canary = report.canary
        outcome = f"ok in {canary.latency_s} s" if canary.ok else f"FAILED ({canary.error})"
        lines.append(f"canary completion {ago(canary.at)}: {outcome}")
    lines += [f"node {node}: {problem}" for node, problem in report.nodes.items()]
    lines += pool_lines(report)
    if report.metrics:
        lines += serving_lines(report.metrics, trend)
    table.caption = "\n".join(lines)
    return table


def pool_lines(report: deploy.RunStatus) -> list[str]:
    """Per pool behind the global router: its processes' states and its own canary."""
    lines = []
    for pool in dict.fromkeys(s.pool for s in report.processes if s.pool):
        members = ", ".join(f"{s.name} {s.state.value}" for s in report.processes if s.pool == pool)
        canary = report.pool_canaries.get(pool)
        verdict = (
            ""
            if canary is None
            else f"; canary {ago(canary.at)}: "
            + (f"served by its workers in {canary.latency_s} s" if canary.ok else f"FAILED ({canary.error})")
        )
        lines.append(f"pool {pool}: {members}{verdict}")
    return lines


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """The values as a row of bars, scaled to their own range."""
    if not values:
        return ""
    low, high = min(values), max(values)
    return "".join(
        SPARKS[round((value - low) / (high - low) * (len(SPARKS) - 1)) if high > low else 0] for value in values
    )


def pair(found: Quantiles | None) -> str:
    return f"{found.p50:.1f}/{found.p99:.1f} ms" if found else "-"


def serving_lines(live: LiveMetrics, trend: bool) -> list[str]:
    """What the deployment serves, from its /metrics over the last window; with `trend`, sparklines."""
    # Two short lines, not one long one: `--watch` crops what is wider than the terminal.
    lines = [
        f"serving (last {live.window_s:.0f} s): {live.requests_per_s:.2f} req/s, {live.in_flight:g} in flight, "
        f"{live.queued:g} queued, {live.output_tokens_per_s:.1f} output tok/s",
        f"  TTFT p50/p99 {pair(live.ttft_ms)}, ITL p50/p99 {pair(live.itl_ms)}",
    ]
    lines += [
        f"  {name}: {worker.requests_per_s:.2f} req/s"
        + (f", KV cache {worker.kv_cache_usage:.0%}" if worker.kv_cache_usage is not None else "")
        for name, worker in live.workers.items()
    ]
    if trend and live.trend:
        lines.append(f"  req/s  {sparkline([point.requests_per_s for point in live.trend])}")
        lines.append(f"  TTFT   {sparkline([point.ttft_p50_ms or 0.0 for point in live.trend])}")
    return lines


def run_summary(report: deploy.RunStatus) -> dict[str, str]:
    """One run of `status` without RUN, for --json."""
    keys = ("run", "verdict", "reason", "recipe", "backend", "endpoint")
    return {key: str(getattr(report, key).value if key == "verdict" else getattr(report, key)) for key in keys}


def unreadable_summary(entry: UnreadableRun) -> dict[str, str]:
    """A run whose plan cannot be read, for --json: the keys of the others, with what is known."""
    known = {"run": entry.name, "verdict": UNREADABLE, "reason": entry.reason}
    return {**known, **dict.fromkeys(("recipe", "backend", "endpoint"), "")}


def as_json(value: object, kind: Any) -> str:
    return TypeAdapter(kind).dump_json(value, indent=2).decode()


@app.command()
@clean_errors
def status(
    run: Optional[str] = typer.Argument(None),
    as_json_: bool = typer.Option(False, "--json"),
    watch: bool = typer.Option(False, "--watch", help="Redraw every second until interrupted"),
    every: bool = typer.Option(False, "--all", help="List every run, stopped ones too (default: the live ones)"),
) -> None:
    """Show a run's processes and their state (no RUN: list the live runs; --all: every run)."""
    if run is None:
        runs, unreadable = scan_runs()
        reports = [deploy.status(r) for r in runs if every or not deploy.stopped(r)]
        if as_json_:
            summaries = [run_summary(report) for report in reports] + [unreadable_summary(u) for u in unreadable]
            print(as_json(summaries, list[dict[str, str]]))
            return
        names = [report.run for report in reports] + [entry.name for entry in unreadable]
        # The run name whole, whatever the terminal's width: the other columns fold instead.
        table = Table(
            Column("run", no_wrap=True, min_width=max((len(name) for name in names), default=3)),
            Column("recipe", overflow="fold"),
            "backend",
            "state",
            Column("endpoint", overflow="fold"),
        )
        for report in reports:
            table.add_row(report.run, report.recipe, report.backend, styled(report.verdict.value), report.endpoint)
        for entry in unreadable:  # why, where the endpoint would be
            table.add_row(entry.name, "", "", styled(UNREADABLE), entry.reason)
        console.print(table)
        return
    the_run = open_run(run)
    if as_json_:
        print(as_json(deploy.status(the_run), deploy.RunStatus))
        return
    if not watch:
        console.print(status_table(deploy.status(the_run)))
        return
    with Live(status_table(deploy.status(the_run), trend=True), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(1)
                live.update(status_table(deploy.status(the_run), trend=True), refresh=True)
        except KeyboardInterrupt:
            pass


@app.command()
@clean_errors
def logs(
    run: str,
    process: Optional[str] = typer.Argument(None, help="Process name (default: every process, last lines)"),
    follow: bool = typer.Option(False, "--follow", "-f"),
) -> None:
    """Show a process's log (--follow: keep printing as it grows)."""
    the_run = open_run(run)
    if process is None:
        for each in the_run.plan().processes:
            path = the_run.path / each.log
            console.rule(each.name)
            print("\n".join(path.read_text(errors="replace").splitlines()[-20:]) if path.exists() else "(no log yet)")
        return
    for line in deploy.logs(the_run, process, follow):
        sys.stdout.write(line)
        sys.stdout.flush()


def numbers(text: str | None, option: str) -> list[int] | None:
    """`1,8,32` -> [1, 8, 32]."""
    if text is None:
        return None
    try:
        values = [int(word) for word in text.split(",")]
    except ValueError:
        raise UserError(f"{option} {text!r}: must be whole numbers separated by commas, such as 1,8,32") from None
    if any(value < 1 for value in values):
        raise UserError(f"{option} {text!r}: each must be at least 1")
    return values


DURATION = re.compile(r"([0-9]{1,6})([smhd])")
SECONDS_PER = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str, option: str) -> float:
    """`7d`, `12h`, `30m`, `90s` -> seconds."""
    match = DURATION.fullmatch(text.strip())
    if match is None:
        raise UserError(f"{option} {text!r}: must be a whole number and a unit (s, m, h or d), such as 7d or 12h")
    return int(match[1]) * SECONDS_PER[match[2]]


def point_line(point: PointResult) -> str:
    """The progress line of one benchmark point."""
    figures = (
        f"{point.requests} requests, {point.output_tokens_per_s:.1f} tok/s ({point.output_tokens_per_s_per_user:.1f}"
        f"/user), TTFT p50 {point.ttft_ms.p50:.1f} ms"
        if point.ttft_ms
        else "no figures"
    )
    verdict = "valid" if point.valid else "INVALID: " + "; ".join(point.problems)
    return f"concurrency {point.concurrency}: {figures}, {point.errors} errors; {verdict}"


def bench_table(summaries: list[BenchSummary]) -> Table:
    table = Table(*TABLE_COLUMNS)
    for row in table_rows(summaries):
        table.add_row(*row)
    return table


@app.command()
@clean_errors
def bench(
    run: str = typer.Argument(..., metavar="RUN | compare", help="A serving run; or `compare` and benchmark folders"),
    folders: Optional[list[str]] = typer.Argument(None, metavar="[DIR...]", help="With compare: benchmark folders"),
    concurrency: Optional[str] = ConcurrencyOption,
    isl: Optional[int] = IslOption,
    osl: Optional[int] = OslOption,
    requests: Optional[int] = RequestsOption,
    aiperf: Optional[str] = AiperfOption,
    out: Optional[Path] = typer.Option(None, "--out", help="With compare: where the combined table and plot go"),
    fresh: bool = FreshOption,
    json_out: bool = typer.Option(False, "--json", help="Print the summary (summary.json) instead of the table"),
) -> None:
    """Benchmark a serving run with aiperf, a point per concurrency (exit 1 if a point fails the validity
    gate); `bench compare DIR...` puts benchmarks side by side."""
    if run == "compare":
        summaries, folder = deploy.compare([Path(folder) for folder in folders or []], out)
        console.print(bench_table(summaries))
        for line in invalid_points(summaries):
            console.print(f"invalid: {line}", highlight=False)
        console.print(f"table and plots: {folder}")
        return
    request = BenchRequest(
        numbers(concurrency, "--concurrency"), isl, osl, requests, aiperf, fresh_between_points=fresh
    )
    progress = errors if json_out else console  # with --json, stdout is the summary alone
    with said_on_interrupt(f"bench of run {run} interrupted: aiperf stopped, the point it measured left incomplete"):
        summary, folder = deploy.bench(open_run(run), request, lambda point: progress.print(point_line(point)))
    if json_out:
        print(summary.model_dump_json(indent=2))
    else:
        console.print(bench_table([summary]))
    progress.print(f"results: {folder / 'summary.json'} (with table.txt, the plots, aiperf's own files per point)")
    if not summary.valid:
        raise DeploymentFailed(
            f"run {run}: {sum(not p.valid for p in summary.points)} point(s) failed the validity gate"
        )


@app.command()
@clean_errors
def sweep(
    recipe: str = RecipeOption,
    hosts: Optional[str] = HostsOption,
    set_: list[str] = SetOption,
    vary: list[str] = typer.Option([], "--vary", help="A field and its values: --vary decode.replicas=1,2"),
    zipped: bool = typer.Option(False, "--zip", help="Pair the --vary lists (i-th values together), not every mix"),
    concurrency: Optional[str] = ConcurrencyOption,
    isl: Optional[int] = IslOption,
    osl: Optional[int] = OslOption,
    requests: Optional[int] = RequestsOption,
    aiperf: Optional[str] = AiperfOption,
    out: Optional[Path] = typer.Option(None, "--out", help="The sweep's folder (default: one per command)"),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds each deployment may take to serve"),
    fresh: bool = FreshOption,
    remeasure: bool = typer.Option(False, "--remeasure", help="Measure every point again, ignoring saved results"),
) -> None:
    """Deploy, benchmark and cancel one deployment per combination of the --vary values (exit 1 if a
    point failed); run again, it measures only what is missing or would measure other numbers now
    (another workload, recipe, engine config, hosts file or version)."""
    points = sweep_points(vary, zipped)
    request = BenchRequest(
        numbers(concurrency, "--concurrency"), isl, osl, requests, aiperf, fresh_between_points=fresh
    )
    console.print(f"sweep of {len(points)} point(s): " + "; ".join(point.name for point in points), highlight=False)
    with said_on_interrupt("sweep interrupted: its deployments cancelled and aiperf stopped; run it again to resume"):
        report = deploy.sweep(
            recipe, hosts, set_, points, request, out=out, timeout=timeout, remeasure=remeasure, say=console.print
        )
    if report.summaries:
        console.print(bench_table(report.summaries))
    console.print(
        f"sweep folder: {report.folder} (table.txt, pareto.png with the frontier, a folder per point); "
        f"measured {len(report.measured)}, skipped {len(report.skipped)}, failed {len(report.failed)}"
    )
    invalid = invalid_points(report.summaries)
    if report.failed or invalid:
        raise DeploymentFailed("; ".join([*(f"{name}: {why}" for name, why in report.failed.items()), *invalid]))


@app.command()
@clean_errors
def metrics(
    run: str,
    as_json_: bool = typer.Option(False, "--json", help="Print the targets (file_sd JSON)"),
    open_: bool = typer.Option(False, "--open", help="Serve the run's saved Prometheus data here, until Ctrl-C"),
    grafana: bool = typer.Option(False, "--grafana", help="Print the Grafana dashboard set on this run"),
) -> None:
    """The run's Prometheus targets: every /metrics endpoint (frontend, workers, etcd, the supervisor),
    labelled with run, recipe, role, process, node and backend, in file_sd format (RUN_DIR/prometheus/targets.json).
    With --open, the run's own Prometheus (observability.prometheus): live, or its saved data served again."""
    found = open_run(run)
    if grafana:
        dashboard, datasource = deploy.grafana_dashboard(found)
        print(json.dumps(dashboard, indent=2))
        where = f"its datasource: {datasource} (Grafana provisioning)" if datasource else "pick its Prometheus"
        errors.print(f"Grafana dashboard for run {run}; {where}")
        return
    if open_:
        serve_saved_metrics(found)
        return
    path, groups = deploy.metrics_targets(found)
    if as_json_:
        print(json.dumps(groups, indent=2))
        return
    console.print(f"{len(groups)} targets in {path} (a Prometheus file_sd_configs file; kept while the run lives)")


def serve_saved_metrics(run: RunDir) -> None:
    saved = deploy.open_metrics(run)
    if saved.elsewhere:
        console.print(
            f"run {run.name}'s saved metrics are already served at [bold]{saved.url}[/] (by another metrics --open)"
        )
        return
    if saved.opened is None:
        console.print(f"run {run.name}'s Prometheus is live at [bold]{saved.url}[/]")
        return
    # Before the URL is out: a TERM stops the server it started (as Ctrl-C does) from the moment it is known.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        console.print(f"run {run.name}'s saved metrics at [bold]{saved.url}[/] (Ctrl-C to stop)", highlight=False)
        saved.opened.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        saved.opened.close()


@app.command()
@clean_errors
def cancel(run: str) -> None:
    """Stop every process of a run and check that none is left."""
    leftovers = deploy.cancel(open_run(run))
    if leftovers:
        raise DeploymentFailed(f"run {run}: still running after SIGKILL: {', '.join(leftovers)}")
    console.print(f"run {run} cancelled; no process left")


@app.command()
@clean_errors
def rm(runs: list[str] = typer.Argument(..., metavar="RUN...")) -> None:
    """Delete stopped runs' folders (a live run is refused: cancel it first)."""
    deploy.remove([open_run(run) for run in runs])
    console.print(f"removed {', '.join(runs)}")


@app.command()
@clean_errors
def prune(
    older_than: str = typer.Option("7d", "--older-than", help="Age since a run last recorded anything: 30m, 12h, 7d"),
) -> None:
    """Delete every stopped run that has recorded nothing for longer than --older-than."""
    removed = deploy.prune(duration_s(older_than, "--older-than"))
    console.print(f"removed {len(removed)} stopped run(s)" + (f": {', '.join(removed)}" if removed else ""))
