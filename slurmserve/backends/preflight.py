"""The node preflight, from this machine: run slurmserve.hardware.node_check's checks with a node's own
interpreter (here, or on an SSH host), and what a plan's ports look like here."""

from __future__ import annotations

import subprocess

from ..hardware import node_check
from ..planning.needs import NodeNeeds
from ..planning.plan import Plan
from ..resources import node_check_source

CHECK_TIMEOUT_S = 30


def busy_ports(plan: Plan, address: str) -> list[tuple[str, str, int]]:
    """(process, port name, port) for every planned port something at `address` already holds."""
    return [
        (process.name, label, port)
        for process in plan.processes
        for label, port in process.ports.items()
        if not node_check.port_free(address, port)
    ]


def check_here(needs: NodeNeeds) -> str | None:
    """The node preflight on this machine, under the interpreter the needs name: its one-line report,
    or None when nothing is lacking."""
    try:
        result = subprocess.run(
            [needs.python, "-c", node_check_source(), needs.model_dump_json()],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except OSError as error:
        return f"{needs.node}: python {needs.python} cannot run ({error.strerror})"
    except subprocess.TimeoutExpired:
        return f"{needs.node}: the preflight check did not finish within {CHECK_TIMEOUT_S} s"
    if result.returncode in (0, 1):
        return result.stdout.strip() or None
    return f"{needs.node}: the preflight check failed: {' '.join(result.stderr.split())[-300:]}"
