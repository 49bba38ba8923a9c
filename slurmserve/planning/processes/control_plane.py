"""The control plane on the deployment's head node: etcd (or a file store) for discovery, NATS when a
plane needs it, and the env every Dynamo process gets to find them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, NamedTuple

from ...config.hosts import Node
from ...config.recipe import Recipe
from ...errors import UserError
from ..plan import Process, Role, node_scratch
from ..traits import BackendTraits
from .common import PlanContext, log_of

ETCD_LEASE_TTL_S = 5


def choose_discovery(recipe: Recipe, traits: BackendTraits, used_nodes: list[Node]) -> Literal["etcd", "file"]:
    """The recipe's choice, else a file store where it can work (one node, this machine's), else etcd."""
    if recipe.discovery != "auto":
        if recipe.discovery == "file" and len(used_nodes) > 1:
            raise UserError(
                "discovery: file discovery works on one host only (inotify); this deployment spans several nodes, "
                "use etcd"
            )
        return recipe.discovery
    # Dynamo's planner keeps its decisions in etcd (its virtual connector is proven there).
    one_here = traits.runs_on_this_machine and len(used_nodes) == 1 and recipe.autoscale is None
    return "file" if one_here else "etcd"


def head_service(
    ctx: PlanContext,
    role: Role,
    port_names: tuple[str, str],
    ready: tuple[str, str],
    command: Callable[[str, dict[str, int], str], list[str]],
) -> Process:
    """A control-plane server on the deployment's head node: two ports from the block, a fresh store on
    node-local disk, and a readiness URL (`ready`: which port, which path)."""
    address = ctx.head.address
    ports = {name: ctx.ports.take(ctx.head.name) for name in port_names}
    store = f"{node_scratch(ctx.run_name)}/{role}"
    return Process(
        name=role,
        role=role,
        nodes=[ctx.head.name],
        ports=ports,
        fresh_dirs=[store],
        command=command(address, ports, store),
        ready_url=f"http://{address}:{ports[ready[0]]}{ready[1]}",
        log=log_of(role),
    )


def etcd_command(binary: str, address: str, ports: dict[str, int], data_dir: str) -> list[str]:
    client, peer = f"http://{address}:{ports['client']}", f"http://{address}:{ports['peer']}"
    return [
        binary,
        "--name",
        "etcd",
        "--data-dir",
        data_dir,
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"etcd={peer}",
    ]


def nats_command(binary: str, address: str, ports: dict[str, int], store: str) -> list[str]:
    return [binary, "-js", "-a", address, "-p", str(ports["client"]), "-m", str(ports["monitor"]), "-sd", store]


class ControlPlane(NamedTuple):
    processes: list[Process]  # etcd and NATS, each only when used
    discovery_env: dict[str, str]  # how Dynamo finds the discovery store (overrides the recipe's env)
    env_defaults: dict[str, str]  # settings the recipe's env may set otherwise
    nats_env: dict[str, str]  # where NATS is, when it runs

    @property
    def names(self) -> list[str]:
        return [process.name for process in self.processes]


def control_plane(ctx: PlanContext, discovery: str) -> ControlPlane:
    """etcd (or a file store) for discovery, NATS only when a plane needs it, with the env that finds them."""
    processes = []
    if discovery == "etcd":
        etcd_of = functools.partial(etcd_command, ctx.binaries.etcd or "etcd")
        etcd = head_service(ctx, "etcd", ("client", "peer"), ("client", "/health"), etcd_of)
        processes.append(etcd)
        discovery_env = {
            "DYN_DISCOVERY_BACKEND": "etcd",
            "ETCD_ENDPOINTS": f"http://{ctx.head.address}:{etcd.ports['client']}",
        }
        # A short lease: the frontend drops a dead worker after ~4 s instead of etcd's default ~26 s.
        env_defaults = {"ETCD_LEASE_TTL": str(ETCD_LEASE_TTL_S)}
    else:
        discovery_env, env_defaults = {"DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": f"{ctx.run_dir}/discovery"}, {}
    nats_env = {}
    if ctx.recipe.needs_nats:
        nats_of = functools.partial(nats_command, ctx.binaries.nats_server or "nats-server")
        nats = head_service(ctx, "nats", ("client", "monitor"), ("monitor", "/healthz"), nats_of)
        processes.append(nats)
        nats_env = {"NATS_SERVER": f"nats://{ctx.head.address}:{nats.ports['client']}"}
    return ControlPlane(processes, discovery_env, env_defaults, nats_env)


def dynamo_env(recipe: Recipe, control: ControlPlane) -> dict[str, str]:
    """What every Dynamo process of the deployment gets: the recipe's env, then the control plane's, whose
    defaults the recipe's env may override."""
    # Logs go to files, not terminals: no colour codes in them.
    env = {"DYN_SDK_DISABLE_ANSI_LOGGING": "1", **recipe.env} | control.discovery_env
    env |= {name: value for name, value in control.env_defaults.items() if name not in env}
    return env | control.nats_env
