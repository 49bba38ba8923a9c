"""Hosts files: where a deployment may run (a Slurm partition, SSH hosts, or this machine) and their hardware."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..errors import UserError, did_you_mean
from .fields import (
    AbsolutePath,
    Address,
    ContainerMount,
    Count,
    Identifier,
    Interface,
    JumpHost,
    MountablePath,
    Port,
    PositiveCount,
    Program,
    SbatchOption,
    SlurmTime,
    SshUser,
    Text,
)
from .files import Strict, read_yaml_mapping
from .problems import describe_validation_error
from .runtimes import supported_dynamo


class NicSpec(Strict):
    name: Identifier
    port: Port = 1
    gpus: list[Count] = []  # the local GPUs this HCA is closest to
    state: Literal["active", "down"] = "active"


class NodeSpec(Strict):
    gpus: PositiveCount = 8  # a host entry may say 0 for a node without GPUs
    interface: Interface | None = None  # IP interface for control-plane traffic
    nics: list[NicSpec] = []


class HostEntry(Strict):
    name: Identifier
    address: Address | None = None
    # SSH: what is left out comes from ~/.ssh/config (for the address), then ssh's own defaults.
    user: SshUser | None = None
    port: Port | None = None
    identity_file: AbsolutePath | None = None
    jump: JumpHost | None = None  # a jump host, [user@]host[:port]
    # Per-host hardware overrides of `node:`.
    gpus: Count | None = None
    interface: Interface | None = None
    nics: list[NicSpec] | None = None


class ContainerTools(Strict):
    """The image's own programs, by name on its PATH or by absolute path in it."""

    python: Program = "python3"
    llmapi_launch: Program = "trtllm-llmapi-launch"
    ucx_perftest: Program = "ucx_perftest"


class SlurmSpec(Strict):
    partition: Identifier | None = None
    account: Identifier | None = None
    time: SlurmTime = "04:00:00"
    qos: Identifier | None = None
    reservation: Identifier | None = None
    # Where the Dynamo processes run: a Pyxis image (`srun --container-image`) or an OCI bundle folder
    # (Slurm's own `srun --container`); etcd, NATS and slurmserve's helpers stay outside. `recipe`: the image
    # the recipe names (its container_image, an imported manifest's).
    container_image: Text | None = None
    container_bundle: AbsolutePath | None = None
    container_mounts: list[ContainerMount] = []  # besides the run directory and model cache, mounted always
    container_tools: ContainerTools = ContainerTools()
    extra_sbatch: list[SbatchOption] = []  # further `#SBATCH` options, one per entry

    @model_validator(mode="after")
    def one_container(self) -> SlurmSpec:
        if self.container_image and self.container_bundle:
            raise ValueError("set container_image (Pyxis) or container_bundle (Slurm OCI), not both")
        return self


class SwitchSpec(Strict):
    name: Identifier
    nodes: list[Identifier]


class TopologySpec(Strict):
    switches: list[SwitchSpec] = []


class ControlPlaneSpec(Strict):
    """The etcd and nats-server binaries the nodes run (None: those bundled in slurmserve's venv), and the
    Prometheus server a recipe's `observability.prometheus` starts (None: `prometheus` on the nodes' PATH)."""

    etcd: AbsolutePath | None = None
    nats_server: AbsolutePath | None = None
    prometheus: AbsolutePath | None = None


class RuntimeSpec(Strict):
    """What the nodes (or the image) run, where it is not what this venv holds."""

    dynamo: Text | None = None  # None: this venv's Dynamo; its TensorRT-LLM checks the engine YAMLs

    @field_validator("dynamo")
    @classmethod
    def _supported(cls, version: str | None) -> str | None:
        try:
            return None if version is None else supported_dynamo(version)
        except ValueError as error:  # pydantic's own kind of error, to be reported without its "Value error" prefix
            raise PydanticCustomError("unsupported_dynamo", str(error)) from None


# The hosts file's one rule that depends on its backend (a schema rule, so here, below the backends and
# their traits): only `local` may leave `hosts:` out, its node being this machine.
BACKENDS_LISTING_THEIR_NODES = frozenset({"slurm", "ssh"})


class Hosts(Strict):
    backend: Literal["slurm", "ssh", "local"]
    slurm: SlurmSpec = SlurmSpec()
    hosts: list[HostEntry] = []
    node: NodeSpec = NodeSpec()
    topology: TopologySpec = TopologySpec()
    model_cache: MountablePath | None = None  # shared-filesystem root holding the Hugging Face cache
    python: AbsolutePath | None = None  # interpreter on the nodes; None = the one running slurmserve
    runtime: RuntimeSpec = RuntimeSpec()
    run_root: MountablePath | None = None  # where run directories go (on the shared filesystem for Slurm)
    control_plane: ControlPlaneSpec = ControlPlaneSpec()

    @model_validator(mode="after")
    def _consistent(self) -> Hosts:
        if self.backend in BACKENDS_LISTING_THEIR_NODES and not self.hosts:
            raise ValueError(f"backend {self.backend} needs a hosts: list naming its nodes")
        names = [host.name for host in self.hosts]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"hosts: duplicate name(s) {', '.join(duplicates)}")
        for index, switch in enumerate(self.topology.switches):
            unknown = [node for node in switch.nodes if node not in names]
            if unknown:
                raise ValueError(
                    f"topology.switches[{index}] ({switch.name}): nodes: {unknown[0]} is not among the hosts"
                    f"{did_you_mean(unknown[0], names)}" + (f" (nor {', '.join(unknown[1:])})" if unknown[1:] else "")
                )
        return self


class SshTarget(Strict):
    """How to reach a host over SSH (None fields: ~/.ssh/config and ssh's defaults decide)."""

    user: SshUser | None = None
    port: Port | None = None
    identity_file: AbsolutePath | None = None
    jump: JumpHost | None = None


@dataclass(frozen=True)
class Node:
    """One machine as the planner sees it: every override of the hosts file already applied."""

    name: str
    address: str
    gpus: int
    interface: str | None
    nics: tuple[NicSpec, ...]
    switch: str | None
    ssh: SshTarget | None  # how to reach it over SSH, as the hosts file says (for a backend that does)


def concrete_nodes(hosts: Hosts) -> list[Node]:
    switch_of = {node: switch.name for switch in hosts.topology.switches for node in switch.nodes}
    return [
        Node(
            name=host.name,
            address=host.address or host.name,
            gpus=hosts.node.gpus if host.gpus is None else host.gpus,
            interface=host.interface or hosts.node.interface,
            nics=tuple(hosts.node.nics if host.nics is None else host.nics),
            switch=switch_of.get(host.name),
            ssh=SshTarget(user=host.user, port=host.port, identity_file=host.identity_file, jump=host.jump),
        )
        for host in hosts.hosts
    ]


def check_nic_gpus(hosts: Hosts) -> None:
    """A NIC paired with a GPU the node does not have is a typo worth stopping for. Named where it is
    written: a host's own `nics:`, or the shared `node:` block (with the host whose GPUs it exceeds)."""
    for index, (host, node) in enumerate(zip(hosts.hosts, concrete_nodes(hosts), strict=True)):
        block = f"hosts[{index}] ({host.name}).nics" if host.nics is not None else "node.nics"
        for place, nic in enumerate(node.nics):
            bad = [gpu for gpu in nic.gpus if not 0 <= gpu < node.gpus]
            if bad:
                whose = "" if host.nics is not None else f" (the shared node: block), but hosts[{index}] ({host.name})"
                raise UserError(
                    f"{block}[{place}] ({nic.name}): gpus lists GPU(s) {bad}{whose or ', but the node'} "
                    f"has {node.gpus} GPUs (numbered 0 to {node.gpus - 1})"
                )


def load_hosts(path: str | Path) -> Hosts:
    source = Path(path).expanduser()
    data = read_yaml_mapping(source)
    try:
        hosts = Hosts.model_validate(data)
    except ValidationError as error:
        raise describe_validation_error(source, error, data, Hosts) from None
    check_nic_gpus(hosts)
    return hosts
