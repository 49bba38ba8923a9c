"""Backends run a plan: `local` (this machine), later `slurm` and `ssh`. One interface, in base.py."""

from __future__ import annotations

from ..errors import UserError
from .base import Backend


def backend_for(name: str) -> Backend:
    if name == "local":
        from .local import LocalBackend

        return LocalBackend()
    raise UserError(f"hosts: backend {name!r} cannot run deployments yet (render and plan work; submit runs on the local backend)")
