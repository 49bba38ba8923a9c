"""Preflight checks shared by backends: free ports, programs and Python modules a plan needs."""

from __future__ import annotations

import shutil
import socket
import subprocess

from ..planning.plan import Plan


def port_free(address: str, port: int) -> bool:
    """Whether a process could listen on the port now. SO_REUSEADDR, as Dynamo's servers bind: a socket
    of a run that just ended, in TIME_WAIT, does not hold the port; a listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def busy_ports(plan: Plan, address: str) -> list[tuple[str, str, int]]:
    """(process, port name, port) for every planned port something at `address` already holds."""
    return [
        (process.name, label, port)
        for process in plan.processes
        for label, port in process.ports.items()
        if not port_free(address, port)
    ]


def python_modules(plan: Plan) -> list[str]:
    """The Python modules the plan's processes run (`python -m MODULE`)."""
    return sorted({process.module for process in plan.processes if process.module})


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
    missing += [
        f"Python module {module} in {plan.python}" for module in missing_modules(plan.python, python_modules(plan))
    ]
    return missing
