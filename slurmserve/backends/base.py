"""The interface every backend implements. Backends only read the plan; the run directory is their memory."""

from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod

from ..errors import UserError
from ..plan import Plan
from ..runs import RunDir


class Backend(ABC):
    @abstractmethod
    def preflight(self, plan: Plan) -> None:
        """Check what the plan needs before anything starts; raise UserError naming what is wrong."""

    @abstractmethod
    def launch(self, plan: Plan, run: RunDir, wait: bool) -> None:
        """Start the deployment. Returns once the backend's own part is done (with `wait`, the local
        backend returns after every stage answered its probe); raises DeploymentFailed, after stopping
        what started, when that part fails."""

    @abstractmethod
    def alive(self, run: RunDir) -> dict[str, bool | None]:
        """Per process: True running, False it ran and is gone, None not started (yet)."""

    @abstractmethod
    def describe(self, run: RunDir) -> str:
        """One line on the deployment as the scheduler sees it (for `status`)."""

    @abstractmethod
    def stop(self, run: RunDir) -> list[str]:
        """Stop every process of the run; return a description of anything that survived."""

    def show_log(self, run: RunDir, process: str, follow: bool) -> None:
        """Print a process's log (with `follow`, keep printing as it grows). Here: a file in the run
        directory, where the local backend and Slurm (shared filesystem) write them."""
        path = run.log_path(process)
        if not path.exists():
            raise UserError(f"run {run.name}: process {process} has no log yet ({path})")
        with open(path, errors="replace") as log:
            sys.stdout.write(log.read())
            while follow:
                chunk = log.read()
                sys.stdout.write(chunk)
                sys.stdout.flush()
                if not chunk:
                    time.sleep(0.5)
