"""The interface every backend implements. Backends only read the plan; the run directory is their memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor

from ..errors import UserError
from ..plan import Plan, PlanNode, Process
from ..procs import stop_groups
from ..runs import RunDir

DAEMON_CONNECT_TIMEOUT_S = 1.0


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

    def supervised_alive(self, run: RunDir) -> dict[str, bool | None]:
        """`alive`, as the supervisor sees it from where it runs (the launching machine, or in the job)."""
        return self.alive(run)

    @abstractmethod
    def restart(self, run: RunDir, process: Process) -> None:
        """Start one process again in place (same node, GPUs, ports) from the run's own launch script;
        raise an error saying why when it cannot."""

    def node_problems(self, plan: Plan) -> dict[str, str]:
        """Per node whose own daemon (slurmd, sshd) does not answer: what is wrong. Run by the supervisor."""
        return {}

    def ended(self, run: RunDir) -> str | None:
        """Why the scheduler ended the deployment on its own (a job cancelled outside slurmserve), or None."""
        return None

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


def start_supervisor(run: RunDir) -> None:
    """The supervisor as a detached process on this machine, in its own session (pids/supervisor.pid)."""
    with open(run.path / "logs" / "supervisor.log", "a") as log:
        supervisor = subprocess.Popen([sys.executable, "-m", "slurmserve.supervisor", str(run.path)], stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (run.path / "pids" / "supervisor.pid").write_text(f"{supervisor.pid}\n")


def stop_helpers(run: RunDir, *names: str) -> None:
    """Stop the run's own helpers on this machine before its processes: the launcher would start more,
    the supervisor would restart what is being stopped (inside a Slurm job, scancel stops it with the
    rest). A supervisor cancelling its deployment (fail_fast) does not stop itself."""
    pids = [pid for name in names if (pid := run.pid(name)) is not None and pid != os.getpid()]
    if pids:
        stop_groups(pids)


def unanswering_daemons(nodes: list[PlanNode], port_of, what: str) -> dict[str, str]:
    """Nodes where nothing accepts a TCP connection on the daemon's port, each with what happened."""
    def problem(node: PlanNode) -> str | None:
        port = port_of(node)
        try:
            with socket.create_connection((node.address, port), timeout=DAEMON_CONNECT_TIMEOUT_S):
                return None
        except OSError as error:
            return f"{what} at {node.address}:{port} does not answer ({error.strerror or type(error).__name__})"

    with ThreadPoolExecutor(max_workers=min(16, len(nodes) or 1)) as pool:
        found = dict(zip([node.name for node in nodes], pool.map(problem, nodes)))
    return {name: why for name, why in found.items() if why}
