"""A recipe -> a DynamoGraphDeployment (v1alpha1 or v1beta1) and the ConfigMap of its engine configs.

What the workers run is written as Dynamo's recipes write it: an argv list (`python3 -m dynamo.trtllm` and its
flags), engine YAMLs from a ConfigMap mounted at /opt/dynamo/configs, the model from a `model-cache` volume,
the Hugging Face token from the `hf-token-secret` Secret; `autoscale:` as Dynamo's planner service
(interop.planner). What a DGD cannot say (pools, and the settings only
slurmserve reads: bench, restart, observability) is refused or named in the warnings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..config.recipe import Recipe, WorkerGroup, WorkerSpec
from ..errors import UserError
from ..planning.processes.model import pinned
from ..planning.processes.scaling import role_scales
from ..planning.processes.workers import engine_args
from ..render.scripts import is_secret
from .engines import ENGINES, EngineFlags
from .importer import DEFAULT_SECRET_VAR
from .planner import PLANNER_FILE, PLANNER_MODULE, exported_planner
from .schema import API_GROUP, KIND, schema_problems

CONFIG_DIR = "/opt/dynamo/configs"
MODEL_CACHE = "/opt/models"
MODEL_CACHE_PVC = "model-cache"
HF_SECRET = "hf-token-secret"
ONLY_SLURMSERVE = ("bench", "restart", "observability", "discovery", "mocker.model_path", "mocker.replay_trace")


@dataclass
class Exported:
    documents: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        return "---\n".join(yaml.dump(d, Dumper=BlockDumper, sort_keys=False, width=1000) for d in self.documents)


class BlockDumper(yaml.SafeDumper):
    """Engine YAMLs in the ConfigMap as `|` blocks, as Dynamo's recipes write them."""


def block_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


BlockDumper.add_representer(str, block_text)


@dataclass
class Container:
    """A service's main container and what surrounds it, in neither API version's shape yet."""

    args: list[str]
    env: dict[str, str]
    secrets: list[str]  # Secrets whose keys become env (envFrom)
    secret_keys: dict[str, str]  # VAR -> Secret (secretKeyRef, key VAR)
    gpus: int = 0
    nodes: int = 1
    replicas: int = 1
    role: str | None = None  # prefill | decode
    config: bool = False  # mounts the engine-config ConfigMap
    model_cache: bool = False  # mounts the model-cache volume


def dns_name(name: str) -> str:
    return re.sub(r"[^a-z0-9.-]", "-", name.lower()).strip("-.") or "deployment"


def model_argument(recipe: Recipe) -> tuple[str, bool]:
    """(--model-path, whether it is in the model-cache volume): a pinned hub model as its snapshot there."""
    model = recipe.model
    if model.on_hub and pinned(model.revision):
        folder = "models--" + model.repo.replace("/", "--")
        return f"{MODEL_CACHE}/hub/{folder}/snapshots/{model.revision}", True
    return model.repo, False


def split_env(env: dict[str, str]) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """(plain env, envFrom Secrets, secretKeyRef VAR -> Secret): `${HF_TOKEN}` is the hf-token-secret Secret."""
    plain, secrets, keys = {}, [], {}
    for name, value in env.items():
        if not is_secret(value):
            plain[name] = value
        elif value[2:-1] == DEFAULT_SECRET_VAR:
            secrets.append(HF_SECRET)
        else:
            keys[name] = dns_name(value[2:-1]) + "-secret"
    return plain, secrets, keys


def engine_config_text(group: WorkerGroup) -> str:
    """The worker's engine YAML with the recipe's parallelism written over it, as the plan writes it."""
    source = group.spec.engine_config or ""
    with open(source, encoding="utf-8") as file:
        data = yaml.safe_load(file) or {}
    names = ENGINES["trtllm"].parallel
    data.update({key: getattr(group.spec, field_name) for field_name, (_, key) in names.items() if key})
    return yaml.safe_dump(data, sort_keys=False)


def parallel_args(names: EngineFlags, spec: WorkerSpec, in_engine_config: bool) -> list[str]:
    """TP/PP/EP as flags where the engine takes them as flags and no engine config of the worker holds them."""
    args = []
    for field_name, (flag, key) in names.parallel.items():
        value = getattr(spec, field_name)
        if flag and value != 1 and not (key and in_engine_config):
            args += [flag, str(value)]
    if names.expert_switch and spec.expert_parallel > 1:
        args.append(names.expert_switch)
    return args


def worker_container(recipe: Recipe, group: WorkerGroup, gpus_per_node: int) -> Container:
    names = ENGINES[recipe.engine]
    spec = group.spec
    model, in_cache = model_argument(recipe)
    args = [names.model[0], model, names.served_name, recipe.model.name]
    if names.engine_config and spec.engine_config:
        args += [names.engine_config, f"{CONFIG_DIR}/{group.name}.yaml"]
    args += parallel_args(names, spec, bool(names.engine_config and spec.engine_config))
    if group.role != "agg":
        args += ["--disaggregation-mode", group.role, *names.disagg_args]
    if recipe.engine == "mocker":
        args += ["--speedup-ratio", f"{recipe.mocker_of(group.pool).speedup_ratio:g}"]
    else:
        parsers = (
            ("--dyn-reasoning-parser", recipe.parsers.reasoning),
            ("--dyn-tool-call-parser", recipe.parsers.tool_call),
        )
        args += [word for flag, value in parsers if value for word in (flag, value)]
        args += engine_args(spec.args) + spec.extra_args
    plain, secrets, keys = split_env(spec.env)
    if in_cache:
        plain["HF_HOME"] = MODEL_CACHE
    nodes = math.ceil(spec.gpus / gpus_per_node) if spec.gpus > gpus_per_node else 1
    if spec.gpus % nodes:
        raise UserError(f"{group.field}: {spec.gpus} GPUs cannot be split evenly over {nodes} nodes of {gpus_per_node}")
    return Container(
        args,
        plain,
        secrets,
        keys,
        gpus=spec.gpus // nodes,
        nodes=nodes,
        replicas=role_scales(recipe)[group.role].min,  # an autoscaled role starts with its min
        role=None if group.role == "agg" else group.role,
        config=bool(spec.engine_config and names.engine_config),
        model_cache=in_cache,
    )


def planner_container() -> Container:
    return Container(["--config", f"{CONFIG_DIR}/{PLANNER_FILE}"], {}, [], {}, config=True)


def frontend_container(recipe: Recipe) -> Container:
    return Container(["--router-mode", recipe.frontend.router_mode, *recipe.frontend.extra_args], {}, [], {})


def refuse_without_dgd_form(recipe: Recipe) -> None:
    if recipe.pools or recipe.global_router:
        raise UserError(
            f"recipe {recipe.name}: pools behind a global router have no DynamoGraphDeployment form "
            "(one DGD is one pool); export each pool's recipe on its own"
        )
    if recipe.lifetime is not None:
        raise UserError(
            f"recipe {recipe.name}: lifetime (a chain of Slurm jobs) has no DynamoGraphDeployment form: Kubernetes "
            "keeps a deployment running without one; export the recipe without its lifetime section"
        )


def not_exported(recipe: Recipe) -> list[str]:
    fields = [key for key in ONLY_SLURMSERVE if "." not in key and key in recipe.model_fields_set]
    fields += [
        key for key in ONLY_SLURMSERVE if key.startswith("mocker.") and key[7:] in recipe.mocker.model_fields_set
    ]
    fields += [f"model.{key}" for key in ("allow", "ignore") if getattr(recipe.model, key)]
    return [f"no DynamoGraphDeployment form, not exported: {', '.join(fields)}"] if fields else []


def env_list(env: dict[str, str], keys: dict[str, str]) -> list[dict[str, Any]]:
    plain = [{"name": name, "value": value} for name, value in env.items()]
    return plain + [{"name": n, "valueFrom": {"secretKeyRef": {"name": s, "key": n}}} for n, s in keys.items()]


def alpha_service(
    kind: str, container: Container, command: list[str], config_map: str, image: str | None
) -> dict[str, Any]:
    main: dict[str, Any] = {"command": command, "args": container.args} | ({"image": image} if image else {})
    if container.env or container.secret_keys:
        main["env"] = env_list(container.env, container.secret_keys)
    service: dict[str, Any] = {"componentType": kind, "replicas": container.replicas}
    if container.role:
        service["subComponentType"] = container.role
    if container.secrets:
        service["envFromSecret"] = container.secrets[0]
    if container.gpus:
        service["resources"] = {"limits": {"gpu": str(container.gpus)}, "requests": {"gpu": str(container.gpus)}}
    if container.nodes > 1:
        service["multinode"] = {"nodeCount": container.nodes}
    if container.model_cache:
        service["volumeMounts"] = [{"name": MODEL_CACHE_PVC, "mountPoint": MODEL_CACHE}]
    pod: dict[str, Any] = {"mainContainer": main}
    if container.config:
        main["volumeMounts"] = [{"name": "engine-configs", "mountPath": CONFIG_DIR, "readOnly": True}]
        pod["volumes"] = [{"name": "engine-configs", "configMap": {"name": config_map}}]
    return service | {"extraPodSpec": pod}


def beta_component(
    name: str, kind: str, container: Container, command: list[str], config_map: str, image: str | None
) -> dict[str, Any]:
    main: dict[str, Any] = {"name": "main", "command": command, "args": container.args} | (
        {"image": image} if image else {}
    )
    if container.env or container.secret_keys:
        main["env"] = env_list(container.env, container.secret_keys)
    if container.secrets:
        main["envFrom"] = [{"secretRef": {"name": secret}} for secret in container.secrets]
    if container.gpus:
        main["resources"] = {"limits": {"nvidia.com/gpu": str(container.gpus)}}
    volumes, mounts = [], []
    if container.config:
        volumes.append({"name": "engine-configs", "configMap": {"name": config_map}})
        mounts.append({"name": "engine-configs", "mountPath": CONFIG_DIR, "readOnly": True})
    if container.model_cache:
        volumes.append({"name": MODEL_CACHE_PVC, "persistentVolumeClaim": {"claimName": MODEL_CACHE_PVC}})
        mounts.append({"name": MODEL_CACHE_PVC, "mountPath": MODEL_CACHE})
    if mounts:
        main["volumeMounts"] = mounts
    pod: dict[str, Any] = {"containers": [main]} | ({"volumes": volumes} if volumes else {})
    component = {
        "name": name,
        "type": container.role or kind,
        "replicas": container.replicas,
        "podTemplate": {"spec": pod},
    }
    return component | ({"multinode": {"nodeCount": container.nodes}} if container.nodes > 1 else {})


def export_recipe(recipe: Recipe, api: str = "v1alpha1", image: str | None = None, gpus_per_node: int = 8) -> Exported:
    """The recipe as a DynamoGraphDeployment of `api` and, when its workers have engine configs, their ConfigMap."""
    refuse_without_dgd_form(recipe)
    image = image or recipe.container_image
    name = dns_name(recipe.name)
    config_map = f"{name}-engine-configs"
    module = ENGINES[recipe.engine].module
    services = [("frontend", "frontend", frontend_container(recipe), ["python3", "-m", "dynamo.frontend"])]
    services += [
        (g.name, "worker", worker_container(recipe, g, gpus_per_node), ["python3", "-m", module])
        for g in recipe.worker_groups()
    ]
    configs = {
        f"{g.name}.yaml": engine_config_text(g)
        for g in recipe.worker_groups()
        if g.spec.engine_config and ENGINES[recipe.engine].engine_config
    }
    if recipe.autoscale is not None:
        services.append(("planner", "planner", planner_container(), ["python3", "-m", PLANNER_MODULE]))
        configs |= exported_planner(recipe)
    spec: dict[str, Any] = {"backendFramework": recipe.engine} if recipe.engine != "mocker" else {}
    if api == "v1alpha1":
        spec["services"] = {n: alpha_service(k, c, cmd, config_map, image) for n, k, c, cmd in services}
        if any(c.model_cache for _, _, c, _ in services):
            spec["pvcs"] = [{"name": MODEL_CACHE_PVC, "create": False}]
        if recipe.env:
            spec["envs"] = env_list(*split_env(recipe.env)[::2])
    else:
        spec["components"] = [beta_component(n, k, c, cmd, config_map, image) for n, k, c, cmd in services]
        if recipe.env:
            spec["env"] = env_list(*split_env(recipe.env)[::2])
    graph = {"apiVersion": f"{API_GROUP}/{api}", "kind": KIND, "metadata": {"name": name}, "spec": spec}
    problems = schema_problems(graph)
    if problems:  # a bug of ours, not the user's: say so plainly
        raise AssertionError(f"exported {KIND} does not fit the CRD's schema: {'; '.join(problems)}")
    documents = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": config_map}, "data": configs}]
    return Exported((documents if configs else []) + [graph], not_exported(recipe))
