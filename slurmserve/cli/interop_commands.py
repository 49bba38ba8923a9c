"""`import` and `export`: DynamoGraphDeployment manifests (Kubernetes) as recipes, and recipes as manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..config.recipe import load_recipe
from ..errors import UserError
from ..interop.exporter import export_recipe
from ..interop.files import imported_from, recipe_source, write_imported
from ..interop.schema import api_versions
from .exits import clean_errors
from .options import RecipeOption
from .output import console, stderr


def secret_names(pairs: list[str]) -> dict[str, str]:
    """`--secret hf-token-secret=HF_TOKEN` -> {Secret: variable}."""
    names = {}
    for pair in pairs:
        secret, _, variable = pair.partition("=")
        if not secret or not variable.isidentifier():
            raise UserError(f"--secret {pair!r}: expected SECRET=VARIABLE, such as hf-token-secret=HF_TOKEN")
        names[secret] = variable
    return names


@clean_errors
def import_manifest(
    manifest: Path = typer.Argument(..., help="A DynamoGraphDeployment file (v1alpha1 or v1beta1, and ConfigMaps)"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="The recipe to write (default: ./NAME.yaml)"),
    secret: list[str] = typer.Option(
        [], "--secret", help="The variable a Secret's envFrom becomes: SECRET=VAR (default: HF_TOKEN)"
    ),
) -> None:
    """Write a recipe (and its engine configs, beside it) from a Kubernetes DynamoGraphDeployment."""
    imported = imported_from(manifest, secret_names(secret))
    target = out or Path(f"{imported.recipe['name']}.yaml")
    written = write_imported(imported, target)
    for warning in imported.warnings:
        stderr.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    console.print(f"wrote {', '.join(map(str, written))}", highlight=False)
    console.print(f"next: slurmserve plan --recipe {target} --hosts HOSTS.yaml", highlight=False)


@clean_errors
def export(
    recipe: str = RecipeOption,
    format_: str = typer.Option("dgd", "--format", help="dgd: a DynamoGraphDeployment and its ConfigMap"),
    api: str = typer.Option("v1alpha1", "--api", help="The DGD's API version: v1alpha1 or v1beta1"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="The manifest to write (default: print it)"),
    image: Optional[str] = typer.Option(None, "--image", help="The container image every service runs"),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", min=1, max=64, help="A wider worker is multinode"),
) -> None:
    """Write a recipe as a Kubernetes DynamoGraphDeployment (with the ConfigMap of its engine configs)."""
    if format_ != "dgd":
        raise UserError(f"--format {format_!r}: the one format is dgd")
    if api not in api_versions():
        raise UserError(f"--api {api!r}: one of {', '.join(api_versions())}")
    exported = export_recipe(load_recipe(recipe_source(recipe)[0]), api, image, gpus_per_node)
    for warning in exported.warnings:
        stderr.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    if out is None:
        print(exported.yaml(), end="")
        return
    if out.exists():
        raise UserError(f"{out} already exists; export writes no file over another")
    out.write_text(exported.yaml(), encoding="utf-8")
    console.print(f"wrote {out}", highlight=False)
