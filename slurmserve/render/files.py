"""The files of a run directory that come from the plan, and writing them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..errors import UserError
from ..observability.prometheus import job_config
from ..planning.needs import needs_of
from ..planning.plan import GLOBAL_ROUTER_CONFIG, PROMETHEUS_CONFIG, RUN_BUNDLE, Plan
from ..planning.traits import BackendTraits
from ..private import make_folder, make_out_dir, make_private_dir, write_whole
from ..resources import node_check_source, node_program_source, resource_dir
from ..runs.layout import PLAN_FILE
from .containers import run_bundle_config
from .scripts import FLAGCHECK_SCRIPT, NEEDS_FILE, PREFLIGHT_SCRIPT, TASK_START, render_scripts


def engine_yaml(source: str, overrides: dict[str, int]) -> str:
    """The recipe's engine YAML with the recipe's parallelism written over it (the plan is the truth)."""
    data = yaml.safe_load(Path(source).read_text()) or {}
    data.update(overrides)
    return f"# From {source}; parallelism set by slurmserve from the recipe.\n" + yaml.safe_dump(data, sort_keys=False)


def rendered_files(plan: Plan, traits: BackendTraits) -> dict[str, str]:
    """Every file of a run directory that comes from the plan: relative path -> text."""
    files = {**render_scripts(plan, traits), PLAN_FILE: plan.checked_json()}
    if traits.has_allocation:  # each step starts through task-start.sh, after the node preflight's step
        files[TASK_START] = (resource_dir("sbatch_templates") / TASK_START).read_text()
        files[PREFLIGHT_SCRIPT] = node_check_source()
        files[FLAGCHECK_SCRIPT] = node_program_source("flagcheck")
        files[NEEDS_FILE] = needs_of(plan, traits).model_dump_json(indent=2) + "\n"
    if plan.container and plan.container.kind == "oci":
        files[f"{RUN_BUNDLE}/config.json"] = run_bundle_config(plan.container)
    files |= head_files(plan, traits)
    for engine_file in plan.engine_files:
        files[engine_file.path] = engine_yaml(engine_file.source, engine_file.overrides)
    return files


def head_files(plan: Plan, traits: BackendTraits) -> dict[str, str]:
    """The run-directory files that processes on the head node read (over SSH, copied there too): the
    in-job Prometheus's and the global router's configurations."""
    files = {}
    if plan.prometheus_url:
        files[PROMETHEUS_CONFIG] = job_config(plan, head_reads_run_dir=traits.head_reads_run_dir)
    if plan.global_router_config is not None:
        files[GLOBAL_ROUTER_CONFIG] = json.dumps(plan.global_router_config, indent=2) + "\n"
    return files


def link_served_model(plan: Plan, directory: Path) -> Path | None:
    """The run directory's link to the model folder under the model's served name (pools: the global
    router serves the model under the path it is given)."""
    if plan.served_link is None:
        return None
    link = directory / plan.served_link
    make_private_dir(link.parent)
    link.unlink(missing_ok=True)
    link.symlink_to(plan.model_path, target_is_directory=True)
    return link


def write_files(files: dict[str, str], directory: Path, *, overwrite: bool = False, private: bool = True) -> list[Path]:
    """Write the files; refuse (before writing any) if one would replace an existing file. `directory`,
    if it exists, is left as it is (a folder the user named with --out); what this makes is 0700/0600
    if `private` (a run directory), else made as the user's new files are."""
    targets = {directory / name: text for name, text in files.items()}
    existing = [str(path) for path in targets if path.exists()]
    if existing and not overwrite:
        raise UserError(
            f"--out {directory}: would overwrite {', '.join(existing)}; choose an empty folder or pass --force"
        )
    make_out_dir(directory, private=private)
    try:
        for path, text in targets.items():
            if path.parent != directory:  # `directory` itself is left as it is
                make_folder(path.parent, private=private)
            # Scripts run as `bash SCRIPT`: no execute bit needed.
            write_whole(path, text.encode(), private=private)
    except OSError as error:
        raise UserError(f"--out {directory}: cannot write there ({error.strerror}: {error.filename})") from None
    return list(targets)
