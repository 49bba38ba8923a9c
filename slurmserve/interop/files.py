"""Imported recipes on disk: `slurmserve import` writes one (and its engine configs) where the user says; a
manifest given as `--recipe` is imported into a folder of slurmserve's own, named by the manifest's content, so
that the same manifest always loads the same files and nothing is written twice."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..config.problems import describe_validation_error
from ..config.recipe import Recipe
from ..errors import UserError
from ..private import write_whole
from ..runs.rundir import slurmserve_home
from .flags import drop_rejected_flags
from .importer import Imported, import_manifest
from .manifest import looks_like_manifest, read_manifest


def imported_from(path: Path, secret_vars: dict[str, str] | None = None, check_flags: bool = True) -> Imported:
    """The manifest's recipe, validated as a recipe file is (errors name the manifest and the recipe field),
    without the flags that this interpreter's Dynamo rejects (interop.flags)."""
    try:
        imported = import_manifest(read_manifest(path), secret_vars)
    except UserError as error:  # each names its place in the manifest; and the file, where it does not yet
        raise error if str(error).startswith(str(path)) else UserError(f"{path}: {error}") from None
    if check_flags:
        drop_rejected_flags(imported)
    try:
        Recipe.model_validate(imported.recipe)
    except ValidationError as error:
        raise describe_validation_error(path, error, imported.recipe, Recipe, ()) from None
    return imported


def write_imported(imported: Imported, out: Path, overwrite: bool = False) -> list[Path]:
    """The recipe at `out` and its engine configs beside it (engine_config relative to the recipe's folder)."""
    targets = [out] + [out.parent / name for name in imported.engine_files]
    existing = [str(target) for target in targets if target.exists()]
    if existing and not overwrite:
        raise UserError(f"{', '.join(existing)} already exist; import writes no file over another (choose -o)")
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, text in imported.engine_files.items():
        write_whole(out.parent / name, text.encode(), private=False)
    header = f"# {imported.recipe.get('description', '')}; slurmserve import\n"
    write_whole(out, (header + yaml.safe_dump(imported.recipe, sort_keys=False, width=1000)).encode(), private=False)
    return targets


def recipe_source(recipe: str) -> tuple[str, list[str]]:
    """The recipe file `--recipe` names: `recipe` itself (a built-in name or a recipe file), or the recipe
    imported from a DynamoGraphDeployment file, with the import's warnings."""
    path = Path(recipe).expanduser()
    if not (path.is_file() and looks_like_manifest(path)):
        return recipe, []
    imported, warnings = recipe_of_manifest(path)
    return str(imported), warnings


def recipe_of_manifest(path: Path) -> tuple[Path, list[str]]:
    """A manifest given as `--recipe`: the recipe file imported from it, and the import's warnings."""
    imported = imported_from(path)
    folder = slurmserve_home() / "imported" / hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    recipe = folder / f"{imported.recipe['name']}.yaml"
    write_imported(imported, recipe, overwrite=True)
    return recipe, imported.warnings
