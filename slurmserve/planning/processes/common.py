"""What every process of one plan shares: the plan's context, and the pieces of a Dynamo process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import NamedTuple

from ...config.hosts import ControlPlaneSpec, Node
from ...config.recipe import PoolSpec, Recipe
from ..plan import Container
from ..ports import PortAllocator
from ..traits import BackendTraits


class Tools(NamedTuple):
    """What the Dynamo processes run through: their interpreter, and TRT-LLM's MPI launcher."""

    python: str
    llmapi_launch: str


@dataclass(frozen=True)
class PlanContext:
    """What every part of one plan shares. `ports` hands out the block's ports in the order processes
    are made; `dynamo_env` is empty until the control plane is made, then make_plan makes a context with it."""

    recipe: Recipe
    traits: BackendTraits
    run_name: str
    run_dir: str
    python: str
    head: Node
    ports: PortAllocator
    binaries: ControlPlaneSpec  # etcd's and nats-server's paths (None: found on PATH)
    container: Container | None  # where the Dynamo processes run (Slurm), None: on the nodes themselves
    dynamo_env: dict[str, str] = field(default_factory=dict)  # what every Dynamo process of the deployment gets

    @property
    def dynamo_tools(self) -> Tools:
        """The interpreter and launcher of the Dynamo processes: the image's in a container."""
        if self.container:
            return Tools(self.container.python, self.container.llmapi_launch)
        return Tools(self.python, "trtllm-llmapi-launch")

    @property
    def in_container(self) -> bool:
        return self.container is not None


def log_of(name: str) -> str:
    return str(PurePosixPath("logs") / f"{name}.log")


def plane_flags(recipe: Recipe) -> list[str]:
    """Explicit, since Dynamo's defaults differ between components and discovery backends."""
    return ["--request-plane", recipe.request_plane, "--event-plane", recipe.event_plane]


def advertise_env(address: str) -> dict[str, str]:
    """Unset, Dynamo advertises the machine's resolved IP: wrong on multi-homed nodes."""
    return {
        name: address
        for name in ("DYN_TCP_RPC_HOST", "DYN_TCP_RESPONSE_STREAM_HOST", "DYN_EVENT_PLANE_HOST", "DYN_SYSTEM_HOST")
    }


def pool_env(pool: PoolSpec | None) -> dict[str, str]:
    """A pool's processes live in its Dynamo namespace."""
    return pool.env | {"DYN_NAMESPACE": pool.dynamo_namespace} if pool else {}


class SystemPorts(NamedTuple):
    ports: dict[str, int]  # the process's `system` (status) and `rpc` (request plane) ports, and a worker's own
    env: dict[str, str]  # the env that fixes them


def system_ports(ctx: PlanContext, node: Node) -> SystemPorts:
    """A Dynamo process's status and request-plane ports on its node, and the env that fixes them. Both
    fixed: an ephemeral request-plane port could land in another deployment's block."""
    system, rpc = ctx.ports.take(node.name), ctx.ports.take(node.name)
    return SystemPorts({"system": system, "rpc": rpc}, {"DYN_SYSTEM_PORT": str(system), "DYN_TCP_RPC_PORT": str(rpc)})
