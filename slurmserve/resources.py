"""Where the files shipped with slurmserve live, in a source checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """A top-level resource folder (`sbatch_templates`, `engine_configs`).

    The wheel carries them inside the package; a source checkout (editable install) keeps them
    beside it at the top of the repository.
    """
    for candidate in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"slurmserve is installed without its {name}/ folder")


def builtin_recipes_dir() -> Path:
    return PACKAGE_DIR / "recipes"


def builtin_model_dir(name: str) -> Path:
    return PACKAGE_DIR / "models" / name
