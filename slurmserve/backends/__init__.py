"""Backends run a plan: `local` (this machine) and `slurm` (sbatch/srun); `ssh` comes later. One interface, in base.py."""

from __future__ import annotations

from ..errors import UserError
from .base import Backend


def backend_for(name: str) -> Backend:
    if name == "local":
        from .local import LocalBackend

        return LocalBackend()
    if name == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend()
    raise UserError(f"hosts: backend {name!r} cannot run deployments yet (plan and render work; submit runs on the local and slurm backends)")
