"""The local backend: the plan's launch script, run on this machine; processes tracked by process group."""

from __future__ import annotations

import os
import select
import shutil

from ..errors import UserError
from ..planning.needs import needs_of
from ..planning.plan import Plan, Process, node_scratch
from ..runs import HELPERS, RunDir, live_runs
from ..transport.procfs import pid_alive, stop_groups
from ..transport.runner import LocalRunner
from .base import Backend, Launch, ProcessLaunch, SchedulerView, stop_helpers
from .preflight import busy_ports, check_here
from .traits import LOCAL_TRAITS

RESTART_TIMEOUT_S = 60
ALWAYS_LOOKED_UP = -1  # no pidfd: such a process counts as "ended?" every time, and is looked up in /proc


class ExitWatch:
    """Which recorded processes have ended, from one poll() of a pidfd each: a read of /proc/PID/stat a
    process a tick cost about 13 us each (a third of the tick's CPU at 2,048 processes). Where pidfds
    cannot be had, a process is looked up in /proc every time, as before."""

    def __init__(self) -> None:
        self.watched: dict[str, int] = {}  # process -> its pidfd (or ALWAYS_LOOKED_UP)
        self.poll = select.poll()

    def ended(self) -> set[int]:
        """The pidfds of the processes that ended (ALWAYS_LOOKED_UP among them: those without one)."""
        return {fd for fd, _ in self.poll.poll(0)} | {ALWAYS_LOOKED_UP}

    def watch(self, name: str, record: tuple[int, str | None]) -> bool:
        """Whether the recorded process runs; it is watched from now on while it does."""
        old = self.watched.pop(name, ALWAYS_LOOKED_UP)
        if old != ALWAYS_LOOKED_UP:
            self.poll.unregister(old)
            os.close(old)
        fd = pidfd_of(record[0])
        if not pid_alive(*record):  # after the pidfd is open: it is the recorded process, not a reused PID
            if fd is not None:
                os.close(fd)
            return False
        if fd is not None:
            self.poll.register(fd, select.POLLIN)
        self.watched[name] = ALWAYS_LOOKED_UP if fd is None else fd
        return True


def pidfd_of(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # gone already, a kernel before 5.3, or out of descriptors
        return None


def port_owners(plan: Plan) -> dict[int, str]:
    """Which live run of this machine holds each port it planned (other than this plan's run)."""
    owners: dict[int, str] = {}
    for run in live_runs():
        other = run.plan()
        if other.run_name != plan.run_name and other.backend == "local":
            owners |= {port: f"run {other.run_name}" for process in other.processes for port in process.ports.values()}
    return owners


class LocalBackend(Backend):
    traits = LOCAL_TRAITS

    def preflight(self, plan: Plan) -> None:
        busy = busy_ports(plan, plan.nodes[0].address)
        if busy:
            owners = port_owners(plan)
            held = ", ".join(
                f"{port} ({process} {label}, held by {owners.get(port, 'another process on this machine')})"
                for process, label, port in busy
            )
            if any(label == "http" for _, label, _ in busy):
                field, hint = "frontend.http_port", "set frontend.http_port to a free port, or leave it out"
            else:
                field, hint = f"run {plan.run_name}", "cancel that run, or submit again under another name"
            raise UserError(f"{field}: ports already in use on this machine: {held}; {hint}")
        lacking = check_here(needs_of(plan, self.traits).nodes[plan.nodes[0].name].model_copy(update={"ports": {}}))
        if lacking:
            raise UserError(
                f"this machine lacks what run {plan.run_name} needs: {lacking.partition(': ')[2]}. ./install.sh "
                "installs Dynamo, not an engine such as TensorRT-LLM (which also needs GPUs): install the engine "
                "here, or rehearse the recipe on the mock engine, which needs neither: --set engine=mocker"
            )

    def submit(self, plan: Plan, run: RunDir) -> Launch:
        """The launch script starts the supervisor, then each stage once the one before answers its probes."""
        return ProcessLaunch(run, ["bash", str(run.path / self.traits.launch_script)])

    def restart(self, run: RunDir, process: Process) -> None:
        old = run.pid_record(process.name)
        if old is not None:
            stop_groups([old], grace_s=2.0)  # what is left of its group (children of the dead process)
        result = LocalRunner().run(
            ["bash", str(run.path / self.traits.launch_script), "--restart", process.name], timeout=RESTART_TIMEOUT_S
        )
        if not result.ok:
            raise RuntimeError(result.stderr.strip() or f"launch script exited {result.exited}")

    def stop_process(self, run: RunDir, process: Process, grace_s: float) -> None:
        record = run.pid_record(process.name)
        if record is not None:
            stop_groups([record], grace_s=grace_s)

    def __init__(self) -> None:
        self.exits = ExitWatch()

    def alive(self, run: RunDir, in_job: bool = False) -> dict[str, bool | None]:
        ended = self.exits.ended()  # one poll for every process: thousands of processes every tick
        alive: dict[str, bool | None] = {}
        for name in run.process_names():
            watched = self.exits.watched.get(name)
            if watched is not None and watched not in ended:
                alive[name] = True
                continue
            record = run.pid_record(name)  # not started yet, ended, or restarted since
            alive[name] = None if record is None else self.exits.watch(name, record)
        return alive

    def scheduler(self, run: RunDir) -> SchedulerView:
        return SchedulerView("processes on this machine")

    def stop(self, run: RunDir) -> list[str]:
        stop_helpers(run, *HELPERS)
        self.stop_beside(run)  # a benchmark's aiperf: a client of what is stopped
        groups = {name: record for name in run.process_names() if (record := run.pid_record(name))}
        still_running = stop_groups(list(groups.values()))
        shutil.rmtree(node_scratch(run.name), ignore_errors=True)
        return [f"{name} (process group {pgid})" for name, (pgid, _) in groups.items() if pgid in still_running]
