"""Plan -> scripts: an sbatch script (Slurm), a launch script (local), a driver and one launch script
per host (SSH), from the Jinja2 templates in sbatch_templates/."""

from __future__ import annotations

import functools
import re
import shlex

import jinja2

from ..planning.needs import needs_of
from ..planning.plan import Plan, Process
from ..planning.traits import BackendTraits
from ..resources import resource_dir
from ..runs.layout import FLAGS_ACCEPTED_FILE, LAUNCHER_LOG, PIDS_DIR, PREFLIGHT_DIR, elastic_job_log
from ..transport.srun import SrunStep, shell_words
from ..transport.words import ssh_words

# Variables Dynamo reads from the environment: a stray one inherited from the user's shell (say a
# NATS_SERVER nobody runs) makes every process block for minutes, so any the plan does not set is unset.
AMBIENT_DYNAMO_VARS = ("NATS_SERVER", "ETCD_ENDPOINTS", "DYN_DISCOVERY_BACKEND", "DYN_FILE_KV")
SECRET_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
TASK_START = "task-start.sh"  # the per-task start of a Slurm step, shipped beside the templates
PREFLIGHT_SCRIPT = "node-preflight.py"  # slurmserve.node.node_check, copied: an image's Python runs it too
NEEDS_FILE = "preflight.json"  # what each node needs (planning.needs), the node preflight's input
FLAGCHECK_SCRIPT = "flagcheck.py"  # slurmserve.node.flagcheck, copied: the node preflight runs it, in an image too
# What each Slurm task picks for itself (task-start.sh) instead of taking it from the command line.
PER_TASK_VARS = ("CUDA_VISIBLE_DEVICES",)
PER_RANK_VARS = ("CUDA_VISIBLE_DEVICES", "UCX_NET_DEVICES", "NCCL_IB_HCA")


def is_secret(value: str) -> bool:
    """A reference like ${HF_TOKEN}: the value is the launching shell's, at run time."""
    return SECRET_REFERENCE.match(value) is not None


def env_command(process: Process, leave_out: tuple[str, ...] = ()) -> str:
    """`env -u ... KEY=VALUE ... command...`: the process's whole environment, explicit on its command
    line; all but secrets, which reach it through the environment (`secret_assignments`), never argv."""
    unset = [f"-u {name}" for name in AMBIENT_DYNAMO_VARS if name not in process.env]
    assignments = [
        f"{key}={shlex.quote(value)}"
        for key, value in process.env.items()
        if key not in leave_out and not is_secret(value)
    ]
    return " ".join(["env", *unset, *assignments, *map(shlex.quote, process.command)])


def secret_assignments(process: Process) -> str:
    """`KEY="${NAME-}" ` for each secret of the process: assignments in front of the command that starts
    it, which bash keeps in the environment (a process's argv is readable by anyone on the node). A secret the
    launching shell does not set is empty, not an unbound-variable error of the script (`set -u`): an imported
    manifest's token Secret is a reference a public model needs no value for (huggingface_hub reads "" as none)."""
    return "".join(f'{key}="{value[:-1]}-}}" ' for key, value in process.env.items() if is_secret(value))


def comment(value: str) -> str:
    """A value inside a `#` comment: one line, whatever it holds."""
    return " ".join(str(value).split())


def remote_command(words: list[str]) -> str:
    """Words to run on another host through ssh, quoted for this shell and again for the remote one."""
    return shlex.quote(shlex.join(words))


def srun_step(plan: Plan, process: Process) -> list[str]:
    """The lines (joined with line continuations) of a process's srun step: its nodes and tasks, its
    GPUs, its MPI world, the container, its log; then task-start.sh with what each task picks for itself.
    In a container, what needs slurmserve's own Python (leftovers) runs in a host step just before."""
    quote = shlex.quote
    nodes = process.nodes
    lines = srun_words(process.name, nodes, process.tasks)
    lines.append(f"--output={quote(plan.run_dir + '/' + process.log)} --open-mode=append")
    if process.gpus:  # the job's GPUs on the node: the deployment's, or an elastic worker's own job's
        lines.insert(1, f"--gres=gpu:{len(process.gpus) if process.elastic else plan.gpus_per_node_used()}")
    if process.tasks > 1:
        lines.insert(1, f"--mpi=pmix --ntasks-per-node={process.tasks // len(nodes)}")
    if process.in_container and plan.container:
        lines.insert(-1, " ".join(map(quote, plan.container.srun_flags(plan.run_dir))))
    prepare = prepare_env(process)
    task_env = ['SLURMSERVE_RESTART="${RESTARTING:-}"']
    if process.in_container and prepare:
        on_the_nodes = [
            *srun_words(process.name, nodes, len(nodes)),
            f"--output={quote(plan.run_dir + '/' + process.log)} --open-mode=append",
            f"env {task_env[0]} {' '.join(prepare)}",
            f'bash "$RUN_DIR/{TASK_START}" --prepare &&',
        ]
        lines = on_the_nodes + lines
    else:
        task_env += prepare
    if process.gpus:
        task_env.append(f"SLURMSERVE_GPUS={','.join(map(str, process.gpus))}")
        if process.in_container and loses_task_env(plan):
            task_env.append('SLURMSERVE_GPU_GRANTS="$RUN_DIR/preflight"')
    if process.rank_env:
        task_env.append("SLURMSERVE_RANK_UCX=" + quote(";".join(env["UCX_NET_DEVICES"] for env in process.rank_env)))
        task_env.append("SLURMSERVE_RANK_HCA=" + quote(";".join(env["NCCL_IB_HCA"] for env in process.rank_env)))
    lines.append("env " + " ".join(task_env))
    lines.append(f'bash "$RUN_DIR/{TASK_START}" "$RUN_DIR/{PIDS_DIR}/{process.name}.tasks"')
    lines.append(env_command(process, PER_RANK_VARS if process.rank_env else PER_TASK_VARS))
    return lines


def loses_task_env(plan: Plan) -> bool:
    """Slurm's OCI containers get the step's environment, not the task's: no CUDA_VISIBLE_DEVICES inside.
    The node preflight saves each node's grant for the tasks to read (task-start.sh)."""
    return plan.container is not None and plan.container.kind == "oci"


def srun_words(name: str, nodes: list[str], tasks: int) -> list[str]:
    """The first line of an srun step of the job: its name, its nodes and tasks."""
    step = SrunStep(tuple(nodes), tasks=tasks, export_all=True, job_name=name)
    return [shell_words(step.words())]


def preflight_steps(plan: Plan, traits: BackendTraits) -> tuple[list[str], list[str]]:
    """The node preflight's srun steps (one task per node, all nodes at once): on the nodes, with
    slurmserve's interpreter, and (with a container) inside it, with the image's."""
    needs = needs_of(plan, traits)
    nodes = [node.name for node in plan.nodes]
    script = f'"$RUN_DIR/{PREFLIGHT_SCRIPT}"'
    # Dynamo's parsers are asked there too (in the image: its Dynamo), unless submit's check already
    # asked the same interpreter.
    flags = f'--flagcheck "$RUN_DIR/{FLAGCHECK_SCRIPT}" --accepted "$RUN_DIR/{FLAGS_ACCEPTED_FILE}"'
    inputs = f'"$RUN_DIR/{NEEDS_FILE}" {flags}'
    gpus = plan.gpus_per_node_used()
    on_nodes = [*srun_words("preflight", nodes, len(nodes)), f'--output="$RUN_DIR/{PREFLIGHT_DIR}/%N.log"']
    on_nodes[1:1] = [f"--gres=gpu:{gpus}"] if gpus else []
    save_gpus = ' --save-gpus "$RUN_DIR/preflight"' if loses_task_env(plan) and gpus else ""
    on_nodes.append(f'"$PYTHON" {script} {inputs}{save_gpus}')
    if not (needs.container and plan.container):
        return on_nodes, []
    inside = srun_words("preflight", list(needs.container), len(needs.container))
    inside += [
        " ".join(map(shlex.quote, plan.container.srun_flags(plan.run_dir))),
        f'--output="$RUN_DIR/{PREFLIGHT_DIR}/%N@container.log"',
        f"{shlex.quote(plan.container.python)} {script} {inputs} --part container",
    ]
    return on_nodes, inside


def prepare_env(process: Process) -> list[str]:
    """What a task's start leaves behind it on the node before the process runs (task-start.sh)."""
    quote = shlex.quote
    env = []
    if process.fresh_dirs:
        env.append(f"SLURMSERVE_FRESH_DIRS={quote(' '.join(process.fresh_dirs))}")
    if process.leftovers:
        env.append(f'SLURMSERVE_LEFTOVERS={quote(" ".join(process.leftovers))} SLURMSERVE_PYTHON="$PYTHON"')
    return env


@functools.cache
def template_environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(resource_dir("sbatch_templates")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["q"] = lambda value: shlex.quote(str(value))
    environment.filters["envcmd"] = env_command
    environment.filters["secrets"] = secret_assignments
    environment.filters["comment"] = comment
    environment.filters["remote"] = remote_command
    return environment


def elastic_script(process: str) -> str:
    """The Slurm batch script of an elastic worker's own job, in the run directory."""
    return f"elastic-{process}.sbatch"


def elastic_job_name(run_name: str, process: str) -> str:
    """An elastic worker's job: found by this name when its id was never recorded. The `+` no run name holds:
    no other run's job (`slurmserve-RUN`) is ever taken for it."""
    return f"slurmserve-{run_name}+{process}"


def host_script(host: str) -> str:
    """The SSH launch script of one host, in the run directory."""
    return f"launch-{host}.sh"


def render_scripts(plan: Plan, traits: BackendTraits) -> dict[str, str]:
    """Every script of the deployment, by file name: the one that starts it (`traits.launch_script`) first.
    A scheduler's job: one batch script, each process a step of the job; on this machine: one launch
    script; over SSH: a driver, and one launch script per host."""
    templates = template_environment()
    context = {"plan": plan, "launcher_log": LAUNCHER_LOG}
    if traits.has_allocation:
        steps = {process.name: srun_step(plan, process) for process in plan.processes}
        preflight, container_preflight = preflight_steps(plan, traits)
        sbatch = templates.get_template("slurm.sbatch.j2").render(
            context, steps=steps, preflight=preflight, container_preflight=container_preflight
        )
        elastic = templates.get_template("elastic_worker.sbatch.j2")
        return {traits.launch_script: sbatch} | {
            elastic_script(process.name): elastic.render(
                context,
                process=process,
                job_name=elastic_job_name(plan.run_name, process.name),
                log=elastic_job_log(process.name),
            )
            for process in plan.processes
            if process.elastic
        }
    if traits.runs_on_this_machine:
        return {traits.launch_script: templates.get_template("launch.sh.j2").render(context)}
    stages = plan.stages()
    hosts = [node.name for node in plan.nodes]
    # Each stage's processes by host, built once (hosts x processes would be slow at a thousand nodes).
    by_host: list[dict[str, list[Process]]] = [{host: [] for host in hosts} for _ in stages]
    for number, stage in enumerate(stages):
        for process in stage:
            by_host[number][process.host].append(process)
    driver_stages = [
        (number, [h for h in hosts if by_host[number - 1][h]], stage) for number, stage in enumerate(stages, 1)
    ]
    scripts = {
        traits.launch_script: templates.get_template("ssh_driver.sh.j2").render(
            context,
            stages=driver_stages,
            host_index={host: index for index, host in enumerate(hosts, 1)},
            ssh_words={node.name: ssh_words(node.address, node.ssh) for node in plan.nodes},
        )
    }
    for host in hosts:
        host_stages = [(number, [p.name for p in by_host[number - 1][host]]) for number in range(1, len(stages) + 1)]
        processes = [process for number in range(len(stages)) for process in by_host[number][host]]
        processes += [process for process in plan.processes if process.standby and process.host == host]
        scripts[host_script(host)] = templates.get_template("ssh_host.sh.j2").render(
            context, host=host, stages=host_stages, processes=processes
        )
    return scripts


def render_script(plan: Plan, traits: BackendTraits) -> str:
    """The script that starts the deployment: an sbatch script (Slurm), a launch script (local) or the
    driver (SSH)."""
    return render_scripts(plan, traits)[traits.launch_script]
