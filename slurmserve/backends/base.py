"""The interface every backend implements. Backends only read the plan; the run directory is their memory."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..plan import Plan
from ..runs import RunDir


class Backend(ABC):
    @abstractmethod
    def preflight(self, plan: Plan) -> None:
        """Check what the plan needs before anything starts; raise UserError naming what is wrong."""

    @abstractmethod
    def launch(self, plan: Plan, run: RunDir, wait: bool) -> None:
        """Start the deployment in plan order. With `wait`, return once every stage answered its probe
        (raise DeploymentFailed, after stopping what started, when one does not)."""

    @abstractmethod
    def process_alive(self, run: RunDir, process: str) -> bool | None:
        """Whether the process runs; None when it was never started."""

    @abstractmethod
    def stop(self, run: RunDir) -> list[str]:
        """Stop every process of the run; return a description of anything that survived."""
