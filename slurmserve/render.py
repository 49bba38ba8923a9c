"""Plan -> scripts (Jinja2 templates in sbatch_templates/) and the files a run directory holds."""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path

import jinja2
import yaml

from .errors import UserError
from .plan import Plan, Process
from .resources import resource_dir

# Variables Dynamo reads from the environment: a stray one inherited from the user's shell (say a
# NATS_SERVER nobody runs) makes every process block for minutes, so any the plan does not set is unset.
AMBIENT_DYNAMO_VARS = ("NATS_SERVER", "ETCD_ENDPOINTS", "DYN_DISCOVERY_BACKEND", "DYN_FILE_KV")
SECRET_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
LAUNCHER_LOG = "logs/launcher.log"  # the launch script's (or sbatch job's) own output


def shell_word(value: str) -> str:
    """Quote for bash; a secret reference like ${HF_TOKEN} stays a reference, expanded only at run time."""
    return f'"{value}"' if SECRET_REFERENCE.match(value) else shlex.quote(value)


def env_command(process: Process, leave_out: tuple[str, ...] = ()) -> str:
    """`env -u ... KEY=VALUE ... command...`: the process's whole environment, explicit on its command line."""
    unset = [f"-u {name}" for name in AMBIENT_DYNAMO_VARS if name not in process.env]
    assignments = [f"{key}={shell_word(value)}" for key, value in process.env.items() if key not in leave_out]
    return " ".join(["env", *unset, *assignments, *map(shlex.quote, process.command)])


@functools.cache
def template_environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(resource_dir("sbatch_templates")),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["q"] = lambda value: shlex.quote(str(value))
    environment.filters["envcmd"] = env_command
    return environment


def script_name(plan: Plan) -> str:
    """The script that starts the deployment (the others it uses sit beside it)."""
    return {"slurm": "slurmserve.sbatch", "local": "launch.sh", "ssh": "driver.sh"}[plan.backend]


def host_of(process: Process) -> str:
    """Where a process starts: its first node (a worker wider than a node is one MPI world led from there)."""
    return process.nodes[0]


def render_scripts(plan: Plan) -> dict[str, str]:
    """Every script of the deployment, by file name: the one `script_name` names first."""
    templates = template_environment()
    context = {"plan": plan, "launcher_log": LAUNCHER_LOG}
    if plan.backend == "slurm":
        return {"slurmserve.sbatch": templates.get_template("slurm.sbatch.j2").render(context)}
    if plan.backend == "local":
        return {"launch.sh": templates.get_template("launch.sh.j2").render(context)}
    stages = plan.stages()
    hosts = [node.name for node in plan.nodes]
    # Each stage's processes by host, built once (hosts x processes would be slow at a thousand nodes).
    by_host = [{host: [] for host in hosts} for _ in stages]
    for number, stage in enumerate(stages):
        for process in stage:
            by_host[number][host_of(process)].append(process)
    driver_stages = [(number, [h for h in hosts if by_host[number - 1][h]], stage) for number, stage in enumerate(stages, 1)]
    scripts = {"driver.sh": templates.get_template("ssh_driver.sh.j2").render(
        context, stages=driver_stages, host_index={host: index for index, host in enumerate(hosts, 1)})}
    for host in hosts:
        host_stages = [(number, [p.name for p in by_host[number - 1][host]]) for number in range(1, len(stages) + 1)]
        processes = [process for number in range(len(stages)) for process in by_host[number][host]]
        scripts[f"launch-{host}.sh"] = templates.get_template("ssh_host.sh.j2").render(
            context, host=host, stages=host_stages, processes=processes)
    return scripts


def render_script(plan: Plan) -> str:
    """The script that starts the deployment: an sbatch script (Slurm), a launch script (local) or the
    driver (SSH)."""
    return render_scripts(plan)[script_name(plan)]


def engine_yaml(source: str, overrides: dict) -> str:
    """The recipe's engine YAML with the recipe's parallelism written over it (the plan is the truth)."""
    data = yaml.safe_load(Path(source).read_text()) or {}
    data.update(overrides)
    return f"# From {source}; parallelism set by slurmserve from the recipe.\n" + yaml.safe_dump(data, sort_keys=False)


def rendered_files(plan: Plan) -> dict[str, str]:
    """Every file of a run directory that comes from the plan: relative path -> text."""
    files = {**render_scripts(plan), "plan.json": plan.model_dump_json(indent=2) + "\n"}
    for engine_file in plan.engine_files:
        files[engine_file.path] = engine_yaml(engine_file.source, engine_file.overrides)
    return files


def write_files(files: dict[str, str], directory: Path, *, overwrite: bool = False) -> list[Path]:
    """Write the files; refuse (before writing any) if one would replace an existing file."""
    targets = {directory / name: text for name, text in files.items()}
    existing = [str(path) for path in targets if path.exists()]
    if existing and not overwrite:
        raise UserError(f"--out {directory}: would overwrite {', '.join(existing)}; choose an empty folder or pass --force")
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if path.suffix in (".sh", ".sbatch"):
            path.chmod(0o755)
    return list(targets)
