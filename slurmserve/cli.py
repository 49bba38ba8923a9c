"""The `slurmserve` command: parse, call deploy/render, print. Bad input exits 2, a failed deployment 1."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from textwrap import shorten
from typing import Optional

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from . import deploy
from .errors import DeploymentFailed, UserError
from .recipe import builtin_recipe_names, load_recipe
from .hosts import default_hosts, load_hosts
from .render import render_script, write_files
from .runs import list_runs, open_run

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Disaggregated LLM serving on Slurm, SSH hosts and this machine.")
console = Console(soft_wrap=True)  # long lines (URLs, curl commands) stay copyable
errors = Console(stderr=True, soft_wrap=True)  # one paragraph; the terminal wraps it

RecipeOption = typer.Option(..., "--recipe", help="A built-in recipe name or a recipe file")
HostsOption = typer.Option(None, "--hosts", help="Hosts file (default: this machine)")
SetOption = typer.Option([], "--set", help="Override a recipe field: --set decode.replicas=2")
LAST_ERROR_CHARS = 80  # in the table; --json has all of it
STATE_STYLE = {"ready": "green", "starting": "yellow", "pending": "dim", "unhealthy": "yellow", "failed": "red", "stopped": "dim",
               "degraded": "yellow"}


def clean_errors(command):
    """Bad input: one paragraph, exit 2, no traceback. A deployment that failed: exit 1."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
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
    return wrapper


def placement_table(plan) -> Table:
    table = Table(title=f"{plan.recipe} ({plan.engine}, {plan.mode}) on {plan.backend}: run {plan.run_name}")
    for column in ("process", "role", "node", "leaf", "GPUs", "ports", "after"):
        table.add_column(column)
    switch_of = {node.name: node.switch or "" for node in plan.nodes}
    for process in plan.processes:
        table.add_row(
            process.name, process.role, ",".join(process.nodes), ",".join(switch_of[n] for n in process.nodes),
            ",".join(map(str, process.gpus)) or "-", " ".join(f"{k}={v}" for k, v in process.ports.items()),
            ",".join(process.after) if len(process.after) <= 3 else f"{len(process.after)} processes")
    table.caption = f"endpoint {plan.endpoint} · discovery {plan.discovery} · model {plan.model}"
    return table


@app.command()
@clean_errors
def recipes(as_json: bool = typer.Option(False, "--json")):
    """List the built-in recipes."""
    catalogue = [load_recipe(name) for name in builtin_recipe_names()]
    if as_json:
        print(json.dumps([{"name": r.name, "engine": r.engine, "mode": r.mode, "model": r.model.repo, "description": r.description} for r in catalogue], indent=2))
        return
    table = Table("name", "engine", "mode", "workers", "model")
    for recipe in catalogue:
        workers = ", ".join(f"{spec.replicas}x {role} TP{spec.tensor_parallel}" for role, spec in recipe.worker_roles())
        table.add_row(recipe.name, recipe.engine, recipe.mode, workers, recipe.model.repo)
    console.print(table)


@app.command()
@clean_errors
def plan(recipe: str = RecipeOption, hosts: Optional[str] = HostsOption, set_: list[str] = SetOption, as_json: bool = typer.Option(False, "--json")):
    """Show where every process would run: node, GPUs, ports (--json: the plan itself)."""
    the_plan = deploy.plan_for(deploy.load_inputs(recipe, hosts, set_))
    if as_json:
        print(the_plan.model_dump_json(indent=2))
    else:
        console.print(placement_table(the_plan))


@app.command()
@clean_errors
def probe(hosts: Optional[str] = HostsOption,
          interface: Optional[str] = typer.Option(None, "--interface", help="IP interface for control-plane traffic (e.g. ib0)"),
          out: Optional[Path] = typer.Option(None, "--out", help="Write the hosts file here (never over an existing file)")):
    """Probe every node's GPUs, RDMA NICs (and the GPUs they sit next to) and addresses; print a hosts file."""
    from .inventory import probed_hosts_file

    text = probed_hosts_file(load_hosts(hosts) if hosts else default_hosts(), interface)
    if out is None:
        print(text, end="")
        return
    write_files({out.name: text}, out.parent.resolve())
    console.print(f"wrote {out}")


@app.command("stage-model")
@clean_errors
def stage_model(recipe: str = RecipeOption, hosts: Optional[str] = HostsOption, set_: list[str] = SetOption):
    """Fetch the recipe's model once into the hosts file's shared model cache, and print its snapshot folder."""
    inputs = deploy.load_inputs(recipe, hosts, set_)
    print(deploy.stage_model(inputs))


@app.command()
@clean_errors
def render(recipe: str = RecipeOption, hosts: Optional[str] = HostsOption, set_: list[str] = SetOption,
           out: Path = typer.Option(..., "--out", help="Folder to write the scripts, plan.json and engine YAMLs to"),
           force: bool = typer.Option(False, "--force", help="Replace files already in --out")):
    """Write the deployment's script(s), plan and engine configs to a folder, without running anything."""
    out = out.resolve()
    the_plan = deploy.plan_for(deploy.load_inputs(recipe, hosts, set_), run_dir=str(out))
    for path in deploy.render_to(the_plan, out, force):
        console.print(f"wrote {path}")


@app.command()
@clean_errors
def submit(recipe: str = RecipeOption, hosts: Optional[str] = HostsOption, set_: list[str] = SetOption,
           name: Optional[str] = typer.Option(None, "--name", help="Run name (default: recipe-date-time-random)"),
           dry_run: bool = typer.Option(False, "--dry-run", help="Print the script that would run; start nothing"),
           no_wait: bool = typer.Option(False, "--no-wait", help="Return once started, without waiting for readiness"),
           timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for the deployment to serve"),
           preflight: Optional[bool] = typer.Option(None, "--preflight/--no-preflight",
                                                    help="UCX transfer test of every prefill->decode path before the model loads (default: on for TRT-LLM)")):
    """Start a deployment and wait until it serves (exit 0 ready, 1 failed, 2 bad input)."""
    inputs = deploy.load_inputs(recipe, hosts, set_)
    if dry_run:
        print(render_script(deploy.plan_for(inputs, name, kv_preflight=preflight)), end="")
        return
    with console.status("starting..."):
        submitted = deploy.submit(inputs, name, wait=not no_wait, timeout=timeout, kv_preflight=preflight)
    run, the_plan = submitted.run, submitted.plan
    if submitted.sample is None:
        console.print(f"run [bold]{run.name}[/] started; follow it with: slurmserve status {run.name} --watch")
        return
    choice = submitted.sample["choices"][0]
    text = choice["message"].get("content") or "(no text: the mock engine generates random token ids)"
    console.print(f"run [bold]{run.name}[/] is ready at [bold]{the_plan.endpoint}[/] (model {the_plan.model})")
    console.print(f"sample completion: {submitted.sample['usage']['completion_tokens']} tokens, "
                  f"finish_reason {choice.get('finish_reason')}: {text}", highlight=False)
    console.print(f"try: curl {the_plan.endpoint}/v1/chat/completions -H 'Content-Type: application/json' "
                  f"-d '{{\"model\": \"{the_plan.model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}], \"max_tokens\": 32}}'")
    console.print(f"status: slurmserve status {run.name}    logs: slurmserve logs {run.name} frontend    stop: slurmserve cancel {run.name}")


def ago(moment: float | None) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int(time.time() - moment))
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago" if seconds < 7200 else f"{seconds // 3600} h ago"


def status_table(report: deploy.RunStatus) -> Table:
    table = Table("process", "node", "GPUs", "state", "since", "restarts", "last error",
                  title=f"run {report.run}: [{STATE_STYLE[report.verdict]}]{report.verdict}[/] ({report.reason})")
    for s in report.processes:
        table.add_row(s.name, ",".join(s.nodes), ",".join(map(str, s.gpus)) or "-", f"[{STATE_STYLE[s.state]}]{s.state}[/]",
                      ago(s.since), str(s.restarts), shorten(s.last_error or "", LAST_ERROR_CHARS, placeholder="..."))
    lines = [f"{report.scheduler} · endpoint {report.endpoint} · "
             + ("watched by its supervisor" if report.supervised else "not supervised now: states asked of the backend")]
    if report.frontend:
        lines.append("frontend sees " + ", ".join(f"{role} {seen}/{expected}" for role, (seen, expected) in report.frontend.items()))
    if report.canary:
        outcome = f"ok in {report.canary['latency_s']} s" if report.canary["ok"] else f"FAILED ({report.canary.get('error')})"
        lines.append(f"canary completion {ago(report.canary['at'])}: {outcome}")
    lines += [f"node {node}: {problem}" for node, problem in report.nodes.items()]
    table.caption = "\n".join(lines)
    return table


@app.command()
@clean_errors
def status(run: Optional[str] = typer.Argument(None), as_json: bool = typer.Option(False, "--json"),
           watch: bool = typer.Option(False, "--watch", help="Redraw every second until interrupted")):
    """Show a run's processes and their state (no RUN: list the runs)."""
    if run is None:
        reports = [(deploy.run_status(r), r.plan()) for r in list_runs()]
        if as_json:
            print(json.dumps([{"run": r.run, "verdict": r.verdict, "reason": r.reason, "recipe": p.recipe, "backend": p.backend,
                               "endpoint": p.endpoint} for r, p in reports], indent=2))
            return
        table = Table("run", "recipe", "backend", "state", "endpoint")
        for report, the_plan in reports:
            table.add_row(report.run, the_plan.recipe, the_plan.backend, f"[{STATE_STYLE[report.verdict]}]{report.verdict}[/]", report.endpoint)
        console.print(table)
        return
    the_run = open_run(run)
    if as_json:
        print(json.dumps(dataclasses.asdict(deploy.run_status(the_run)), indent=2))
        return
    if not watch:
        console.print(status_table(deploy.run_status(the_run)))
        return
    with Live(status_table(deploy.run_status(the_run)), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(1)
                live.update(status_table(deploy.run_status(the_run)), refresh=True)
        except KeyboardInterrupt:
            pass


@app.command()
@clean_errors
def logs(run: str, process: Optional[str] = typer.Argument(None, help="Process name (default: every process, last lines)"),
         follow: bool = typer.Option(False, "--follow", "-f")):
    """Show a process's log (--follow: keep printing as it grows)."""
    the_run = open_run(run)
    if process is None:
        for each in the_run.plan().processes:
            path = the_run.path / each.log
            console.rule(each.name)
            print("\n".join(path.read_text(errors="replace").splitlines()[-20:]) if path.exists() else "(no log yet)")
        return
    deploy.show_log(the_run, process, follow)


@app.command()
@clean_errors
def cancel(run: str):
    """Stop every process of a run and check that none is left."""
    leftovers = deploy.cancel(open_run(run))
    if leftovers:
        raise DeploymentFailed(f"run {run}: still running after SIGKILL: {', '.join(leftovers)}")
    console.print(f"run {run} cancelled; no process left")
