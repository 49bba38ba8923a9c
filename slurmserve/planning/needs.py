"""What each node of a plan needs before anything starts there: the node preflight's input.

A pure function of the plan. The node preflight (`slurmserve.node.node_check`, standard library only)
checks it on each node, in parallel: in a step of the Slurm job, over SSH, or here for the local
backend. With a container, what its processes need is checked inside it, with the image's interpreter.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .plan import Plan
from .traits import BackendTraits

# What an engine's Dynamo module imports that Dynamo's wheel does not bring: a node without it fails
# minutes later, at the import, so the preflight looks for it (cheaply: no import of the engine). vLLM's
# workers hand KV over through NIXL (Dynamo's `vllm` extra pins it beside vLLM).
ENGINE_PACKAGES = {"dynamo.trtllm": ["tensorrt_llm"], "dynamo.vllm": ["vllm", "nixl"], "dynamo.sglang": ["sglang"]}
HELPERS = "slurmserve"  # slurmserve's own programs on the nodes (readiness, supervisor, leftovers)


class NodeNeeds(BaseModel):
    """What must hold on one node, either on the node itself or inside the plan's container there."""

    node: str
    address: str  # where the node's processes listen
    place: str = ""  # "" on the node itself, "in the container" inside it
    python: str  # the interpreter the check runs under: it must import `modules`
    modules: dict[str, list[str]] = {}  # a module the processes run -> the packages it needs besides
    programs: dict[str, str] = {}  # a program (name on PATH or absolute path) -> what it is for
    paths: dict[str, str] = {}  # a path that must exist -> what it is
    writable: dict[str, str] = {}  # a folder the processes write to -> what it is
    ports: dict[str, int] = {}  # "process port-name" -> a port that must be free on `address`
    gpus: int = 0  # GPUs that must be visible (a real engine); 0: not checked
    # The Dynamo command lines that start here, as Dynamo's own parsers are asked about them
    # (slurmserve.node.flagcheck): the Dynamo of this node or image must accept every flag.
    commands: list[dict[str, Any]] = []

    def is_empty(self) -> bool:
        return not (
            self.modules or self.programs or self.paths or self.writable or self.ports or self.gpus or self.commands
        )


class Needs(BaseModel):
    """Per node: what the node itself must have, and what the container must have there (if any)."""

    nodes: dict[str, NodeNeeds]
    container: dict[str, NodeNeeds] = {}


def model_paths(plan: Plan) -> dict[str, str]:
    """What the workers read from the shared filesystem: the model cache a staged model goes to, or the
    model folder they load."""
    if plan.model_stage:
        return {plan.model_stage.cache: "model cache"}
    return {plan.model_path: "model folder"} if plan.model_path.startswith("/") else {}


def needs_of(plan: Plan, traits: BackendTraits) -> Needs:
    """Every node's needs: on the node, and in the container when the plan has one."""
    container = plan.container
    needs = Needs(nodes={node.name: _node_needs(plan, traits, node.name, in_container=False) for node in plan.nodes})
    if container is not None:
        needs.container = {
            node.name: found
            for node in plan.nodes
            if not (found := _node_needs(plan, traits, node.name, in_container=True)).is_empty()
        }
    return needs


def _node_needs(plan: Plan, traits: BackendTraits, node: str, *, in_container: bool) -> NodeNeeds:
    on_node = [p for p in plan.processes if node in p.nodes]
    here = [p for p in on_node if p.in_container == in_container]
    python = plan.container.python if in_container and plan.container else plan.python
    modules = {p.module: ENGINE_PACKAGES.get(p.module, []) for p in here if p.module}
    if not in_container and not traits.runs_on_this_machine:  # this machine has them: it runs them
        modules[HELPERS] = []
    workers = [p for p in here if p.is_worker]
    programs = {p.command[0]: f"run by {p.name}" for p in here if p.command[0] != python}
    kv_workers = [p for p in on_node if p.role in ("prefill", "decode")]
    # The KV-path check runs ucx_perftest where the workers run: in the container when they do.
    if plan.kv_preflight and kv_workers and kv_workers[0].in_container == in_container:
        perftest = plan.container.ucx_perftest if in_container and plan.container else "ucx_perftest"
        programs[perftest] = "for the KV-path preflight"
    return NodeNeeds(
        node=node,
        address=plan.node(node).address,
        place="in the container" if in_container else "",
        python=python,
        modules=modules,
        programs=programs,
        paths=model_paths(plan) if workers else {},
        writable={plan.run_dir: "run directory"} if here or not in_container else {},
        # Checked once, on the node: a container shares its network (and two checks at once would each
        # find the port the other is trying).
        ports={}
        if in_container
        else {f"{p.name} {label}": port for p in on_node if p.host == node for label, port in p.ports.items()},
        # GPUs are checked on the node (nvidia-smi lists what the container would get).
        gpus=0 if in_container or plan.engine == "mocker" else sum(len(p.gpus) for p in on_node),
        # Asked in the job's own preflight: before submit only this machine's interpreter can be asked, and
        # never an image's.
        commands=[asked for p in here if p.host == node and (asked := p.parser_input())]
        if traits.has_allocation
        else [],
    )
