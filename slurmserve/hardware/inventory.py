"""`slurmserve probe`: run the hardware probe on every node, the way the hosts file reaches it, and turn
what it finds (GPUs, HCAs and the GPUs they sit next to, port states, addresses) into a hosts file."""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..config.fields import check_identifier
from ..config.hosts import Hosts, Node, concrete_nodes
from ..errors import UserError
from ..transport.slurm import gpus_in_gres, node_gres, slurm
from .parsers import hosts_file_text, node_from_probe

NODE_PROBE_TIMEOUT_S = 120.0  # a node's whole probe; nvidia-smi on a wedged GPU is bounded at 60 s inside it


def probe_script() -> str:
    """The node-side probe (probe.sh beside this file): plain bash, one section per source."""
    return (Path(__file__).with_name("probe.sh")).read_text()


def probe_slurm(hosts: Hosts) -> dict[str, str]:
    """One srun over every node (a task each); `-l` labels each line with its task, and the probe's
    own hostname section says which node a task ran on. Each task sends its output base64-encoded:
    srun splits long lines (`ip -j addr` is one) into separately labelled pieces."""
    names = [node.name for node in concrete_nodes(hosts)]
    command = [
        "srun",
        "-l",
        f"--nodes={len(names)}",
        f"--ntasks={len(names)}",
        "--ntasks-per-node=1",
        f"--nodelist={','.join(names)}",
        "--time=5",
    ]
    command += [f"--partition={hosts.slurm.partition}"] if hosts.slurm.partition else []
    command += [f"--account={hosts.slurm.account}"] if hosts.slurm.account else []
    result = slurm(*command, "bash", "-c", 'printf "%s" "$1" | bash | base64', "probe", probe_script())
    by_task: dict[str, list[str]] = defaultdict(list)
    for line in result.stdout.splitlines():
        match = re.match(r"\s*(\d+): ?(\S*)", line)
        if match:
            by_task[match.group(1)].append(match.group(2))
    outputs = [base64.b64decode("".join(chunks)).decode(errors="replace") for chunks in by_task.values()]
    return {node_from_probe(text, None)["name"]: text for text in outputs}


def probe_ssh(hosts: Hosts) -> dict[str, str]:
    from ..transport.ssh import remote, why_unreachable  # fabric: imported only for SSH hosts
    from ..waiting import fan_out

    nodes: dict[str, Node] = {node.name: node for node in concrete_nodes(hosts)}
    command = f"bash -c {shlex.quote(probe_script())}"
    outcomes = fan_out(list(nodes), lambda name: remote(nodes[name], command), NODE_PROBE_TIMEOUT_S)
    problems = [
        reason for name in nodes if (reason := why_unreachable(nodes[name], outcomes[name], NODE_PROBE_TIMEOUT_S))
    ]
    if problems:
        raise UserError("hosts: " + "; ".join(problems))
    return {name: outcome.value.stdout for name, outcome in outcomes.items() if outcome.value is not None}


def probe_here() -> dict[str, str]:
    result = subprocess.run(
        ["bash", "-c", probe_script()], capture_output=True, text=True, timeout=NODE_PROBE_TIMEOUT_S
    )
    return {node_from_probe(result.stdout, None)["name"]: result.stdout}


def probed_node(name: str, text: str, interface: str | None) -> dict[str, Any]:
    """One node's entry, its name checked like any host name (it is whatever `hostname` printed there)."""
    check_identifier(name, "probed host name")
    try:
        return {**node_from_probe(text, interface), "name": name}
    except ValueError as error:
        raise UserError(f"--interface: node {name}: {error}") from None


def probed_hosts_file(hosts: Hosts, interface: str | None) -> str:
    """A hosts file describing what the probe found on every node of `hosts` (same backend and
    scheduler settings), ready for `plan`."""
    interface = interface or hosts.node.interface
    if hosts.backend == "slurm":
        outputs = probe_slurm(hosts)
    elif hosts.backend == "ssh":
        outputs = probe_ssh(hosts)
    else:
        outputs = probe_here()
    nodes = [probed_node(name, text, interface) for name, text in outputs.items()]
    if hosts.backend == "slurm":  # where nvidia-smi sees nothing, the GPUs Slurm schedules (GRES) are the truth
        gres = node_gres()
        for node in nodes:
            node["gpus"] = node["gpus"] or gpus_in_gres(gres.get(node["name"], ""))
    if hosts.backend == "ssh":  # keep how each host is reached, and where, unless an interface says otherwise
        listed = {h.name: h for h in hosts.hosts}
        for node in nodes:
            entry = listed[node["name"]]
            node |= entry.model_dump(include={"user", "port", "identity_file", "jump"}, exclude_none=True)
            if interface is None and entry.address:
                node["address"] = entry.address
    extra: dict[str, Any] = {}
    if hosts.backend == "slurm":
        extra["slurm"] = hosts.slurm.model_dump(exclude_defaults=True)
    extra |= {
        key: value
        for key, value in (("model_cache", hosts.model_cache), ("python", hosts.python), ("run_root", hosts.run_root))
        if value
    }
    return hosts_file_text(nodes, hosts.backend, interface, extra)
