"""The commands of a run's life: plan and render it, submit it, watch its status and logs, cancel it,
remove it once stopped."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.live import Live

from .. import deploy
from ..config.hosts import concrete_nodes
from ..errors import DeploymentFailed, UserError
from ..runs import RunDir, open_run, scan_runs
from .exits import clean_errors, stopped_on_interrupt
from .options import HostsOption, RecipeOption, SetOption, TimeoutOption, duration_s, timeout_s
from .output import console, say_ready, to_json, warn
from .plan_output import placement_table, plan_summary, rank_table
from .status_output import run_list, run_summary, status_view, unreadable_summary
from .submit_progress import progress_shown

ALL_LOGS_TAIL = 20  # the lines of each process's log that `logs RUN` shows
NameOption = typer.Option(
    None, "--name", help="Run name: the same name gives the same port block while it is free (default: a new one)"
)


@clean_errors
def plan(
    recipe: str = RecipeOption,
    hosts: Optional[str] = HostsOption,
    set_: list[str] = SetOption,
    name: Optional[str] = NameOption,
    as_json: bool = typer.Option(False, "--json"),
    ranks: bool = typer.Option(False, "--ranks", help="Also show each worker rank's node, GPU and RDMA NICs"),
) -> None:
    """Show where every process would run: node, GPUs, ports (--json: the plan itself). With --name, the
    names and ports that `submit --name` will use."""
    inputs = deploy.load_inputs(recipe, hosts, set_)
    the_plan = deploy.plan_for(inputs, name, avoid_live_runs=True)
    warn(the_plan)
    if as_json:
        print(the_plan.model_dump_json(indent=2))
        return
    console.print(placement_table(the_plan))
    if ranks:
        console.print(rank_table(the_plan))
    console.print(plan_summary(the_plan, concrete_nodes(inputs.hosts)), highlight=False)
    if the_plan.chain:
        console.print(f"lifetime: {the_plan.chain.summary()}", highlight=False)


@clean_errors
def render(
    recipe: str = RecipeOption,
    hosts: Optional[str] = HostsOption,
    set_: list[str] = SetOption,
    out: Path = typer.Option(..., "--out", help="Folder to write the scripts, plan.json and engine YAMLs to"),
    force: bool = typer.Option(False, "--force", help="Replace files already in --out"),
    name: Optional[str] = NameOption,
) -> None:
    """Write the deployment's script(s), plan and engine configs to a folder, without running anything.
    With --name, the names and ports that `submit --name` will use."""
    out = out.resolve()
    prepared = deploy.prepare(recipe, hosts, set_, name=name, run_dir=str(out), dry_run=True)
    warn(prepared.plan)
    for path in deploy.render_to(prepared, out, force):
        console.print(f"wrote {path}")


@clean_errors
def submit(
    recipe: str = RecipeOption,
    hosts: Optional[str] = HostsOption,
    set_: list[str] = SetOption,
    name: Optional[str] = NameOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the script that would run; start nothing"),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="Return once started, without waiting for readiness (it runs on after this command)"
    ),
    timeout: float = TimeoutOption,
    preflight: Optional[bool] = typer.Option(
        None,
        "--preflight/--no-preflight",
        help="UCX transfer test of every prefill->decode path before the model loads (default: on for TRT-LLM)",
    ),
    lifetime: Optional[str] = typer.Option(
        None, "--lifetime", help="Serve this long (14d, 12h) as a chain of Slurm jobs: the recipe's lifetime.total"
    ),
) -> None:
    """Start a deployment and wait until it serves (exit 0 ready, 1 failed, 2 bad input). Ctrl-C or SIGTERM
    before then cancels it (exit 130 or 143)."""
    timeout = timeout_s(timeout)
    set_ = [*set_, f"lifetime.total={lifetime}"] if lifetime is not None else set_
    with stopped_on_interrupt("submit"):
        prepared = deploy.prepare(
            recipe, hosts, set_, name=name, kv_preflight=preflight, dry_run=dry_run, submitting=not dry_run
        )
        warn(prepared.plan)
        if dry_run:
            print(prepared.script, end="")
            return
        with progress_shown(prepared.plan):
            submitted = deploy.submit(prepared, wait=not no_wait, timeout=timeout)
    if submitted.sample is None:
        run = submitted.run.name
        console.print(f"run [bold]{run}[/] started; follow it with: slurmserve status {run} --watch")
        return
    say_ready(submitted, submitted.sample)


@clean_errors
def status(
    run: Optional[str] = typer.Argument(None),
    as_json_: bool = typer.Option(False, "--json"),
    watch: bool = typer.Option(False, "--watch", help="Redraw every second until interrupted"),
    every: bool = typer.Option(False, "--all", help="List every run, stopped ones too (default: the live ones)"),
) -> None:
    """Show a run's processes and their state (no RUN: list the live runs; --all: every run)."""
    if run is None:
        list_runs(every, as_json_)
        return
    the_run = open_run(run)
    if as_json_:
        print(to_json(deploy.status(the_run), deploy.RunStatus))
    elif watch:
        watch_run(the_run)
    else:
        console.print(status_view(deploy.status(the_run)))


def list_runs(every: bool, in_json: bool) -> None:
    """The live runs (`every`: the stopped ones too), and those whose plan cannot be read."""
    runs, unreadable = scan_runs()
    reports = [deploy.status(r) for r in runs if every or not deploy.stopped(r)]
    if in_json:
        summaries = [run_summary(report) for report in reports] + [unreadable_summary(u) for u in unreadable]
        print(to_json(summaries, list[dict[str, str]]))
    elif not reports and not unreadable:
        console.print("no runs" if every else "no live runs (--all lists stopped ones too)")
    else:
        console.print(run_list(reports, unreadable, console.width))


def watch_run(run: RunDir) -> None:
    """The run's status table, redrawn every second until Ctrl-C."""
    with Live(status_view(deploy.status(run), watching=True), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(1)
                live.update(status_view(deploy.status(run), watching=True), refresh=True)
        except KeyboardInterrupt:
            pass


@clean_errors
def logs(
    run: str,
    process: Optional[str] = typer.Argument(
        None, help="Process name, or supervisor (default: every process, its last lines)"
    ),
    follow: bool = typer.Option(False, "--follow", "-f"),
    tail: Optional[int] = typer.Option(
        None, "--tail", "-n", min=0, help="Only the last N lines (then, with -f, new ones)"
    ),
) -> None:
    """Show a process's log, or the run's supervisor's (--follow: keep printing as it grows)."""
    the_run = open_run(run)
    if process is None:
        for each in the_run.plan().processes:
            console.rule(each.name)
            print("".join(last_lines(the_run, each.name, ALL_LOGS_TAIL if tail is None else tail)), end="")
        return
    for line in deploy.logs(the_run, process, follow, tail):
        sys.stdout.write(line)
        sys.stdout.flush()


def last_lines(run: RunDir, process: str, count: int) -> list[str]:
    """A process's last lines, or a line saying it has none yet."""
    try:
        return list(deploy.logs(run, process, tail=count))
    except UserError:
        return ["(no log yet)\n"]


@clean_errors
def cancel(run: str) -> None:
    """Stop every process of a run and check that none is left."""
    the_run = open_run(run)
    was_stopped = the_run.ended  # cancelled before, or its start failed: said so, though cancel still cleans up
    leftovers = deploy.cancel(the_run)
    if leftovers:
        raise DeploymentFailed(f"run {run}: still running after SIGKILL: {', '.join(leftovers)}")
    console.print(
        f"run {run} was already stopped; no process left" if was_stopped else f"run {run} cancelled; no process left"
    )


@clean_errors
def scale(
    run: str,
    counts: list[str] = typer.Argument(None, metavar="[ROLE=N]...", help="e.g. decode=3, within autoscale min/max"),
    pause: bool = typer.Option(False, "--pause", help="Stop following the planner's decisions"),
    resume: bool = typer.Option(False, "--resume", help="Follow the planner's decisions again"),
) -> None:
    """Ask a run's supervisor for this many workers of an autoscaled role: it starts standby workers in place,
    or removes the latest added ones (out of discovery, drained, stopped). `status` shows the counts. The
    planner's next decision asks again unless it is paused (--pause; --resume follows it again)."""
    if pause and resume:
        raise UserError("scale: --pause or --resume, not both")
    the_run = open_run(run)
    said = []
    if pause or resume:
        deploy.pause_planner(the_run, paused=pause)
        said.append("the planner's decisions " + ("are not followed" if pause else "are followed again"))
    if counts or not said:
        asked = deploy.ask_scale(the_run, counts or [])
        said.append(f"asked for {', '.join(f'{role} {count}' for role, count in asked.items())}")
    console.print(f"run {run}: {'; '.join(said)}")


@clean_errors
def rm(runs: list[str] = typer.Argument(..., metavar="RUN...")) -> None:
    """Delete stopped runs' folders (a live run is refused: cancel it first)."""
    deploy.remove([open_run(run) for run in runs])
    console.print(f"removed {', '.join(runs)}")


@clean_errors
def prune(
    older_than: str = typer.Option("7d", "--older-than", help="Age since a run last recorded anything: 30m, 12h, 7d"),
) -> None:
    """Delete every stopped run that has recorded nothing for longer than --older-than."""
    removed = deploy.prune(duration_s(older_than, "--older-than"))
    console.print(f"removed {len(removed)} stopped run(s)" + (f": {', '.join(removed)}" if removed else ""))
