"""The `slurmserve` command: parse, call deploy/render, print. Bad input exits 2, a failed deployment 1
(cli.exits). The commands live by what they are for (setup, a run's life, benchmarks, metrics); they are
registered here, in the order `slurmserve --help` lists them."""

from __future__ import annotations

import platform
from importlib import metadata

import typer

from .bench_commands import bench, sweep
from .interop_commands import export, import_manifest
from .observe import metrics
from .run_commands import cancel, logs, plan, prune, render, rm, scale, status, submit
from .setup_commands import probe, recipes, stage_recipe_model

# `-h` as well as `--help`, on every command: click passes help_option_names down to each subcommand's context.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Disaggregated LLM serving on Slurm, SSH hosts and this machine.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# What a bug report needs: slurmserve's version, Dynamo's (the Python package and its Rust runtime, which
# install.sh installs separately and can differ) and the interpreter's.
VERSIONED_PACKAGES = ("slurmserve", "ai-dynamo", "ai-dynamo-runtime")


def installed_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_version(requested: bool) -> None:
    if not requested:
        return
    for package in VERSIONED_PACKAGES:
        typer.echo(f"{package} {installed_version(package)}")
    typer.echo(f"Python {platform.python_version()} ({platform.python_implementation()})")
    raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", "-V", is_eager=True, callback=print_version, help="Print the versions and exit"
    ),
) -> None:
    """The options before the verb (the help text is the app's)."""


# In the order `slurmserve --help` lists them. Typer names a command after its function, but stage-model.
app.command()(recipes)
app.command()(plan)
app.command()(probe)
app.command("stage-model")(stage_recipe_model)
app.command()(render)
app.command()(submit)
app.command()(status)
app.command()(logs)
app.command()(scale)
app.command()(bench)
app.command()(sweep)
app.command()(metrics)
app.command()(cancel)
app.command()(rm)
app.command()(prune)
app.command("import")(import_manifest)
app.command()(export)
