"""`slurmserve probe`: run the hardware probe on every node, the way the hosts file reaches it, and turn
what it finds (GPUs, HCAs and the GPUs they sit next to, port states, addresses) into a hosts file."""

from __future__ import annotations

import base64
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..config.fields import check_identifier
from ..config.hosts import Hosts
from ..errors import UserError
from ..transport.runner import NodeRunner
from ..transport.slurm import gpus_in_gres, node_gres
from ..waiting import fan_out
from .parsers import hosts_file_text, node_from_probe

NODE_PROBE_TIMEOUT_S = 120.0  # a node's whole probe; nvidia-smi on a wedged GPU is bounded at 60 s inside it
LAUNCH_SLACK_S = 10.0  # srun or SSH launching it, on top


def probe_script() -> str:
    """The node-side probe (probe.sh beside this file): plain bash, one section per source."""
    return (Path(__file__).with_name("probe.sh")).read_text()


def probe_argv() -> list[str]:
    """The probe as a node runs it, its output base64-encoded: srun splits long lines (`ip -j addr` is one)
    into separately labelled pieces."""
    return ["bash", "-c", 'printf "%s" "$1" | bash | base64', "probe", probe_script()]


def decoded_outputs(stdout: str) -> list[str]:
    """Each task's probe output: a Slurm step over several nodes (`srun -l`) labels each line with its
    task; one node's output has no labels."""
    by_task: dict[str, list[str]] = defaultdict(list)
    for line in stdout.splitlines():
        match = re.match(r"\s*(\d+): ?(\S*)", line)
        task, chunk = (match.group(1), match.group(2)) if match else ("", line.strip())
        by_task[task].append(chunk)
    return [base64.b64decode("".join(chunks)).decode(errors="replace") for chunks in by_task.values() if any(chunks)]


def probe(runners: list[tuple[str | None, NodeRunner]]) -> dict[str, str]:
    """Every runner's nodes probed at once: node name -> what the probe printed there. A runner's name
    (the hosts file's, for SSH hosts) names its node; else the probe's own hostname section does."""
    outcomes = fan_out(
        list(range(len(runners))),
        lambda index: runners[index][1].run(probe_argv(), timeout=NODE_PROBE_TIMEOUT_S),
        NODE_PROBE_TIMEOUT_S + LAUNCH_SLACK_S,
    )
    problems, outputs = [], {}
    for index, (name, runner) in enumerate(runners):
        ran = outcomes[index].value
        problem = runner.why_failed(outcomes[index], NODE_PROBE_TIMEOUT_S + LAUNCH_SLACK_S)
        if problem is None and ran is not None and not ran.ok and not ran.stdout.strip():
            problem = f"{runner.where}: the probe failed: {' '.join(ran.stderr.split())[-300:]}"
        if problem or ran is None:
            problems.append(problem or f"{runner.where}: no answer")
            continue
        for text in decoded_outputs(ran.stdout):
            outputs[name or node_from_probe(text, None)["name"]] = text
    if problems:
        raise UserError("hosts: " + "; ".join(problems))
    return outputs


def probed_node(name: str, text: str, interface: str | None) -> dict[str, Any]:
    """One node's entry, its name checked like any host name (it is whatever `hostname` printed there)."""
    check_identifier(name, "probed host name")
    try:
        return {**node_from_probe(text, interface), "name": name}
    except ValueError as error:
        raise UserError(f"--interface: node {name}: {error}") from None


def probed_nodes(interface: str | None, runners: list[tuple[str | None, NodeRunner]]) -> list[dict[str, Any]]:
    """Every node the runners reach (its backend's way) as the probe found it."""
    return [probed_node(name, text, interface) for name, text in probe(runners).items()]


def with_scheduled_gpus(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where nvidia-smi sees nothing, the GPUs Slurm schedules (GRES) are the truth."""
    gres = node_gres()
    return [node | {"gpus": node["gpus"] or gpus_in_gres(gres.get(node["name"], ""))} for node in nodes]


def with_listed_reach(nodes: list[dict[str, Any]], hosts: Hosts, interface: str | None) -> list[dict[str, Any]]:
    """Each host keeps how it is reached (user, port, key, jump) and where, unless an interface (the resolved
    one: --interface, else the hosts file's) says otherwise."""
    listed = {host.name: host for host in hosts.hosts}
    kept = []
    for node in nodes:
        entry = listed[node["name"]]
        reach = entry.model_dump(include={"user", "port", "identity_file", "jump"}, exclude_none=True)
        address = {"address": entry.address} if interface is None and entry.address else {}
        kept.append(node | reach | address)
    return kept


def probed_hosts_file(hosts: Hosts, interface: str | None, nodes: list[dict], scheduler: dict[str, Any]) -> str:
    """A hosts file of the probed `nodes` (same backend, its `scheduler` settings and the shared paths kept),
    ready for `plan`; `interface` the resolved one."""
    shared = {
        key: value
        for key, value in (("model_cache", hosts.model_cache), ("python", hosts.python), ("run_root", hosts.run_root))
        if value
    }
    return hosts_file_text(nodes, hosts.backend, interface, scheduler | shared)
