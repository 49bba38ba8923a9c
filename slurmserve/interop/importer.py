"""A DynamoGraphDeployment -> a recipe (a mapping, as a recipe file holds it) and its engine config files.

Each service's command line is read (an argv list, or one `/bin/sh -c` string: interop.shell); the flags
slurmserve plans itself (model, served name, engine config, disaggregation mode, parallelism, parsers, planes)
become recipe fields, the rest the workers' `args`. TP x PP must be the GPUs a pod gets (its GPU limit times its
nodes). Secrets become `${VAR}` references, never values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from ..config.fields import FLAG_NAME
from ..errors import UserError
from ..planning.processes.workers import engine_args
from ..render.scripts import is_secret
from .engines import COMMON_PLANNED, ENGINES, EngineFlags, engine_of_module
from .manifest import Manifest, Service
from .planner import BOUNDS_FILE, PLANNER_MODULE, recipe_autoscale
from .shell import read_shell_command

SNAPSHOT = re.compile(r"models--([^/]+?)--([^/]+)/snapshots/([0-9a-f]{40})")
SHELLS = ("/bin/sh", "sh", "/bin/bash", "bash")
ROUTER_MODES = ("round-robin", "random", "kv")
WORKER_ROLES = ("prefill", "decode", "agg")
DEFAULT_SECRET_VAR = "HF_TOKEN"
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)


@dataclass
class Imported:
    recipe: dict[str, Any]
    engine_files: dict[str, str] = field(default_factory=dict)  # file name -> text
    warnings: list[str] = field(default_factory=list)
    # What each service runs, for Dynamo's parsers: {process (its path), module, argv, env, field (of the recipe)}
    commands: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Command:
    module: str
    flags: dict[str, str | bool]  # --flag value, or a bare --flag (True), in order
    extra: list[str]  # words that are no flag of one value (repeated flags, positionals)
    env: dict[str, str]  # the container's env and the shell's leading assignments
    argv: list[str]  # what follows `python -m MODULE`, as written

    def asked(self, service: Service, field: str) -> dict[str, Any]:
        """The command as Dynamo's parsers are asked about it (slurmserve.node.flagcheck's input)."""
        return {"process": service.path, "module": self.module, "argv": self.argv, "env": self.env, "field": field}


def argv_of(service: Service) -> tuple[list[str], dict[str, str]]:
    """The service's argv as the container runs it, and its env (a shell line's assignments added)."""
    if service.command[:2] and service.command[0] in SHELLS and service.command[1:2] == ["-c"]:
        words = service.command[2:] + service.args  # sh -c SCRIPT [$0 $1 ...]
        if len(words) != 1:
            raise UserError(f"{service.path}: /bin/sh -c takes one command string here ({len(words)} given)")
        script = words[0]
        parsed = read_shell_command(script, service.env, f"{service.path} (the /bin/sh -c command)")
        return parsed.argv, service.env | parsed.env
    return service.command + service.args, service.env


def command_of(service: Service) -> Command | None:
    argv, env = argv_of(service)
    if not argv:
        return None  # the image's own entry point (a frontend with defaults)
    if len(argv) < 3 or "python" not in PurePosixPath(argv[0]).name or argv[1] != "-m":
        raise UserError(f"{service.path}: runs {' '.join(argv[:3])!r}; expected `python3 -m dynamo.<component> ...`")
    flags: dict[str, str | bool] = {}
    extra: list[str] = []
    words = argv[3:]
    index = 0
    while index < len(words):
        word = words[index]
        has_value = index + 1 < len(words) and not words[index + 1].startswith("--")
        name, _, inline = word.partition("=")
        if not word.startswith("--") or name in flags:
            extra.append(word)
        elif inline or "=" in word:
            flags[name] = inline
        elif has_value:
            flags[name] = words[index + 1]
            index += 1
        else:
            flags[name] = True
        index += 1
    return Command(argv[2], flags, extra, env, words)


def model_fields(value: str, service: Service, mounts: list[str]) -> dict[str, Any]:
    """A model path -> the recipe's model: a hub id, or a snapshot in a model cache (its revision kept)."""
    snapshot = SNAPSHOT.search(value)
    if snapshot:
        return {"repo": f"{snapshot[1]}/{snapshot[2]}", "revision": snapshot[3]}
    if value.startswith("/") and not any(value.startswith(root + "/") for root in mounts):
        raise UserError(f"{service.path}: model path {value} is inside the container image; it cannot be found here")
    return {"repo": value}


def config_file(
    path: str, service: Service, manifest: Manifest, option: str = "--extra-engine-args"
) -> tuple[str, str]:
    """(ConfigMap name, key) of the file that `option` names, from the folder a ConfigMap is mounted at."""
    for root, config_map in service.config_mounts.items():
        if path.startswith(root + "/"):
            key = path.removeprefix(root + "/")
            if key not in manifest.config_maps.get(config_map, {}):
                raise UserError(
                    f"{service.path}: {option} {path}: ConfigMap {config_map} (mounted at {root}) has no key {key}"
                )
            return config_map, key
    raise UserError(
        f"{service.path}: {option} {path} is in no ConfigMap this file mounts (inside the image, it "
        "cannot be read here); put the file in a ConfigMap of the same file"
    )


def parallelism(flags: dict[str, str | bool], config: dict[str, Any], names: EngineFlags, where: str) -> dict[str, int]:
    """TP, PP and EP from the flags, else the engine config, else 1."""
    found = {}
    for field_name, (flag, key) in names.parallel.items():
        value = flags.pop(flag, None) if flag else None
        value = value if value is not None else config.get(key) if key else None
        try:
            found[field_name] = int(str(value)) if value not in (None, True) else 1
        except ValueError:
            raise UserError(f"{where}: {flag or key} {value!r} is no whole number") from None
        if not 1 <= found[field_name] <= 4096:
            raise UserError(f"{where}: {flag or key} {found[field_name]} is out of range (1 to 4096)")
    return found


def check_gpus(service: Service, shape: dict[str, int], source: str) -> None:
    wanted = shape["tensor_parallel"] * shape["pipeline_parallel"]
    if service.gpus is None:
        return
    given = service.gpus * service.node_count
    if wanted != given:
        nodes = f" x multinode.nodeCount {service.node_count}" if service.node_count > 1 else ""
        raise UserError(
            f"{service.gpu_path} is {service.gpus}{nodes} = {given} GPUs, but {source} asks for "
            f"tensor_parallel {shape['tensor_parallel']} x pipeline_parallel {shape['pipeline_parallel']} = {wanted}"
        )


def worker_args(flags: dict[str, str | bool], extra: list[str]) -> dict[str, Any]:
    """The flags left: `args` (max_num_tokens: 20000) where a flag has one value, `extra_args` otherwise. A whole
    number written as one is a number (what the recipe's readers, such as KV routing's block size, compare);
    other values stay text as written ("0.90", JSON)."""
    args: dict[str, Any] = {}
    for flag, value in flags.items():
        key = flag.removeprefix("--").replace("-", "_")
        if FLAG_NAME.fullmatch(key):
            whole = isinstance(value, str) and re.fullmatch(r"-?[1-9][0-9]{0,17}|0", value)
            args[key] = int(value) if whole else value
        else:
            extra += [flag] if value is True else [flag, str(value)]
    return ({"args": args} if args else {}) | ({"extra_args": extra} if extra else {})


def frontend_fields(service: Service | None, imported: Imported) -> dict[str, Any]:
    command = command_of(service) if service else None
    if service is None or command is None:
        return {}
    imported.commands.append(command.asked(service, "frontend"))
    warnings = imported.warnings
    if command.module != "dynamo.frontend":
        raise UserError(f"{service.path}: a frontend that runs {command.module}, not dynamo.frontend")
    mode = command.flags.pop("--router-mode", "round-robin")
    if mode not in ROUTER_MODES:
        raise UserError(f"{service.path}: --router-mode {mode!r} is none of {', '.join(ROUTER_MODES)}")
    dropped = [flag for flag in ("--http-port", "--http-host", *COMMON_PLANNED) if command.flags.pop(flag, None)]
    if dropped:
        warnings.append(f"{service.path}: {', '.join(dropped)} left to the plan (its port block and addresses)")
    env = [name for name in {**command.env, **secret_env(service, {})} if name != "HF_HOME"]
    if env:
        warnings.append(f"{service.path}: env {', '.join(env)} not imported (the recipe's frontend takes no env)")
    extra = worker_args(command.flags, command.extra)
    fields: dict[str, Any] = {"router_mode": mode}
    if extra:
        fields["extra_args"] = engine_args(extra.get("args", {})) + extra.get("extra_args", [])
    return fields


def secret_env(service: Service, secret_vars: dict[str, str]) -> dict[str, str]:
    """`${VAR}` references for the service's secrets: an envFrom Secret as `secret_vars` names it (default
    HF_TOKEN), a secretKeyRef as its own variable."""
    env = {secret_vars.get(name, DEFAULT_SECRET_VAR): "" for name in service.secrets}
    env |= dict.fromkeys(service.secret_env, "")
    return {name: f"${{{name}}}" for name in env}


def worker_section(
    service: Service, manifest: Manifest, imported: Imported, secret_vars: dict[str, str]
) -> dict[str, Any]:
    """One worker service as a recipe's worker section; the model, engine and mode it names go to `imported.recipe`."""
    command = command_of(service)
    if command is None:
        raise UserError(f"{service.path}: a worker without a command (the image's default); name the engine's module")
    engine = engine_of_module(command.module, service.path)
    names, flags = ENGINES[engine], command.flags
    settle(imported.recipe, "engine", engine, service.path)
    model = next((flags.pop(flag) for flag in names.model if flag in flags), None)
    served = flags.pop(names.served_name, None)
    if isinstance(model, str):
        named = {"served_name": served} if isinstance(served, str) else {}
        settle(imported.recipe, "model", model_fields(model, service, service.volume_mounts) | named, service.path)
    role = worker_role(service, flags)
    imported.commands.append(command.asked(service, role))
    section: dict[str, Any] = {"replicas": service.replicas}
    config, source = engine_config_of(service, manifest, imported, flags, role, section)
    shape = parallelism(flags, config, names, service.path)
    if engine == "mocker" and service.gpus:  # the mock engine takes no parallelism: the shape it rehearses
        shape["tensor_parallel"] = service.gpus * service.node_count
    if names.expert_switch and flags.pop(names.expert_switch, None):
        shape["expert_parallel"] = shape["tensor_parallel"]
    check_gpus(service, shape, source)
    section |= {key: value for key, value in shape.items() if value != 1}
    recipe_wide_flags(imported.recipe, flags, engine, service.path)
    dropped = [flag for flag in names.planned if flags.pop(flag, None) is not None]
    if dropped:
        imported.warnings.append(f"{service.path}: {', '.join(dropped)} left to the plan")
    section |= worker_args(flags, command.extra) if engine != "mocker" else {}
    if engine == "mocker" and (flags or command.extra):
        imported.warnings.append(f"{service.path}: the mock engine's {', '.join(flags) or command.extra[0]} not taken")
    env = worker_env(service, command.env, imported.warnings) | secret_env(service, secret_vars)
    return {role: section | ({"env": env} if env else {})}


def worker_role(service: Service, flags: dict[str, str | bool]) -> str:
    """prefill, decode or agg: --disaggregation-mode, which must agree with subComponentType / type."""
    role = str(flags.pop("--disaggregation-mode", None) or service.role or "agg")
    if role not in WORKER_ROLES:
        raise UserError(f"{service.path}: --disaggregation-mode {role!r} is none of {', '.join(WORKER_ROLES)}")
    if service.role and role != service.role:
        raise UserError(f"{service.path}: subComponentType/type {service.role} but --disaggregation-mode {role}")
    return role


def engine_config_of(
    service: Service,
    manifest: Manifest,
    imported: Imported,
    flags: dict[str, str | bool],
    role: str,
    section: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    """The engine YAML the worker's flags name, as a file of the import (and the section's engine_config), and
    where the parallelism comes from, for messages."""
    option = ENGINES[imported.recipe["engine"]].engine_config
    path = flags.pop(option, None) if option else None
    if not isinstance(path, str):
        return {}, f"{service.path}'s flags"
    config_map, key = config_file(path, service, manifest)
    text = manifest.config_maps[config_map][key]
    where = f"ConfigMap {config_map} {key}"
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{manifest.source}: {where} is not YAML ({' '.join(str(error).split())[:200]})") from None
    if not isinstance(config, dict):
        raise UserError(f"{manifest.source}: {where} is no mapping of engine settings")
    file_name = f"{manifest.name}.{role}.yaml"
    imported.engine_files[file_name] = text
    section["engine_config"] = file_name
    return config, f"{where} (with {service.path}'s flags)"


def recipe_wide_flags(recipe: dict[str, Any], flags: dict[str, str | bool], engine: str, where: str) -> None:
    """Flags whose recipe field is the whole recipe's: the parsers, the mock engine's speed-up."""
    for flag, parser in (("--dyn-reasoning-parser", "reasoning"), ("--dyn-tool-call-parser", "tool_call")):
        if isinstance(value := flags.pop(flag, None), str):
            recipe.setdefault("parsers", {})[parser] = value
    if engine == "mocker" and isinstance(ratio := flags.pop("--speedup-ratio", None), str):
        try:
            recipe.setdefault("mocker", {})["speedup_ratio"] = float(ratio)
        except ValueError:
            raise UserError(f"{where}: --speedup-ratio {ratio!r} is no number") from None


def worker_env(service: Service, env: dict[str, str], warnings: list[str]) -> dict[str, str]:
    """The container's env as the worker's, without HF_HOME (the hosts file's model_cache) or secret values."""
    if "HF_HOME" in env:
        warnings.append(
            f"{service.path}: HF_HOME {env['HF_HOME']} (the model-cache volume) is "
            "the hosts file's model_cache on Slurm and SSH hosts"
        )
    plain = {key: value for key, value in env.items() if key != "HF_HOME"}
    return without_secret_values(plain, service.path, warnings)


def without_secret_values(env: dict[str, str], where: str, warnings: list[str]) -> dict[str, str]:
    """A token or password written into a manifest as a value becomes a `${NAME}` reference: no secret's value
    reaches a recipe, a plan or a script."""
    secret = [name for name, value in env.items() if SECRET_NAME.search(name) and not is_secret(value)]
    if secret:
        warnings.append(
            f"{where}: the values of {', '.join(secret)} are not imported; each is a ${{NAME}} reference "
            "the launching shell sets"
        )
    return env | {name: f"${{{name}}}" for name in secret}


def settle(recipe: dict[str, Any], key: str, value: Any, where: str) -> None:
    """A field every worker must agree on (the engine, the model)."""
    if recipe.setdefault(key, value) != value:
        raise UserError(f"{where}: {key} {value} differs from another worker's ({recipe[key]}); one recipe serves one")


def import_manifest(manifest: Manifest, secret_vars: dict[str, str] | None = None) -> Imported:
    """The recipe of a DynamoGraphDeployment (see the module's doc)."""
    imported = Imported({"name": manifest.name, "description": f"Imported from {manifest.source.name}"})
    frontends = [s for s in manifest.services if s.kind == "frontend"]
    workers = [s for s in manifest.services if s.kind == "worker"]
    if not workers:
        raise UserError(
            f"{manifest.source}: {'spec.services' if manifest.api_version == 'v1alpha1' else 'spec.components'}"
            ": no worker (componentType worker/main, or type worker/prefill/decode)"
        )
    sections: dict[str, Any] = {}
    for service in workers:
        section = worker_section(service, manifest, imported, secret_vars or {})
        role = next(iter(section))
        if role in sections:
            raise UserError(f"{service.path}: a second {role} worker service; a recipe has one {role} section")
        sections |= section
    engine = imported.recipe["engine"]
    if manifest.backend and engine not in (manifest.backend, "mocker"):
        raise UserError(f"{manifest.source}: spec.backendFramework is {manifest.backend}, but the workers run {engine}")
    imported.recipe["mode"] = "disagg" if set(sections) & {"prefill", "decode"} else "agg"
    imported.recipe.setdefault("model", {"repo": manifest.name})
    frontend = frontend_fields(frontends[0] if frontends else None, imported)
    if frontend:
        imported.recipe["frontend"] = frontend
    imported.recipe |= sections
    if manifest.env:
        imported.recipe["env"] = without_secret_values(manifest.env, "spec", imported.warnings)
    imported.recipe |= image_of(workers, imported.warnings)
    imported.recipe |= autoscale_of(manifest, sections, imported.warnings)
    imported.warnings += manifest_warnings(manifest)
    return imported


def autoscale_of(manifest: Manifest, sections: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """A planner service run as `python3 -m dynamo.planner --config FILE` (FILE in a ConfigMap of the file) as
    the recipe's `autoscale:`; any other planner is named in a warning, never dropped silently."""
    planners = [service for service in manifest.services if service.kind == "planner"]
    if len(planners) > 1:
        raise UserError(f"{', '.join(s.path for s in planners)}: one planner scales a graph; this file has several")
    for service in planners:
        command = command_of(service)
        path = command.flags.get("--config") if command and command.module == PLANNER_MODULE else None
        if not isinstance(path, str):
            warnings.append(
                f"{service.path}: planner not imported (slurmserve reads `python3 -m {PLANNER_MODULE} --config FILE` "
                "with FILE in a ConfigMap of this file)"
            )
            continue
        config_map, key = config_file(path, service, manifest, "--config")
        files = manifest.config_maps[config_map]
        gpus = {
            role: section.get("tensor_parallel", 1) * section.get("pipeline_parallel", 1)
            for role, section in sections.items()
        }
        where = f"{service.path}: ConfigMap {config_map} {key}"
        return {"autoscale": recipe_autoscale(files[key], files.get(BOUNDS_FILE), gpus, where)}
    return {}


def image_of(workers: list[Service], warnings: list[str]) -> dict[str, str]:
    """The workers' image as the recipe's container_image (a hosts file's `slurm.container_image: recipe` runs it)."""
    images = list(dict.fromkeys(s.image for s in workers if s.image))
    if len(images) > 1:
        warnings.append(f"the workers run several images ({', '.join(images)}); the recipe keeps the first")
    return {"container_image": images[0]} if images else {}


def manifest_warnings(manifest: Manifest) -> list[str]:
    notes = []
    if manifest.ignored:
        notes.append(f"no meaning on Slurm or SSH hosts, not imported: {', '.join(manifest.ignored)}")
    return notes
