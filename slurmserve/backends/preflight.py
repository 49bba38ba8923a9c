"""The node preflight, from this machine: run slurmserve.node.node_check's checks with a node's own
interpreter, through the node's runner (here, or on an SSH host), what a plan's ports look like here, and
whether the Dynamo the plan runs accepts its command lines (slurmserve.node.flagcheck)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..planning.needs import NodeNeeds
from ..planning.plan import Plan
from ..resources import node_check_source, node_program_source
from ..transport.runner import LocalRunner, NodeRunner, Ran
from ..transport.sockets import port_free

CHECK_TIMEOUT_S = 30
# Asking the parsers of a vLLM worker imports vLLM (and torch): 10-35 s on a busy two-core machine.
VLLM_FLAGCHECK_TIMEOUT_S = 120


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


def flag_rejections(plan: Plan) -> list[str] | None:
    """Dynamo's own argument parsers, in the interpreter the plan runs (one start for every process), on
    each Dynamo command line that runs outside a container: one line per rejected one, naming the process,
    the flag, the parser's words and Dynamo's version. None when they could not be asked: that interpreter
    is not on this machine (the job's node preflight asks it there), or it cannot run the check at all (no
    Dynamo there: the interpreter check before submit says so in its own words)."""
    commands = [asked for process in plan.processes if not process.in_container and (asked := process.parser_input())]
    return command_rejections(plan.python, commands)


def command_rejections(python: str, commands: list[dict[str, Any]]) -> list[str] | None:
    """slurmserve.node.flagcheck under `python` on commands ({process, module, argv, env}): its lines, one per
    rejected command line ([] when every one is accepted); None when `python` could not be asked."""
    if not commands:
        return []
    if not Path(python).exists():
        return None
    vllm = any(command["module"] == "dynamo.vllm" for command in commands)
    try:
        result = LocalRunner().run(
            [python, "-c", node_program_source("flagcheck"), json.dumps(commands)],
            timeout=VLLM_FLAGCHECK_TIMEOUT_S if vllm else CHECK_TIMEOUT_S,
        )
    except OSError:
        return None
    if result.exited not in (0, 1):
        return None
    return result.stdout.splitlines()
