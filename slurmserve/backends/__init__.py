"""Backends run a plan: `local` (this machine), `slurm` (sbatch/srun) and `ssh` (fabric). One interface, in base.py."""

from __future__ import annotations

from ..errors import UserError
from .base import Backend


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
