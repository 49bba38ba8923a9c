"""The interface every backend implements. Backends read the plan and return values (they print
nothing); the run directory is their memory."""

from __future__ import annotations

import os
import socket
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config.hosts import Hosts
from ..errors import UserError
from ..hardware.inventory import probed_hosts_file, probed_nodes
from ..planning.plan import Plan, PlanNode, Process
from ..planning.traits import BackendTraits
from ..runs import HELPERS, RunDir
from ..runs.layout import client_record_of
from ..transport.procfs import pid_file_alive, read_pid_record, stop_groups
from ..transport.runner import Detached, LocalRunner, NodeRunner
from ..waiting import fan_out

DAEMON_CONNECT_TIMEOUT_S = 1.0
FOLLOW_POLL_S = 0.5
LIVE_GROUPS_MODULE = "slurmserve.node.groups"  # run on a node: which process groups still have a member


@dataclass(frozen=True)
class SchedulerView:
    """The deployment as its scheduler sees it."""

    description: str  # one line for `status` ("Slurm job 42: RUNNING")
    ended: str | None = None  # why the scheduler ended the deployment on its own (scancel outside slurmserve)
    queued: bool = False  # the scheduler has not started it yet (the description says why, where it can)


class Launch(ABC):
    """The backend's own part of starting a deployment (a launch script, a Slurm job, an SSH launcher),
    running on its own: `submit` watches it beside the deployment's readiness."""

    @abstractmethod
    def failure(self) -> str | None:
        """What went wrong, once the launch has failed; None while it runs or after it succeeded."""

    def settle(self, timeout: float) -> None:  # noqa: B027 (a launch with no launcher of its own waits for nothing)
        """After a failure seen elsewhere (a process died): give the launcher up to `timeout` seconds to
        notice it too and say what it saw, before everything is stopped."""


class Backend(ABC):
    traits: ClassVar[BackendTraits]  # what the layers below the backends need to know of it

    @abstractmethod
    def preflight(self, plan: Plan) -> None:
        """Check what the plan needs before anything starts; raise UserError naming what is wrong."""

    @abstractmethod
    def submit(self, plan: Plan, run: RunDir) -> Launch:
        """Start the deployment from the run directory's rendered files, and return at once."""

    @abstractmethod
    def alive(self, run: RunDir, in_job: bool = False) -> dict[str, bool | None]:
        """Per process: True running, False it ran and is gone, None not started (yet) or unknown.
        `in_job`: asked by the supervisor, from where it runs (inside the Slurm job, say)."""

    @abstractmethod
    def restart(self, run: RunDir, process: Process) -> None:
        """Start one process again in place (same node, GPUs, ports) from the run's own launch script;
        raise an error saying why when it cannot."""

    @abstractmethod
    def stop_process(self, run: RunDir, process: Process, grace_s: float) -> None:
        """Stop one process and leave the rest serving (SIGTERM, SIGKILL after `grace_s`): a worker that
        scaling removes."""

    @abstractmethod
    def stop(self, run: RunDir) -> list[str]:
        """Stop every process of the run; return a description of anything that survived."""

    @abstractmethod
    def scheduler(self, run: RunDir) -> SchedulerView:
        """The deployment as the scheduler sees it (for `status`)."""

    def finished(self, run: RunDir) -> bool:
        """Nothing of the run runs, nor can start again: its launch began (or it ended) and neither its
        helpers nor any of its processes run. What the backend cannot tell counts as running: only a
        finished run is renamed or removed."""
        launched = run.ended or run.pid_record("launcher") is not None
        return launched and not helpers_running(run) and self.nothing_runs(run)

    def nothing_runs(self, run: RunDir) -> bool:
        """No process of the run runs, as this backend sees its processes."""
        return True not in self.alive(run).values()

    def move_run_dir(self, plan: Plan, target: str) -> None:  # noqa: B027 (one folder, on this machine)
        """Before a stopped run's folder is renamed here: rename the copies of it on other hosts, if any."""

    def node_problems(self, plan: Plan) -> dict[str, str]:
        """Per node whose own daemon (slurmd, sshd) does not answer: what is wrong. Run by the supervisor."""
        return {}

    def run_beside(self, run: RunDir, argv: list[str], env: dict[str, str], log: Path, timeout: float) -> int:
        """Run a client of the deployment (a benchmark) where it belongs: here, a process of this
        machine. Its output goes to `log`; returns its exit status (TIMED_OUT past `timeout` seconds)."""
        return LocalRunner().run_logged(argv, env=env, log=log, timeout=timeout)

    def stop_beside(self, run: RunDir) -> None:
        """Stop the client `run_beside` started (after an interrupt): here, its process group, from its record."""
        record = read_pid_record(run.paths.client_record)
        if record:
            stop_groups([record])

    def runners(self, plan: Plan, *, job_name: str, container: bool = False) -> dict[str, NodeRunner]:
        """How each node of the plan is reached, for commands run there from where the plan runs (the KV-path
        check). `job_name` names Slurm steps; `container`: inside the plan's container, where it has one.
        Here: every node is this machine."""
        return dict.fromkeys((node.name for node in plan.nodes), LocalRunner())

    def probe_runners(self, hosts: Hosts) -> list[tuple[str | None, NodeRunner]]:
        """Runners for the hardware probe of `hosts`, each with the name of the host it reaches (None: the
        probe's own hostname names it; a Slurm step over several nodes runs one task per node). Here: this
        machine."""
        return [(None, LocalRunner())]

    def probed_hosts_file(self, hosts: Hosts, interface: str | None) -> str:
        """`slurmserve probe`: a hosts file of what the hardware probe finds on every node of `hosts`."""
        interface = interface or hosts.node.interface
        nodes = self.completed_probe(probed_nodes(interface, self.probe_runners(hosts)), hosts, interface)
        return probed_hosts_file(hosts, interface, nodes, self.scheduler_settings(hosts))

    def completed_probe(self, nodes: list[dict[str, Any]], hosts: Hosts, interface: str | None) -> list[dict[str, Any]]:
        """What this backend knows of the probed nodes beyond the probe. Here: nothing."""
        return nodes

    def scheduler_settings(self, hosts: Hosts) -> dict[str, Any]:
        """The hosts file's scheduler settings a probed hosts file keeps. Here: none."""
        return {}

    def log_lines(self, run: RunDir, process: str, follow: bool, tail: int | None = None) -> Iterator[str]:
        """A process's log, line by line (`tail`: its last lines only; with `follow`, without end, as it
        grows). Here: a file in the run directory, where the local backend and Slurm (shared filesystem)
        write them."""
        missing = f"run {run.name}: process {process} has no log yet"
        return follow_file(run.log_path(process), follow, missing, tail)


def groups_argv(python: str, specs: list[str], signal: str | None = None) -> list[str]:
    """Run on a node: signal the process groups of these specs (those still ours), and print the name of each
    that has a live member."""
    return [python, "-m", LIVE_GROUPS_MODULE, *(["--signal", signal] if signal else []), *specs]


def client_groups_argv(plan: Plan, signal: str | None = None) -> list[str]:
    """Run on the head node: signal the client's process group (while it is still ours), and print its name
    while it has a live member. From its record, by group: the client's processes whose parent died are
    still members (and escape a Slurm step's process tracking by parentage)."""
    return groups_argv(plan.python, [client_spec(plan)], signal)


def client_spec(plan: Plan) -> str:
    """The groups module's argument for the client run beside the deployment (its record on the head node)."""
    return f"aiperf=@{client_record_of(plan.run_dir)}"


def follow_file(path: Path, follow: bool, missing: str, tail: int | None = None) -> Iterator[str]:
    """A log file's lines (`tail`: the last ones only), then with `follow` those written after."""
    if not path.exists():
        raise UserError(f"{missing} ({path})")

    def lines() -> Iterator[str]:
        with open(path, errors="replace") as log:
            if tail is not None:  # the lines there now, the last `tail` of them; from there, as it grows
                yield from deque(iter(log.readline, ""), maxlen=tail)
            while True:
                line = log.readline()
                if line:
                    yield line
                elif not follow:
                    return
                else:
                    time.sleep(FOLLOW_POLL_S)

    return lines()


class ProcessLaunch(Launch):
    """A launcher running as a child of this process (a launch script, the SSH launcher), in its own
    session with its PID recorded in pids/launcher.pid: a CLI killed mid-submit leaves it finishing the
    start, and `cancel` able to stop it."""

    def __init__(self, run: RunDir, argv: list[str]):
        self.run = run
        self.process = start_detached(run, "launcher", argv)  # its output: logs/launcher.log (LAUNCHER_LOG)

    def settle(self, timeout: float) -> None:
        self.process.wait(timeout)

    def failure(self) -> str | None:
        returncode = self.process.poll()
        if returncode is None or returncode == 0:
            return None
        log = self.run.paths.launcher_log.read_text(errors="replace").strip()
        return log or f"the launcher exited {returncode}"


def start_detached(run: RunDir, name: str, argv: list[str]) -> Detached:
    """A helper of the run (a launcher, the supervisor) as a detached process on this machine, in its own
    session with its PID in pids/NAME.pid and its output in logs/NAME.log, under umask 077."""
    process = LocalRunner().start_detached(argv, log=run.paths.helper_log(name))
    process.write_record(run.paths.pid_record(name))
    return process


def start_supervisor(run: RunDir) -> None:
    start_detached(run, "supervisor", [sys.executable, "-m", "slurmserve.node.supervisor", str(run.path)])


def stop_helpers(run: RunDir, *names: str) -> None:
    """Stop the run's own helpers on this machine before its processes: the launcher would start more,
    the supervisor would restart what is being stopped (inside a Slurm job, scancel stops it with the
    rest). A supervisor cancelling its deployment (fail_fast) does not stop itself."""
    groups = [record for name in names if (record := run.pid_record(name)) and record[0] != os.getpid()]
    if groups:
        stop_groups(groups)


def helpers_running(run: RunDir) -> bool:
    """Whether the run's launcher or supervisor still runs on this machine."""
    return any(pid_file_alive(run.paths.pid_record(name)) for name in HELPERS)


def unanswering_daemons(nodes: list[PlanNode], port_of: Callable[[PlanNode], int], what: str) -> dict[str, str]:
    """Nodes where nothing accepts a TCP connection on the daemon's port, each with what happened."""

    def problem(node: PlanNode) -> str | None:
        port = port_of(node)
        try:
            with socket.create_connection((node.address, port), timeout=DAEMON_CONNECT_TIMEOUT_S):
                return None
        except OSError as error:
            return f"{what} at {node.address}:{port} does not answer ({error.strerror or type(error).__name__})"

    by_name = {node.name: node for node in nodes}
    outcomes = fan_out(list(by_name), lambda name: problem(by_name[name]), DAEMON_CONNECT_TIMEOUT_S + 1)
    return {
        name: outcome.value or f"{what}: no answer"
        for name, outcome in outcomes.items()
        if not outcome.finished or outcome.value
    }
