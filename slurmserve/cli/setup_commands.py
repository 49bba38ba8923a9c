"""The commands that come before a deployment: the recipes there are, the hosts file a probe writes,
the model staged into the shared cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Column, Table

from .. import deploy
from ..config.hosts import load_hosts
from ..config.recipe import builtin_recipe_names, load_recipe
from ..hardware.discovery import default_hosts
from ..render.files import write_files
from .exits import clean_errors
from .options import HostsOption, RecipeOption, SetOption
from .output import console


@clean_errors
def recipes(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the built-in recipes."""
    catalogue = [load_recipe(name) for name in builtin_recipe_names()]
    if as_json:
        fields = ("name", "engine", "mode", "description")
        print(json.dumps([{**r.model_dump(include=set(fields)), "model": r.model.repo} for r in catalogue], indent=2))
        return
    # At 80 columns nothing a user copies may fold: each recipe's model on a line of its own under its name,
    # a line per worker group.
    table = Table(
        Column("recipe / model", no_wrap=True),
        "engine",
        "mode",
        Column("workers", no_wrap=True),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        show_lines=True,
    )
    for recipe in catalogue:
        workers = [f"{spec.replicas}x {name} TP{spec.tensor_parallel}" for name, spec in recipe.worker_roles()]
        table.add_row(f"{recipe.name}\n[dim]{recipe.model.repo}[/]", recipe.engine, recipe.mode, "\n".join(workers))
    console.print(table)


@clean_errors
def probe(
    hosts: Optional[str] = HostsOption,
    interface: Optional[str] = typer.Option(
        None, "--interface", help="IP interface for control-plane traffic (e.g. ib0)"
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the hosts file here (never over an existing file)"),
) -> None:
    """Probe every node's GPUs, RDMA NICs (and the GPUs they sit next to) and addresses; print a hosts file."""
    from ..backends import backend_for

    probed = load_hosts(hosts) if hosts else default_hosts()
    text = backend_for(probed.backend).probed_hosts_file(probed, interface)
    if out is None:
        print(text, end="")
        return
    write_files({out.name: text}, out.parent.resolve(), private=False)
    console.print(f"wrote {out}")


@clean_errors
def stage_recipe_model(
    recipe: str = RecipeOption, hosts: Optional[str] = HostsOption, set_: list[str] = SetOption
) -> None:
    """Fetch the recipe's model once into the hosts file's shared model cache, and print its snapshot folder."""
    inputs = deploy.load_inputs(recipe, hosts, set_)
    print(deploy.stage_model(inputs))
