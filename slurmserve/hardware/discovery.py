"""The cluster `--hosts` stands for when it is left out: the Slurm cluster this machine submits to
(partition, nodes, GPUs and leaf switches from scontrol), else this machine."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from ..config.hosts import HostEntry, Hosts, NodeSpec, SlurmSpec, SwitchSpec, TopologySpec
from ..errors import UserError
from ..transport.runner import LocalRunner
from ..transport.slurm import expand_hostlist, gpus_in_gres, sbatch_installed, scontrol_records, show_topology
from .parsers import count_gpus

GPU_LISTING_TIMEOUT_S = 30


def local_gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    result = LocalRunner().run(["nvidia-smi", "-L"], timeout=GPU_LISTING_TIMEOUT_S)
    return count_gpus(result.stdout) if result.ok else 0


def local_hosts() -> Hosts:
    """This machine as a one-node cluster, with the GPUs nvidia-smi lists: none on a machine without any
    (the planner then places the mock engine's workers on simulated GPUs, and says so; a real engine is
    refused there)."""
    here = HostEntry(name=socket.gethostname(), address="127.0.0.1", gpus=local_gpu_count())
    return Hosts(backend="local", hosts=[here])


def with_local_nodes(hosts: Hosts) -> Hosts:
    """Hosts of a backend that runs on this machine, without a hosts list: this machine (the hosts file's
    other settings kept, its `node:` block's GPUs over the ones detected)."""
    if hosts.hosts:
        return hosts
    here = local_hosts().hosts
    if "node" in hosts.model_fields_set:
        here = [entry.model_copy(update={"gpus": None}) for entry in here]
    return hosts.model_copy(update={"hosts": here})


def slurm_configured() -> bool:
    """sbatch is installed and a slurm.conf says where the controller is (else clients retry for a minute)."""
    return sbatch_installed() and Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).is_file()


def discover_slurm() -> Hosts:
    """The cluster this machine submits to: its default partition's nodes, GPUs and leaf switches."""
    partitions = scontrol_records("partition")
    if not partitions:
        raise UserError("no --hosts given, and the Slurm cluster configured here has no partitions: pass --hosts")
    partition = next((p for p in partitions if p.get("Default") == "YES"), partitions[0])
    members = set(expand_hostlist(partition.get("Nodes", "")))
    nodes = [node for node in scontrol_records("node") if node.get("NodeName") in members]
    if not nodes:
        raise UserError(
            f"no --hosts given, and partition {partition['PartitionName']} of the Slurm cluster configured here "
            "has no nodes"
        )
    gpus = [gpus_in_gres(node.get("Gres", "")) for node in nodes]
    usual = max(set(gpus), key=gpus.count)
    hosts = [
        HostEntry(name=node["NodeName"], address=node.get("NodeAddr") or None, gpus=None if count == usual else count)
        for node, count in zip(nodes, gpus, strict=True)
    ]
    return Hosts(
        backend="slurm",
        slurm=SlurmSpec(partition=partition["PartitionName"]),
        hosts=hosts,
        node=NodeSpec(gpus=usual),
        topology=TopologySpec(switches=slurm_leaf_switches({h.name for h in hosts})),
    )


def slurm_leaf_switches(names: set[str]) -> list[SwitchSpec]:
    """Leaf switches (level 0: upper levels list every node below them) from `scontrol show topology`;
    none on clusters without topology/tree."""
    switches = []
    for fields in show_topology():
        nodes = [node for node in expand_hostlist(fields.get("Nodes", "")) if node in names]
        if fields.get("SwitchName") and fields.get("Level") == "0" and nodes:
            switches.append(SwitchSpec(name=fields["SwitchName"], nodes=nodes))
    return switches


def default_hosts() -> Hosts:
    """What `--hosts` means when it is left out: the Slurm cluster this machine submits to, else this machine."""
    return discover_slurm() if slurm_configured() else local_hosts()
