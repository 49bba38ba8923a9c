"""Backends run a plan: `local` (this machine), `slurm` (sbatch/srun) and `ssh` (fabric). One interface, in base.py;
each backend's traits (what the layers below need to know of it) in traits.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UserError
from ..planning.traits import BackendTraits
from .traits import LOCAL_TRAITS, SLURM_TRAITS, SSH_TRAITS

if TYPE_CHECKING:
    from .base import Backend

TRAITS_OF_BACKEND = {"local": LOCAL_TRAITS, "slurm": SLURM_TRAITS, "ssh": SSH_TRAITS}


def traits_for(name: str) -> BackendTraits:
    """The traits of the backend of that name (the same as `backend_for(name).traits`)."""
    if name not in TRAITS_OF_BACKEND:
        raise UserError(f"hosts: unknown backend {name!r}")
    return TRAITS_OF_BACKEND[name]


def backend_for(name: str) -> Backend:
    """The backend of that name; each is imported only when used (fabric is slow to import)."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend()
    if name == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend()
    if name == "ssh":
        from .ssh import SSHBackend

        return SSHBackend()
    raise UserError(f"hosts: unknown backend {name!r}")
