"""Plan -> scripts: an sbatch script (Slurm), a launch script (local), a driver and one launch script
per host (SSH), from the Jinja2 templates in sbatch_templates/."""

from __future__ import annotations

import functools
import re
import shlex

import jinja2

from ..planning.plan import Plan, PlanNode, Process
from ..resources import resource_dir

# Variables Dynamo reads from the environment: a stray one inherited from the user's shell (say a
# NATS_SERVER nobody runs) makes every process block for minutes, so any the plan does not set is unset.
AMBIENT_DYNAMO_VARS = ("NATS_SERVER", "ETCD_ENDPOINTS", "DYN_DISCOVERY_BACKEND", "DYN_FILE_KV")
SECRET_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
LAUNCHER_LOG = "logs/launcher.log"  # the launch script's (or sbatch job's) own output
TASK_START = "task-start.sh"  # the per-task start of a Slurm step, shipped beside the templates
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
    """`KEY="${NAME}" ` for each secret of the process: assignments in front of the command that starts
    it, which bash keeps in the environment (a process's argv is readable by anyone on the node)."""
    return "".join(f'{key}="{value}" ' for key, value in process.env.items() if is_secret(value))


def comment(value: str) -> str:
    """A value inside a `#` comment: one line, whatever it holds."""
    return " ".join(str(value).split())


def remote_command(words: list[str]) -> str:
    """Words to run on another host through ssh, quoted for this shell and again for the remote one."""
    return shlex.quote(shlex.join(words))


def srun_step(plan: Plan, process: Process) -> list[str]:
    """The lines (joined with line continuations) of a process's srun step: its nodes and tasks, its
    GPUs, its MPI world, the container, its log; then task-start.sh with what each task picks for itself."""
    quote = shlex.quote
    nodes = process.nodes
    lines = [
        f"srun --overlap --nodes={len(nodes)} --ntasks={process.tasks} --nodelist={quote(','.join(nodes))} --export=ALL"
    ]
    if process.gpus:
        lines.append(f"--gres=gpu:{plan.gpus_per_node_used()}")
    if process.tasks > 1:
        lines.append(f"--mpi=pmix --ntasks-per-node={process.tasks // len(nodes)}")
    slurm = plan.slurm
    if slurm and slurm.container_image:
        mounts = f" --container-mounts={quote(','.join(slurm.container_mounts))}" if slurm.container_mounts else ""
        lines.append(f"--container-image={quote(slurm.container_image)}{mounts}")
    lines.append(
        f"--output={quote(plan.run_dir + '/' + process.log)} --open-mode=append --job-name={quote(process.name)}"
    )
    task_env = ['SLURMSERVE_RESTART="${RESTARTING:-}"']
    if process.gpus:
        task_env.append(f"SLURMSERVE_GPUS={','.join(map(str, process.gpus))}")
    if process.fresh_dirs:
        task_env.append(f"SLURMSERVE_FRESH_DIRS={quote(' '.join(process.fresh_dirs))}")
    if process.leftovers:
        task_env.append(f'SLURMSERVE_LEFTOVERS={quote(" ".join(process.leftovers))} SLURMSERVE_PYTHON="$PYTHON"')
    if process.rank_env:
        task_env.append("SLURMSERVE_RANK_UCX=" + quote(";".join(env["UCX_NET_DEVICES"] for env in process.rank_env)))
        task_env.append("SLURMSERVE_RANK_HCA=" + quote(";".join(env["NCCL_IB_HCA"] for env in process.rank_env)))
    lines.append("env " + " ".join(task_env))
    lines.append(f'bash "$RUN_DIR/{TASK_START}" "$RUN_DIR/pids/{process.name}.tasks"')
    lines.append(env_command(process, PER_RANK_VARS if process.rank_env else PER_TASK_VARS))
    return lines


def ssh_words(node: PlanNode) -> list[str]:
    """`ssh` with what the hosts file says of reaching the node, every word quoted."""
    target = node.ssh
    words = ["ssh", "-o", "BatchMode=yes"]
    if target and target.port:
        words += ["-p", str(target.port)]
    if target and target.identity_file:
        words += ["-i", target.identity_file]
    if target and target.jump:
        words += ["-J", target.jump]
    user = f"{target.user}@" if target and target.user else ""
    return [shlex.quote(word) for word in [*words, user + node.address]]


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


def script_name(plan: Plan) -> str:
    """The script that starts the deployment (the others it uses sit beside it)."""
    return {"slurm": "slurmserve.sbatch", "local": "launch.sh", "ssh": "driver.sh"}[plan.backend]


def host_script(host: str) -> str:
    """The SSH launch script of one host, in the run directory."""
    return f"launch-{host}.sh"


def render_scripts(plan: Plan) -> dict[str, str]:
    """Every script of the deployment, by file name: the one `script_name` names first."""
    templates = template_environment()
    context = {"plan": plan, "launcher_log": LAUNCHER_LOG}
    if plan.backend == "slurm":
        steps = {process.name: srun_step(plan, process) for process in plan.processes}
        return {"slurmserve.sbatch": templates.get_template("slurm.sbatch.j2").render(context, steps=steps)}
    if plan.backend == "local":
        return {"launch.sh": templates.get_template("launch.sh.j2").render(context)}
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
        "driver.sh": templates.get_template("ssh_driver.sh.j2").render(
            context,
            stages=driver_stages,
            host_index={host: index for index, host in enumerate(hosts, 1)},
            ssh_words={node.name: ssh_words(node) for node in plan.nodes},
        )
    }
    for host in hosts:
        host_stages = [(number, [p.name for p in by_host[number - 1][host]]) for number in range(1, len(stages) + 1)]
        processes = [process for number in range(len(stages)) for process in by_host[number][host]]
        scripts[host_script(host)] = templates.get_template("ssh_host.sh.j2").render(
            context, host=host, stages=host_stages, processes=processes
        )
    return scripts


def render_script(plan: Plan) -> str:
    """The script that starts the deployment: an sbatch script (Slurm), a launch script (local) or the
    driver (SSH)."""
    return render_scripts(plan)[script_name(plan)]
