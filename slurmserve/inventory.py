"""`slurmserve probe`: run the hardware probe on every node, the way the hosts file reaches it, and turn
what it finds (GPUs, HCAs and the GPUs they sit next to, port states, addresses) into a hosts file."""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
from collections import defaultdict

from .errors import UserError
from .hosts import Hosts, concrete_nodes
from .hwprobe import PROBE_SCRIPT, hosts_file_text, node_from_probe
from .plan import PlanNode
from .slurmcmd import gpus_in_gres, node_gres, slurm

PROBE_TIMEOUT_S = 120.0


def probe_slurm(hosts: Hosts) -> dict[str, str]:
    """One srun over every node (a task each); `-l` labels each line with its task, and the probe's
    own hostname section says which node a task ran on. Each task sends its output base64-encoded:
    srun splits long lines (`ip -j addr` is one) into separately labelled pieces."""
    names = [node.name for node in concrete_nodes(hosts)]
    command = ["srun", "-l", f"--nodes={len(names)}", f"--ntasks={len(names)}", "--ntasks-per-node=1",
               f"--nodelist={','.join(names)}", "--time=5"]
    command += [f"--partition={hosts.slurm.partition}"] if hosts.slurm.partition else []
    command += [f"--account={hosts.slurm.account}"] if hosts.slurm.account else []
    result = slurm(*command, "bash", "-c", 'printf "%s" "$1" | bash | base64', "probe", PROBE_SCRIPT)
    by_task: dict[str, list[str]] = defaultdict(list)
    for line in result.stdout.splitlines():
        match = re.match(r"\s*(\d+): ?(\S*)", line)
        if match:
            by_task[match.group(1)].append(match.group(2))
    outputs = [base64.b64decode("".join(chunks)).decode(errors="replace") for chunks in by_task.values()]
    return {node_from_probe(text, None)["name"]: text for text in outputs}


def probe_ssh(hosts: Hosts) -> dict[str, str]:
    from .backends.ssh import fan_out, remote, why_unreachable  # fabric: imported only for SSH hosts

    nodes = {n.name: PlanNode(name=n.name, address=n.address, gpus=n.gpus, ssh=n.ssh) for n in concrete_nodes(hosts)}
    outcomes = fan_out(list(nodes), lambda name: remote(nodes[name], f"bash -c {shlex.quote(PROBE_SCRIPT)}"), PROBE_TIMEOUT_S)
    problems = [reason for name in nodes if (reason := why_unreachable(nodes[name], outcomes[name]))]
    if problems:
        raise UserError("hosts: " + "; ".join(problems))
    return {name: outcome.value.stdout for name, outcome in outcomes.items()}


def probe_here() -> dict[str, str]:
    text = subprocess.run(["bash", "-c", PROBE_SCRIPT], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S).stdout
    return {node_from_probe(text, None)["name"]: text}


def probed_hosts_file(hosts: Hosts, interface: str | None) -> str:
    """A hosts file describing what the probe found on every node of `hosts` (same backend and
    scheduler settings), ready for `plan`."""
    interface = interface or hosts.node.interface
    outputs = {"slurm": probe_slurm, "ssh": probe_ssh}.get(hosts.backend, lambda _: probe_here())(hosts)
    nodes = [{**node_from_probe(text, interface), "name": name} for name, text in outputs.items()]
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
    extra = {"slurm": hosts.slurm.model_dump(exclude_defaults=True)} if hosts.backend == "slurm" else {}
    extra |= {key: value for key, value in (("model_cache", hosts.model_cache), ("python", hosts.python), ("run_root", hosts.run_root)) if value}
    return hosts_file_text(nodes, hosts.backend, interface, extra)
