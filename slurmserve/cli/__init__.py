"""The `slurmserve` command: parse, call deploy/render, print. Bad input exits 2, a failed deployment 1
(cli.exits). The commands live by what they are for (setup, a run's life, benchmarks, metrics); they are
registered here, in the order `slurmserve --help` lists them."""

from __future__ import annotations

import typer

from .bench_commands import bench, sweep
from .observe import metrics
from .run_commands import cancel, logs, plan, prune, render, rm, status, submit
from .setup_commands import probe, recipes, stage_recipe_model

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Disaggregated LLM serving on Slurm, SSH hosts and this machine."
)
# In the order `slurmserve --help` lists them. Typer names a command after its function, but stage-model.
app.command()(recipes)
app.command()(plan)
app.command()(probe)
app.command("stage-model")(stage_recipe_model)
app.command()(render)
app.command()(submit)
app.command()(status)
app.command()(logs)
app.command()(bench)
app.command()(sweep)
app.command()(metrics)
app.command()(cancel)
app.command()(rm)
app.command()(prune)
