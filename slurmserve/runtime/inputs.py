"""What a run is planned from: the recipe and hosts loaded, a staged model's revision pinned, and a port
block that no live run on the same nodes holds."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace

from ..backends import traits_for
from ..backends.preflight import busy_ports, flag_rejections
from ..config.fields import check_identifier
from ..config.hosts import Hosts, load_hosts
from ..config.recipe import Recipe, load_recipe, recipe_path
from ..config.runtimes import venv_dynamo
from ..errors import UserError
from ..hardware.discovery import default_hosts, with_local_nodes
from ..interop.files import recipe_source
from ..planning.plan import Plan
from ..planning.planner import make_plan
from ..planning.ports import PORT_BLOCKS, block_ports
from ..private import write_private
from ..resources import builtin_recipes_dir, bundled_binary
from ..runs import RunDir, live_runs, new_run_name, run_dir_for

# A port of a run's block that another program took (an ephemeral port, say) moves the run on this many blocks
# at most: a machine whose ports are all taken gets the preflight's message instead.
BUSY_BLOCK_MOVES = 4


@dataclass(frozen=True)
class Inputs:
    recipe: Recipe
    hosts: Hosts
    # A shipped recipe as shipped (no --set), run by this venv's Dynamo: every command line it plans is
    # proven against that Dynamo's parsers by tests/node/test_flagcheck.py, so planning need not ask again.
    commands_proven: bool = False
    # What importing a DynamoGraphDeployment given as the recipe left out (added to the plan's warnings).
    import_warnings: tuple[str, ...] = ()


def load_inputs(recipe: str, hosts: str | None = None, assignments: Sequence[str] = ()) -> Inputs:
    """A recipe (built-in name or file) with `--set` assignments, and a hosts file (default: the Slurm
    cluster this machine submits to, else this machine)."""
    # The hosts file first: it says which Dynamo, so which TensorRT-LLM, the recipe's engine YAMLs must suit.
    loaded = hosts_of(hosts) if hosts else default_hosts()
    source, warnings = recipe_source(recipe)
    loaded_recipe = load_recipe(source, assignments, loaded.runtime.dynamo)
    venvs = os.path.abspath(loaded.python or sys.executable) == os.path.abspath(sys.executable)
    proven = as_shipped(recipe, assignments) and venvs
    return Inputs(loaded_recipe, loaded, commands_proven=proven, import_warnings=tuple(warnings))


def as_shipped(recipe: str, assignments: Sequence[str]) -> bool:
    """A built-in recipe, without --set."""
    return not assignments and recipe_path(recipe).parent == builtin_recipes_dir()


def hosts_of(path: str) -> Hosts:
    """A hosts file; one whose backend runs on this machine may leave its node out (this machine's, then)."""
    hosts = load_hosts(path)
    return with_local_nodes(hosts) if traits_for(hosts.backend).runs_on_this_machine else hosts


def plan_for(
    inputs: Inputs,
    run_name: str | None = None,
    run_dir: str | None = None,
    avoid_live_runs: bool = False,
    kv_preflight: bool | None = None,
    check_flags: bool = True,
) -> Plan:
    """Plan a run. With `avoid_live_runs`, pick a port block no live run on the same nodes holds. With
    `check_flags`, Dynamo's parsers are asked about its command lines before it is returned (without:
    the caller asks, see `flags_asked`)."""
    name = check_identifier(run_name, "--name") if run_name else new_run_name(inputs.recipe.name)
    directory = run_dir or str(run_dir_for(name, inputs.hosts.run_root))
    python = inputs.hosts.python or sys.executable

    configured = inputs.hosts.control_plane
    # The hosts file's binaries, each of them (its Prometheus too); etcd and nats-server default to the venv's.
    binaries = configured.model_copy(
        update={
            "etcd": configured.etcd or bundled_binary("etcd", python),
            "nats_server": configured.nats_server or bundled_binary("nats-server", python),
        }
    )

    def plan_in(block: int | None) -> Plan:
        planned = make_plan(
            inputs.recipe,
            inputs.hosts,
            traits_for(inputs.hosts.backend),
            run_name=name,
            run_dir=directory,
            python=python,
            port_block=block,
            kv_preflight=kv_preflight,
            binaries=binaries,
        )
        planned.warnings += inputs.import_warnings
        return planned

    plan = plan_in(None)
    if avoid_live_runs:
        plan = in_a_free_port_block(plan, plan_in)
    if check_flags and not inputs.commands_proven:
        refuse_rejected_flags(plan)
    return plan


def in_a_free_port_block(plan: Plan, plan_in: Callable[[int], Plan]) -> Plan:
    """The plan in the first port block from its own on that no live run on the same nodes holds and, on this
    machine, where no other program listens on a port of the block (one that took a port of it for itself:
    moved past, a few blocks at most; a port the recipe fixes stays, and the preflight names its holder)."""
    ours = {node.name for node in plan.nodes}
    taken = {
        other.port_block for other in (run.plan() for run in live_runs()) if ours & {node.name for node in other.nodes}
    }
    moves_left = BUSY_BLOCK_MOVES if traits_for(plan.backend).runs_on_this_machine else 0
    for step in range(PORT_BLOCKS):
        block = (plan.port_block + step) % PORT_BLOCKS
        if block in taken:
            continue
        candidate = plan if step == 0 else plan_in(block)
        if moves_left == 0 or not held_in_block(candidate):
            return candidate
        moves_left -= 1
    raise UserError("every port block is held by a live run on these nodes; cancel some runs first")


def held_in_block(plan: Plan) -> bool:
    """Whether another program on this machine listens on a port of the plan's own block."""
    block = set(block_ports(plan.port_block))
    return any(port in block for _, _, port in busy_ports(plan, plan.nodes[0].address))


def refuse_rejected_flags(plan: Plan) -> bool:
    """Exit 2 when the Dynamo the plan runs would refuse a command line at start-up (a flag a recipe's
    `args`/`extra_args` or a `--set` adds, which nothing else checks), before any GPU hour is spent.
    False when that Dynamo could not be asked from here (the job's node preflight asks it)."""
    rejected = flag_rejections(plan)
    if rejected is None:
        return False
    if rejected:
        raise UserError(
            f"recipe {plan.recipe}: {'; '.join(rejected)} (asked with {plan.python}). Take the flag out of the "
            "recipe's frontend.extra_args or workers' args/extra_args, or fix the option in autoscale.planner (or "
            "the --set that adds it), or set "
            "python: in the hosts file to a Dynamo that takes it."
        )
    return True


def flags_asked(inputs: Inputs, plan: Plan) -> Callable[[], bool]:
    """`refuse_rejected_flags` in a thread of its own: its interpreter start (about 0.3 s) runs beside
    whatever the caller does next (submit: the backend's own preflight) instead of before it. The call
    returned waits for the answer, and raises what the check raised; True when the plan's interpreter
    accepts every command line it runs outside a container (asked, or proven by the tests)."""
    answer: Future[bool] = Future()
    if inputs.commands_proven:
        answer.set_result(True)
        return answer.result

    def ask() -> None:
        try:
            answer.set_result(refuse_rejected_flags(plan))
        except BaseException as error:  # the caller's to raise, when it waits
            answer.set_exception(error)

    threading.Thread(target=ask, daemon=True).start()
    return answer.result


def record_flags_accepted(run: RunDir, plan: Plan) -> None:
    """Which interpreter accepted the plan's command lines: the job's node preflight, run by that same
    one, skips asking again (about 0.5 s before anything starts). Not for vLLM workers: where vLLM is not
    installed here its engine flags were not asked of vLLM's own definitions, and the nodes hold it."""
    if any(process.module == "dynamo.vllm" for process in plan.processes):
        return
    dynamo = venv_dynamo() if os.path.abspath(plan.python) == os.path.abspath(sys.executable) else None
    write_private(run.paths.flags_accepted, json.dumps({"python": plan.python, "dynamo": dynamo}) + "\n")


def stages_a_model(inputs: Inputs) -> bool:
    recipe, hosts = inputs.recipe, inputs.hosts
    return recipe.loads_recipe_model and recipe.model.on_hub and hosts.model_cache is not None


def pin_model(inputs: Inputs, dry_run: bool = False) -> tuple[Inputs, str | None]:
    """Resolve a staged model's revision to its commit. One call to the hub, which also checks repo,
    revision and token (exit 2) before anything starts; workers then get the snapshot path, offline.
    The hub is asked only when it must be: a pinned snapshot the model cache already holds needs no call,
    and a dry run the hub does not answer (or HF_HUB_OFFLINE=1 keeps from asking) goes on unverified,
    with the reason as a warning (returned beside the inputs)."""
    if not stages_a_model(inputs):
        return inputs, None
    # huggingface_hub: imported only when a model is staged
    from ..modelcache.hub import HubUnreachable, resolve_revision
    from ..modelcache.staging import staged_snapshot

    model = inputs.recipe.model
    if staged_snapshot(model, inputs.hosts.model_cache or "") is not None:
        return inputs, None
    try:
        pinned = model.model_copy(update={"revision": resolve_revision(model)})
    except HubUnreachable as error:
        if not dry_run:
            raise
        revision = model.revision or "main"
        return inputs, f"model.repo {model.repo} at revision {revision} not verified ({error.reason}): submit checks it"
    return replace(inputs, recipe=inputs.recipe.model_copy(update={"model": pinned})), None
