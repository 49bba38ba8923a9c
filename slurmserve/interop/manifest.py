"""A DynamoGraphDeployment file read into one shape for both API versions: its services (v1alpha1's
`spec.services` map, v1beta1's `spec.components` list), each with its main container, GPUs, env, secrets and
mounts, and the ConfigMaps of the same file. What has no meaning on Slurm or SSH hosts is collected by path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError, did_you_mean
from .schema import API_GROUP, KIND, pruned, schema_problems

SERVICE_KINDS = {"frontend": "frontend", "worker": "worker", "main": "worker", "planner": "planner"}
BETA_TYPES = {"frontend": ("frontend", None), "worker": ("worker", None), "planner": ("planner", None)} | {
    role: ("worker", role) for role in ("prefill", "decode")
}
# Keys read (or whose meaning slurmserve supplies itself: names, namespaces); every other key is listed.
ALPHA_SERVICE_KEYS = {"componentType", "subComponentType", "replicas", "resources", "envs", "envFromSecret"} | {
    "volumeMounts",
    "multinode",
    "extraPodSpec",
    "serviceName",
}
BETA_COMPONENT_KEYS = {"name", "type", "replicas", "podTemplate", "multinode"}
SPEC_KEYS = {"services", "components", "envs", "env", "backendFramework", "pvcs"}
CONTAINER_KEYS = {"name", "image", "command", "args", "env", "envFrom", "volumeMounts", "resources"}


@dataclass
class Service:
    name: str
    path: str  # where it is in the manifest: spec.services.NAME or spec.components[I]
    kind: str  # frontend | worker | planner
    role: str | None  # prefill | decode (a disaggregated worker's), None otherwise
    replicas: int = 1
    gpus: int | None = None  # the GPU limit of one pod
    gpu_path: str = ""
    node_count: int = 1
    image: str | None = None
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # names of Secrets whose keys become env
    secret_env: dict[str, str] = field(default_factory=dict)  # VAR -> Secret, from valueFrom.secretKeyRef
    config_mounts: dict[str, str] = field(default_factory=dict)  # mount path -> ConfigMap
    volume_mounts: list[str] = field(default_factory=list)  # mount paths of other volumes (model caches)


@dataclass
class Manifest:
    source: Path
    name: str
    api_version: str
    backend: str | None
    env: dict[str, str]
    services: list[Service]
    config_maps: dict[str, dict[str, str]]  # name -> key -> text
    ignored: list[str]  # paths of settings without meaning on Slurm or SSH hosts


def read_documents(path: Path) -> list[dict[str, Any]]:
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    except (OSError, ValueError, yaml.YAMLError) as error:  # ValueError: undecodable, or a number too long
        raise UserError(f"{path}: cannot be read as YAML ({' '.join(str(error).split())[:300]})") from None
    if not all(isinstance(doc, dict) for doc in documents):
        raise UserError(f"{path}: every YAML document must be a mapping (a Kubernetes object)")
    return documents


def is_dgd(document: dict[str, Any]) -> bool:
    return document.get("kind") == KIND and str(document.get("apiVersion", "")).startswith(f"{API_GROUP}/")


def looks_like_manifest(path: Path) -> bool:
    """A file of Kubernetes objects (its first document names apiVersion and kind), not a recipe."""
    try:
        first = next(iter(yaml.safe_load_all(path.read_text(encoding="utf-8"))), None)
    except (OSError, ValueError, yaml.YAMLError):  # unreadable: the recipe loader says why, in its words
        return False
    return isinstance(first, dict) and "apiVersion" in first and "kind" in first


def read_manifest(path: Path) -> Manifest:
    """The file's one DynamoGraphDeployment, checked against the CRD's schema, and its ConfigMaps."""
    documents = read_documents(path)
    graphs = [doc for doc in documents if is_dgd(doc)]
    if len(graphs) != 1:
        kinds = ", ".join(f"{doc.get('kind')} ({doc.get('apiVersion')})" for doc in documents) or "nothing"
        raise UserError(
            f"{path}: expected one {KIND} of {API_GROUP} (v1alpha1 or v1beta1), found {len(graphs)} among: {kinds}"
        )
    graph = graphs[0]
    where = f"{path}: document {documents.index(graph) + 1} ({KIND})"
    problems = schema_problems(graph)
    if problems:
        raise UserError(f"{where} does not fit the CRD's schema: " + "; ".join(problems[:5]))
    graph = pruned(graph)  # as the API server reads it: a null is no value
    config_maps = {
        str(doc["metadata"]["name"]): {str(key): str(value) for key, value in (doc.get("data") or {}).items()}
        for doc in documents
        if doc.get("kind") == "ConfigMap"
        and isinstance(doc.get("metadata"), dict)
        and "name" in doc["metadata"]
        and isinstance(doc.get("data") or {}, dict)
    }
    spec = graph.get("spec") or {}
    version = graph["apiVersion"].removeprefix(f"{API_GROUP}/")
    ignored = [f"spec.{key}" for key in sorted(spec) if key not in SPEC_KEYS]
    if version == "v1alpha1":
        services = [alpha_service(name, body, ignored) for name, body in (spec.get("services") or {}).items()]
        env = env_of(spec.get("envs") or [], "spec.envs", ignored)
    else:
        services = [beta_component(index, body, ignored) for index, body in enumerate(spec.get("components") or [])]
        env = env_of(spec.get("env") or [], "spec.env", ignored)
    return Manifest(
        path, graph["metadata"]["name"], version, spec.get("backendFramework"), env, services, config_maps, ignored
    )


def env_of(
    variables: list[dict[str, Any]], path: str, ignored: list[str], secrets: dict[str, str] | None = None
) -> dict[str, str]:
    """Kubernetes EnvVars as a mapping; a secretKeyRef becomes a reference (in `secrets`), other sources are listed."""
    env = {}
    for index, variable in enumerate(variables):
        source = variable.get("valueFrom")
        if source is None:
            env[variable["name"]] = str(variable.get("value", ""))
        elif "secretKeyRef" in source and secrets is not None:
            secrets[variable["name"]] = source["secretKeyRef"].get("name", "")
        else:
            ignored.append(f"{path}[{index}].valueFrom ({variable['name']})")
    return env


def kind_of(value: Any, path: str, known: dict[str, Any]) -> Any:
    if value not in known:
        raise UserError(
            f"{path}: unknown component type {value!r}{did_you_mean(str(value), list(known))} "
            f"(known: {', '.join(known)})"
        )
    return known[value]


def gpu_count(value: Any, path: str) -> int:
    try:
        count = int(str(value))
    except ValueError:
        raise UserError(f"{path}: {value!r} is no whole number of GPUs") from None
    if not 0 <= count <= 4096:
        raise UserError(f"{path}: {count} GPUs is out of range (0 to 4096)")
    return count


def read_container(service: Service, container: dict[str, Any], path: str, ignored: list[str]) -> None:
    service.image = container.get("image")
    service.command = [str(word) for word in container.get("command") or []]
    service.args = [str(word) for word in container.get("args") or []]
    service.env |= env_of(container.get("env") or [], f"{path}.env", ignored, service.secret_env)
    for index, source in enumerate(container.get("envFrom") or []):
        if "secretRef" in source:
            service.secrets.append(source["secretRef"]["name"])
        else:
            ignored.append(f"{path}.envFrom[{index}]")
    ignored += [f"{path}.{key}" for key in sorted(container) if key not in CONTAINER_KEYS]


def config_volumes(volumes: list[dict[str, Any]], path: str, ignored: list[str]) -> dict[str, str]:
    """Volume name -> ConfigMap name; volumes of other kinds (PVCs: model caches) map to ''."""
    found = {}
    for index, volume in enumerate(volumes):
        if "configMap" in volume:
            found[volume["name"]] = volume["configMap"].get("name", volume["name"])
        elif "persistentVolumeClaim" in volume:
            found[volume["name"]] = ""
        else:
            ignored.append(f"{path}[{index}] ({volume['name']})")
    return found


def mount(service: Service, mounts: list[dict[str, Any]], volumes: dict[str, str]) -> None:
    for entry in mounts:
        target = entry.get("mountPath") or entry.get("mountPoint") or ""
        if volumes.get(entry["name"]):
            service.config_mounts[target.rstrip("/")] = volumes[entry["name"]]
        else:
            service.volume_mounts.append(target.rstrip("/"))


def alpha_service(name: str, body: dict[str, Any], ignored: list[str]) -> Service:
    path = f"spec.services.{name}"
    kind = kind_of(body.get("componentType", "worker"), f"{path}.componentType", SERVICE_KINDS)
    service = Service(name, path, kind, body.get("subComponentType"), replicas=body.get("replicas", 1))
    ignored += [f"{path}.{key}" for key in sorted(body) if key not in ALPHA_SERVICE_KEYS]
    resources = body.get("resources") or {}
    if "gpu" in (resources.get("limits") or {}):
        service.gpus = gpu_count(resources["limits"]["gpu"], f"{path}.resources.limits.gpu")
        service.gpu_path = f"{path}.resources.limits.gpu"
    ignored += [
        f"{path}.resources.{part}.{key}"
        for part in ("limits", "requests")
        for key in sorted(resources.get(part) or {})
        if key != "gpu"
    ]
    service.node_count = (body.get("multinode") or {}).get("nodeCount", 1)
    service.env = env_of(body.get("envs") or [], f"{path}.envs", ignored, service.secret_env)
    if body.get("envFromSecret"):
        service.secrets.append(body["envFromSecret"])
    pod = body.get("extraPodSpec") or {}
    ignored += [f"{path}.extraPodSpec.{key}" for key in sorted(pod) if key not in ("mainContainer", "volumes")]
    volumes = config_volumes(pod.get("volumes") or [], f"{path}.extraPodSpec.volumes", ignored)
    container = pod.get("mainContainer") or {}
    read_container(service, container, f"{path}.extraPodSpec.mainContainer", ignored)
    mount(service, container.get("volumeMounts") or [], volumes)
    for index, entry in enumerate(body.get("volumeMounts") or []):
        if entry.get("useAsCompilationCache"):  # an engine's compile cache: each node keeps its own
            ignored.append(f"{path}.volumeMounts[{index}] ({entry['name']}, a compilation cache)")
        else:
            service.volume_mounts.append(entry.get("mountPoint", ""))
    return service


def beta_component(index: int, body: dict[str, Any], ignored: list[str]) -> Service:
    path = f"spec.components[{index}]"
    kind, role = kind_of(body.get("type", "worker"), f"{path}.type", BETA_TYPES)
    service = Service(body["name"], path, kind, role, replicas=body.get("replicas", 1))
    ignored += [f"{path}.{key}" for key in sorted(body) if key not in BETA_COMPONENT_KEYS]
    service.node_count = (body.get("multinode") or {}).get("nodeCount", 1)
    pod = (body.get("podTemplate") or {}).get("spec") or {}
    ignored += [f"{path}.podTemplate.{key}" for key in sorted(body.get("podTemplate") or {}) if key != "spec"]
    ignored += [f"{path}.podTemplate.spec.{key}" for key in sorted(pod) if key not in ("containers", "volumes")]
    containers = pod.get("containers") or []
    main = next((c for c in containers if c.get("name") == "main"), None)
    if main is None:
        raise UserError(f"{path}.podTemplate.spec.containers: no container named main (the one Dynamo runs)")
    at = f"{path}.podTemplate.spec.containers[{containers.index(main)}]"
    ignored += [
        f"{path}.podTemplate.spec.containers[{i}] ({c.get('name')})" for i, c in enumerate(containers) if c is not main
    ]
    read_container(service, main, at, ignored)
    limits = (main.get("resources") or {}).get("limits") or {}
    if "nvidia.com/gpu" in limits:
        service.gpu_path = f"{at}.resources.limits.nvidia.com/gpu"
        service.gpus = gpu_count(limits["nvidia.com/gpu"], service.gpu_path)
    resources = main.get("resources") or {}
    ignored += [
        f"{at}.resources.{part}.{key}"
        for part in sorted(resources)
        for key in sorted(resources[part] or {})
        if key != "nvidia.com/gpu"
    ]
    volumes = config_volumes(pod.get("volumes") or [], f"{path}.podTemplate.spec.volumes", ignored)
    mount(service, main.get("volumeMounts") or [], volumes)
    return service
