"""Engine YAMLs checked against TensorRT-LLM's own argument schema before anything is submitted.

TensorRT-LLM reads an engine YAML into `TorchLlmArgs`, whose models forbid unknown keys: a misspelt key
fails only on the GPU node, after the allocation and the model load. The schema it checks against is data
(engine_configs/schema/tensorrt_llm-<version>.json), generated once from that TensorRT-LLM version's source
by engine_configs/schema/generate.py; TensorRT-LLM is never imported here.

Types are checked where they are simple (bool, int, float, str, a fixed set of values, lists and
mappings of those); anything the schema calls "any" is accepted as it is.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..errors import UserError, did_you_mean
from ..resources import resource_dir
from .files import read_yaml_mapping
from .runtimes import Runtime, runtime_for

SCHEMA_GLOB = "tensorrt_llm-*.json"
TypeSpec = Mapping[str, Any]  # {"kind": ...}, as generate.py's docstring describes


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: dict[str, Any]
    aliases: list[str] = []


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    extra: str = "forbid"
    fields: dict[str, FieldSpec]

    def field(self, key: str) -> FieldSpec | None:
        """A field by its name or one of its aliases (pydantic takes either here)."""
        if key in self.fields:
            return self.fields[key]
        return next((spec for spec in self.fields.values() if key in spec.aliases), None)

    def keys(self) -> list[str]:
        return sorted({*self.fields, *(alias for spec in self.fields.values() for alias in spec.aliases)})


class EngineSchema(BaseModel):
    """One TensorRT-LLM version's engine arguments, as the shipped data file holds them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tensorrt_llm_version: str
    source: str
    root: str
    models: dict[str, ModelSpec]


def schema_files() -> list[Path]:
    return sorted((resource_dir("engine_configs") / "schema").glob(SCHEMA_GLOB))


def shipped_versions() -> list[str]:
    return [path.stem.removeprefix("tensorrt_llm-") for path in schema_files()]


@functools.cache
def load_schema(version: str | None = None) -> EngineSchema:
    """The shipped schema of `version`; by default, the one this venv's Dynamo is checked against."""
    version = version or runtime_for().schema
    files = [path for path in schema_files() if path.stem == f"tensorrt_llm-{version}"]
    if not files:
        shipped = ", ".join(path.name for path in schema_files()) or "none"
        raise FileNotFoundError(f"no TensorRT-LLM schema for version {version!r} (shipped: {shipped})")
    return EngineSchema.model_validate_json(files[0].read_text(encoding="utf-8"))


def schema_for(runtime: Runtime) -> EngineSchema:
    """The schema that checks the engine YAMLs of nodes running `runtime`."""
    return load_schema(runtime.schema)


def schema_version(schema: EngineSchema | None = None) -> str:
    """The TensorRT-LLM version engine YAMLs are checked against."""
    return (schema or load_schema()).tensorrt_llm_version


def engine_config_problems(
    data: Mapping[str, Any], schema: EngineSchema | None = None, others: Sequence[EngineSchema] | None = None
) -> list[str]:
    """What TensorRT-LLM would refuse in an engine YAML's mapping, one message per problem, in file order.
    `others` (default: every other shipped schema) say in which versions a refused key does exist."""
    schema = schema or load_schema()
    if others is None:
        others = [load_schema(version) for version in shipped_versions() if version != schema.tensorrt_llm_version]
    return Checker(schema, others).mapping(data, schema.root, "")


def engine_file_problems(path: Path, schema: EngineSchema | None = None) -> list[str]:
    """`engine_config_problems` of an engine YAML, each message naming the file (a malformed one raises)."""
    return [f"{path}: {problem}" for problem in engine_config_problems(read_yaml_mapping(path), schema)]


def models_in(spec: TypeSpec) -> list[str]:
    """The models a value of this type may be (through optional, union, list and mapping)."""
    kind = spec["kind"]
    if kind == "model":
        return [spec["model"]]
    if kind == "union":
        members = spec["of"]
    elif kind in ("optional", "list"):
        members = [spec["of"]]
    elif kind == "dict":
        members = [spec["values"]]
    else:
        return []
    return [name for member in members for name in models_in(member)]


def has_field(schema: EngineSchema, model: str, parts: Sequence[str]) -> bool:
    """Whether the dotted key `parts` is a setting of `model` (through whichever nested models it may be)."""
    spec = schema.models.get(model)
    field = spec.field(parts[0]) if spec else None
    if field is None:
        return False
    return len(parts) == 1 or any(has_field(schema, inner, parts[1:]) for inner in models_in(field.type))


def places_of(schema: EngineSchema, key: str) -> list[str]:
    """Every dotted place where `key` is a setting, shallowest first (each model visited once)."""
    found: list[str] = []
    queue, seen = [(schema.root, "")], set()
    while queue:
        model, prefix = queue.pop(0)
        if model in seen or model not in schema.models:
            continue
        seen.add(model)
        spec = schema.models[model]
        if spec.field(key) is not None:
            found.append(prefix + key)
        queue += [(inner, f"{prefix}{name}.") for name, field in spec.fields.items() for inner in models_in(field.type)]
    return found


class Checker:
    def __init__(self, schema: EngineSchema, others: Sequence[EngineSchema] = ()) -> None:
        self.schema = schema
        self.others = others

    def mapping(self, data: Mapping[Any, Any], model: str, prefix: str) -> list[str]:
        spec = self.schema.models[model]
        problems = []
        for key, value in data.items():
            path = f"{prefix}{key}"
            field = spec.field(str(key))
            if field is not None:
                problems += self.value(value, field.type, path)
            elif spec.extra == "forbid":  # a model that ignores or allows extra keys takes them as they are
                problems.append(self.unknown_key(path, str(key), spec, prefix))
        return problems

    def unknown_key(self, path: str, key: str, spec: ModelSpec, prefix: str) -> str:
        version = self.schema.tensorrt_llm_version
        parts = re.sub(r"\[\d+\]", "", path).split(".")  # list items are no part of where a setting lives
        elsewhere = [place for place in places_of(self.schema, key) if place != path]
        moved = f"; now at {elsewhere[0]!r}" if elsewhere else ""
        present = [other.tensorrt_llm_version for other in self.others if has_field(other, other.root, parts)]
        if present:  # a setting of another version: say which, and where this one has it, if anywhere
            return f"{path}: not in TensorRT-LLM {version} (present in {', '.join(present)}{moved})"
        hint = did_you_mean(key, spec.keys(), prefix)
        if hint:
            return f"unknown key {path!r}{hint}"
        if elsewhere:  # the right name at the wrong level (a kv_cache_config setting at the top, say)
            return f"unknown key {path!r} (it belongs at {elsewhere[0]!r})"
        return f"unknown key {path!r} (not a TensorRT-LLM {version} setting)"

    def value(self, value: Any, spec: TypeSpec, path: str) -> list[str]:
        kind = spec["kind"]
        if kind == "optional":
            return [] if value is None else self.value(value, spec["of"], path)
        if kind == "union":
            return self.union(value, spec["of"], path)
        if kind == "model":
            if isinstance(value, dict):
                return self.mapping(value, spec["model"], f"{path}.")
        elif kind == "list":
            if isinstance(value, list):
                return [
                    problem for i, item in enumerate(value) for problem in self.value(item, spec["of"], f"{path}[{i}]")
                ]
        elif kind == "dict":
            if isinstance(value, dict):
                return [
                    problem
                    for key, item in value.items()
                    for problem in self.value(item, spec["values"], f"{path}.{key}")
                ]
        elif scalar_fits(value, spec):
            return []
        return [f"{path}: expected {describe(spec)}, got {shown(value)}{value_suggestion(value, spec)}"]

    def union(self, value: Any, members: list[TypeSpec], path: str) -> list[str]:
        if any(not self.value(value, member, path) for member in members):
            return []
        models = [member for member in members if member["kind"] == "model"]
        if isinstance(value, dict) and len(models) == 1:
            return self.value(value, models[0], path)  # the one model it can be: say what is wrong inside
        if isinstance(value, dict) and models:
            # Several models (the speculative decoding configs): TensorRT-LLM picks one by a key that is no
            # field of any of them (decoding_type), so which one applies is not for this check to guess.
            return []
        return [f"{path}: expected {' or '.join(describe(member) for member in members)}, got {shown(value)}"]


def scalar_fits(value: Any, spec: TypeSpec) -> bool:
    """YAML's own types, strictly: `true` is no integer and "true" no boolean, though pydantic may coerce."""
    kind = spec["kind"]
    if kind == "any":
        return True
    if kind == "none":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "literal":  # 1 == True in Python: compare the type too
        return any(type(choice) is type(value) and choice == value for choice in spec["values"])
    return True  # a kind this version of the checker does not know: lenient, like "any"


def describe(spec: TypeSpec) -> str:
    kind = spec["kind"]
    if kind == "literal":
        return "one of " + ", ".join(shown(choice) for choice in spec["values"])
    if kind == "optional":
        return f"{describe(spec['of'])} or null"
    names = {
        "bool": "true or false",
        "int": "an integer",
        "float": "a number",
        "str": "a string",
        "none": "null",
        "list": "a list",
        "dict": "a mapping",
        "model": "a mapping of settings",
    }
    return names.get(kind, "a value")


def shown(value: Any) -> str:
    """A value as the YAML author wrote it: 'high', true, null, 0.9."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def value_suggestion(value: Any, spec: TypeSpec) -> str:
    if spec["kind"] != "literal" or not isinstance(value, str):
        return ""
    choices = [choice for choice in spec["values"] if isinstance(choice, str)]
    same_but_case = next((choice for choice in choices if choice.lower() == value.lower()), None)
    return did_you_mean(value, choices) or (f" (did you mean {same_but_case!r}?)" if same_but_case else "")


def resolve_engine_config(value: str, field: str, runtime: Runtime, folder: Path | None = None) -> Path:
    """The engine YAML's path (relative: beside the recipe, else in engine_configs/), checked against `runtime`."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = folder / value if folder and (folder / value).is_file() else resource_dir("engine_configs") / value
    if not path.is_file():
        raise UserError(f"{field}: engine config {value!r} not found (looked for {path})")
    try:
        # A malformed engine YAML or a key TensorRT-LLM does not take fails here, not on the GPU node hours later.
        problems = engine_file_problems(path, schema_for(runtime))
    except UserError as error:
        raise UserError(f"{field}: {error}") from None
    if problems:
        raise UserError(
            f"{field}: engine config {path} does not fit the arguments of {runtime.checked_against()}: "
            + "; ".join(problem.removeprefix(f"{path}: ") for problem in problems)
        )
    return path
