"""The local backend: the plan's launch script, run on this machine; processes tracked by process group."""

from __future__ import annotations

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
                f"this machine lacks what run {plan.run_name} needs: {lacking.partition(': ')[2]}. Install Dynamo "
                "with ./install.sh (it also installs slurmserve), or pick a recipe whose engine is installed."
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

    def __init__(self) -> None:
        self.records: dict[str, tuple[int, str | None]] = {}  # a PID file is read again once its process ends

    def alive(self, run: RunDir, in_job: bool = False) -> dict[str, bool | None]:
        alive: dict[str, bool | None] = {}
        for name in run.process_names():
            record = self.records.get(name)
            if record is not None and pid_alive(*record):
                alive[name] = True  # one look at /proc a process a tick: thousands of processes every tick
                continue
            record = run.pid_record(name)  # not started yet, or restarted since
            if record is None:
                alive[name] = None
                continue
            self.records[name] = record
            alive[name] = pid_alive(*record)
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
