"""The node preflight, from this machine: run slurmserve.node.node_check's checks with a node's own
interpreter, through the node's runner (here, or on an SSH host), and what a plan's ports look like here."""

from __future__ import annotations

from ..planning.needs import NodeNeeds
from ..planning.plan import Plan
from ..resources import node_check_source
from ..transport.runner import LocalRunner, NodeRunner, Ran
from ..transport.sockets import port_free

CHECK_TIMEOUT_S = 30


def busy_ports(plan: Plan, address: str) -> list[tuple[str, str, int]]:
    """(process, port name, port) for every planned port something at `address` already holds."""
    return [
        (process.name, label, port)
        for process in plan.processes
        for label, port in process.ports.items()
        if not port_free(address, port)
    ]


def run_node_check(runner: NodeRunner, needs: NodeNeeds, timeout: float, python: str | None = None) -> Ran:
    """The node preflight on the runner's node, under `python` (by default the interpreter the needs name),
    sent as `python -c`: slurmserve need not be installed there. Exit 0: nothing lacking; 1: its report
    lists what is."""
    return runner.run([python or needs.python, "-c", node_check_source(), needs.model_dump_json()], timeout=timeout)


def check_here(needs: NodeNeeds) -> str | None:
    """The node preflight on this machine: its one-line report, or None when nothing is lacking."""
    try:
        result = run_node_check(LocalRunner(), needs, CHECK_TIMEOUT_S)
    except OSError as error:
        return f"{needs.node}: python {needs.python} cannot run ({error.strerror})"
    if result.timed_out:
        return f"{needs.node}: the preflight check did not finish within {CHECK_TIMEOUT_S} s"
    if result.exited in (0, 1):
        return result.stdout.strip() or None
    return f"{needs.node}: the preflight check failed: {' '.join(result.stderr.split())[-300:]}"
