"""The local backend: the plan's launch script, run on this machine; processes tracked by process group."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from ..errors import DeploymentFailed, UserError
from ..plan import Plan, node_scratch
from ..procs import group_members, pid_alive, stop_groups
from ..render import script_name
from ..runs import RunDir
from .base import Backend

# Generous: it covers the slowest stage of a mock stack; real engines run on Slurm or SSH hosts.
LAUNCH_TIMEOUT_S = 3900


def port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def busy_ports(plan: Plan) -> list[tuple[str, str, int]]:
    """(process, port name, port) for every planned port something on this machine already holds."""
    address = plan.nodes[0].address
    return [(process.name, label, port) for process in plan.processes for label, port in process.ports.items() if not port_free(address, port)]


def python_modules(plan: Plan) -> list[str]:
    return sorted({p.command[2] for p in plan.processes if p.command[0] == plan.python and p.command[1] == "-m"})


def missing_modules(python: str, modules: list[str]) -> list[str]:
    """The modules that interpreter cannot import (all of them if the interpreter does not run)."""
    code = "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))"
    try:
        result = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True, timeout=60)
    except OSError:
        return modules
    return result.stdout.split() if result.returncode == 0 else modules


def missing_programs(plan: Plan) -> list[str]:
    """What the plan runs that this machine lacks: programs on PATH, Python modules in plan.python."""
    programs = {p.command[0] for p in plan.processes if p.command[0] != plan.python}
    missing = [f"program {program}" for program in sorted(programs) if shutil.which(program) is None]
    missing += [f"Python module {module} in {plan.python}" for module in missing_modules(plan.python, python_modules(plan))]
    return missing


class LocalBackend(Backend):
    def preflight(self, plan: Plan) -> None:
        busy = busy_ports(plan)
        if busy:
            held = ", ".join(f"{port} ({process} {label})" for process, label, port in busy)
            if any(process == "frontend" for process, _, _ in busy):
                field, hint = "frontend.http_port", "set frontend.http_port to a free port"
            else:
                field, hint = f"port block {plan.port_block}", "submit again: another run name takes another port block"
            raise UserError(f"{field}: ports already in use on this machine: {held}; {hint}")
        missing = missing_programs(plan)
        if missing:
            raise UserError(
                f"this machine lacks what run {plan.run_name} needs: {'; '.join(missing)}. "
                "Install Dynamo with ./install.sh (it also installs slurmserve), or pick a recipe whose engine is installed."
            )

    def launch(self, plan: Plan, run: RunDir, wait: bool) -> None:
        script = run.path / script_name(plan)
        if not wait:
            subprocess.Popen(["bash", str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=open(run.path / "logs" / "launch.log", "a"), start_new_session=True)
            return
        result = subprocess.run(["bash", str(script)], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
        if result.returncode != 0:
            leftovers = self.stop(run)
            detail = result.stderr.strip() or f"launch script exited {result.returncode}"
            raise DeploymentFailed(detail + (f"\nstill running after stop: {', '.join(leftovers)}" if leftovers else ""))

    def _pgids(self, run: RunDir) -> dict[str, int]:
        return {name: pid for name in (p.name for p in run.plan().processes) if (pid := run.pid(name)) is not None}

    def process_alive(self, run: RunDir, process: str) -> bool | None:
        pid = run.pid(process)
        return None if pid is None else pid_alive(pid)

    def stop(self, run: RunDir) -> list[str]:
        pgids = self._pgids(run)
        survivors = stop_groups(list(pgids.values()))
        shutil.rmtree(node_scratch(run.name), ignore_errors=True)
        return [f"{name} (pid {pid})" for name, pgid in pgids.items() for pid in group_members(pgid) if pid in survivors]
