"""Generate tensorrt_llm-<version>.json: the settings TensorRT-LLM's LLM API takes from an engine YAML.

TensorRT-LLM reads an "extra engine args" YAML into `TorchLlmArgs` (pydantic models that forbid unknown
keys), so a misspelt key only fails on the GPU node, minutes into a job. This script reads those model
classes from TensorRT-LLM's source with `ast` (TensorRT-LLM itself needs CUDA and is never imported) and
writes the field names, aliases and a small normalized type of each, for slurmserve to check engine YAMLs
before submitting.

The source comes either from a git directory (`--git-dir DIR --tag v1.1.0rc5`) or from files named on the
command line. A file may also be the published documentation's source view of a module
(`<version>/_modules/tensorrt_llm/llmapi/llm_args.html`): its Python is taken out of the HTML.

The schema of the TensorRT-LLM that Dynamo 1.6.1 pins, where GitHub is reachable (then name that version
in slurmserve/config/runtimes.py, RUNTIMES["1.6.1"].schema):
    git clone -q --bare --depth 1 --filter=blob:none --branch v1.3.0rc29 \
        https://github.com/NVIDIA/TensorRT-LLM trtllm.git
    python engine_configs/schema/generate.py --git-dir trtllm.git --tag v1.3.0rc29

Standard library only. Type descriptions written, as {"kind": ...}:
  any | bool | int | float | str | none
  literal  {"values": [...]}          Literal[...] and enum values
  optional {"of": T}                  Optional[T], Union[T, None]
  union    {"of": [T, ...]}
  list     {"of": T}                  List/Set/Tuple/Sequence
  dict     {"values": T}              Dict/Mapping
  model    {"model": "ClassName"}     a pydantic model, described in "models"
Anything not simple enough to check (other classes, callables, forward references to unknown names)
is "any", so that the checker stays lenient where the schema cannot say.
"""

from __future__ import annotations

import argparse
import ast
import html
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPOSITORY = "NVIDIA/TensorRT-LLM"
# llm_args.py holds the models; since 1.2 their strict base class (StrictBaseModel, extra="forbid") is
# imported from llmapi/utils.py, and without it every model would read as taking unknown keys.
DEFAULT_PATHS = ("tensorrt_llm/llmapi/llm_args.py", "tensorrt_llm/llmapi/utils.py")
DEFAULT_ROOT = "TorchLlmArgs"
GENERATED_BY = "engine_configs/schema/generate.py"

Type = dict[str, Any]
ANY: Type = {"kind": "any"}
NONE: Type = {"kind": "none"}
SCALARS = {
    "bool": "bool",
    "StrictBool": "bool",
    "int": "int",
    "StrictInt": "int",
    "PositiveInt": "int",
    "NonNegativeInt": "int",
    "float": "float",
    "StrictFloat": "float",
    "PositiveFloat": "float",
    "NonNegativeFloat": "float",
    "str": "str",
    "StrictStr": "str",
    "Path": "str",  # pydantic takes a path as a string
}
LISTS = {"List", "list", "Set", "set", "FrozenSet", "frozenset", "Tuple", "tuple", "Sequence"}
DICTS = {"Dict", "dict", "Mapping", "MutableMapping"}
ENUM_BASES = {"Enum", "StrEnum", "IntEnum"}
MODEL_BASES = {"BaseModel"}


def name_of(node: ast.expr) -> str | None:
    """`X` or `module.X` as "X"; anything else (a call, a subscript) has no name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def assigned_type(node: ast.stmt) -> tuple[str, ast.expr] | None:
    """`X: TypeAlias = ...`, `X = Union[...]`, `X = A | B` and `LlmArgs = TorchLlmArgs` name a type."""
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return (node.target.id, node.value) if name_of(node.annotation) == "TypeAlias" else None
    if not isinstance(node, ast.Assign) or len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
        return None
    return (node.targets[0].id, node.value) if isinstance(node.value, ast.Subscript | ast.BinOp | ast.Name) else None


def python_from_viewcode(page: str) -> str:
    """The module source in a Sphinx `_modules/...html` page: the highlighted block, less markup."""
    found = re.search(r'<div class="highlight"><pre>(.*?)</pre></div>', page, re.S)
    if found is None:
        raise SystemExit("an HTML source holds no highlighted code block (is it a Sphinx _modules page?)")
    code = re.sub(r'<a class="viewcode-back"[^>]*>\[docs\]</a>', "", found.group(1))
    return html.unescape(re.sub(r"<[^>]+>", "", code))


@dataclass
class Module:
    """What the source files define: classes by name and module-level type aliases."""

    classes: dict[str, ast.ClassDef]
    aliases: dict[str, ast.expr]

    @classmethod
    def parse(cls, texts: Iterable[str]) -> Module:
        module = cls({}, {})
        for text in texts:
            for node in ast.parse(text).body:
                if isinstance(node, ast.ClassDef):
                    module.classes.setdefault(node.name, node)
                elif alias := assigned_type(node):
                    module.aliases.setdefault(*alias)
        return module

    def bases(self, name: str) -> list[str]:
        return [base for base in map(name_of, self.classes[name].bases) if base]

    def inherits(self, name: str, roots: set[str], seen: frozenset[str] = frozenset()) -> bool:
        if name in seen or name not in self.classes:
            return False
        return any(
            base in roots or self.inherits(base, roots, seen | {name}) for base in self.bases(name) if base != name
        )

    def is_model(self, name: str) -> bool:
        return name in self.classes and self.inherits(name, MODEL_BASES)

    def enum_values(self, name: str) -> list[Any] | None:
        """An enum's member values, or None when one is not a plain constant (auto(), a call)."""
        if name not in self.classes or not self.inherits(name, ENUM_BASES):
            return None
        values = []
        for node in self.classes[name].body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id.startswith("_"):
                    continue
                if not isinstance(node.value, ast.Constant):
                    return None
                values.append(node.value.value)
        return values


class Normalizer:
    """Annotation AST to the type description above."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.expanding: set[str] = set()  # aliases being expanded, against a self-referencing alias

    def type_of(self, node: ast.expr) -> Type:
        if isinstance(node, ast.Constant):
            if node.value is None:
                return NONE
            if isinstance(node.value, str):  # a forward reference: "KvCacheConfig"
                try:
                    return self.type_of(ast.parse(node.value, mode="eval").body)
                except SyntaxError:
                    return ANY
            return ANY
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return union([self.type_of(node.left), self.type_of(node.right)])
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        name = name_of(node)
        return self.named(name) if name else ANY

    def named(self, name: str) -> Type:
        if name in SCALARS:
            return {"kind": SCALARS[name]}
        if name == "None":
            return NONE
        if self.module.is_model(name):  # a class of that name wins over an alias of that name
            return {"kind": "model", "model": name}
        values = self.module.enum_values(name)
        if values is not None:
            return {"kind": "literal", "values": values}
        if name in self.module.aliases and name not in self.expanding:
            self.expanding.add(name)
            try:
                return self.type_of(self.module.aliases[name])
            finally:
                self.expanding.discard(name)
        if name in LISTS:
            return {"kind": "list", "of": ANY}
        if name in DICTS:
            return {"kind": "dict", "values": ANY}
        return ANY  # Any, object, a class pydantic takes as it is (a tokenizer, a dataclass)

    def subscript(self, node: ast.Subscript) -> Type:
        head = name_of(node.value)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head == "Optional":
            return union([self.type_of(args[0]), NONE])
        if head == "Union":
            return union([self.type_of(arg) for arg in args])
        if head == "Literal":
            return self.literal(args)
        if head == "Annotated":
            return self.type_of(args[0])
        if head in LISTS:
            if head in ("Tuple", "tuple") and not (len(args) == 2 and is_ellipsis(args[1])):
                return {"kind": "list", "of": union([self.type_of(arg) for arg in args if not is_ellipsis(arg)])}
            return {"kind": "list", "of": self.type_of(args[0])}
        if head in DICTS and len(args) == 2:
            return {"kind": "dict", "values": self.type_of(args[1])}
        return ANY

    def literal(self, args: list[ast.expr]) -> Type:
        values: list[Any] = []
        for arg in args:
            if isinstance(arg, ast.Constant):
                values.append(arg.value)
            elif isinstance(arg, ast.Subscript) and name_of(arg.value) == "Literal":
                values.extend(self.literal([arg.slice]).get("values", []))
            else:
                return ANY  # Literal[SomeEnum.MEMBER]: not worth resolving
        return {"kind": "literal", "values": values}


def is_ellipsis(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is Ellipsis


def union(members: list[Type]) -> Type:
    """Flattened and deduplicated; any member that takes anything makes the whole take anything."""
    flat: list[Type] = []
    for member in members:
        flat.extend(member["of"] if member["kind"] == "union" else [member])
    optional = any(member["kind"] in ("none", "optional") for member in flat)
    flat = [member["of"] if member["kind"] == "optional" else member for member in flat]
    flat = [member for member in flat if member["kind"] != "none"]
    if any(member["kind"] == "any" for member in flat):
        return ANY
    unique: list[Type] = []
    for member in flat:
        if member not in unique:
            unique.append(member)
    inner = unique[0] if len(unique) == 1 else {"kind": "union", "of": unique} if unique else NONE
    return {"kind": "optional", "of": inner} if optional and unique else inner


def field_call(value: ast.expr | None) -> ast.Call | None:
    """The `Field(...)` / `PydanticField(...)` call that declares a field, if any."""
    if isinstance(value, ast.Call) and name_of(value.func) in ("Field", "PydanticField"):
        return value
    return None


def keyword(call: ast.Call | None, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None) if call else None


def aliases_of(call: ast.Call | None) -> list[str]:
    found = []
    for key in ("alias", "validation_alias"):
        node = keyword(call, key)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append(node.value)
        elif isinstance(node, ast.Call) and name_of(node.func) == "AliasChoices":
            found.extend(arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str))
    return sorted(set(found))


def own_fields(module: Module, normalizer: Normalizer, name: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for node in module.classes[name].body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        field = node.target.id
        annotation = node.annotation
        if field.startswith("_") or field == "model_config":  # private attributes and pydantic's own config
            continue
        if isinstance(annotation, ast.Subscript) and name_of(annotation.value) == "ClassVar":
            continue
        if isinstance(node.value, ast.Call) and name_of(node.value.func) == "PrivateAttr":
            continue
        call = field_call(node.value)
        excluded = keyword(call, "exclude")
        if isinstance(excluded, ast.Constant) and excluded.value is True:
            continue  # runtime objects (an MPI session) handed over in code, never settings in a file
        entry: dict[str, Any] = {"type": normalizer.type_of(annotation)}
        aliases = aliases_of(call)
        if aliases:
            entry["aliases"] = aliases
        fields[field] = entry
    return fields


def constant_text(node: ast.expr | None) -> str | None:
    return str(node.value) if isinstance(node, ast.Constant) else None


def extra_in_config_class(node: ast.ClassDef) -> str | None:
    """`class Config: extra = "forbid"` (pydantic's older spelling, still honoured)."""
    for item in node.body:
        if isinstance(item, ast.Assign) and any(name_of(target) == "extra" for target in item.targets):
            return constant_text(item.value)
    return None


def extra_in_model_config(value: ast.expr) -> str | None:
    """`model_config = {"extra": "forbid"}` or `model_config = ConfigDict(extra="forbid")`."""
    if isinstance(value, ast.Dict):
        for key, item in zip(value.keys, value.values, strict=True):
            if constant_text(key) == "extra":
                return constant_text(item)
    return constant_text(keyword(value, "extra")) if isinstance(value, ast.Call) else None


def model_config_value(node: ast.stmt) -> ast.expr | None:
    """The value of a `model_config = ...` (or annotated `model_config: ConfigDict = ...`) statement."""
    if isinstance(node, ast.Assign) and any(name_of(target) == "model_config" for target in node.targets):
        return node.value
    if isinstance(node, ast.AnnAssign) and name_of(node.target) == "model_config":
        return node.value
    return None


def extra_policy(module: Module, name: str) -> str | None:
    """pydantic's `extra` as the class itself sets it, or None to inherit it."""
    for node in module.classes[name].body:
        if isinstance(node, ast.ClassDef) and node.name == "Config":
            found = extra_in_config_class(node)
        else:
            value = model_config_value(node)
            found = extra_in_model_config(value) if value is not None else None
        if found:
            return found
    return None


def describe_model(module: Module, normalizer: Normalizer, name: str) -> dict[str, Any]:
    """Fields of the class and of its bases (a subclass's declaration wins), and its `extra` policy."""
    fields: dict[str, Any] = {}
    extra = None
    for base in reversed(module.bases(name)):
        if module.is_model(base):
            inherited = describe_model(module, normalizer, base)
            fields.update(inherited["fields"])
            extra = inherited["extra"]
    fields.update(own_fields(module, normalizer, name))
    return {"extra": extra_policy(module, name) or extra or "ignore", "fields": fields}


def referenced_models(kind: Type) -> list[str]:
    if kind["kind"] == "model":
        return [kind["model"]]
    if kind["kind"] == "union":
        return [name for member in kind["of"] for name in referenced_models(member)]
    if kind["kind"] in ("optional", "list"):
        return referenced_models(kind["of"])
    if kind["kind"] == "dict":
        return referenced_models(kind["values"])
    return []


def build_schema(module: Module, root: str) -> dict[str, Any]:
    """The root model and every model its fields reach, nothing else (the data file stays small)."""
    if not module.is_model(root):
        raise SystemExit(f"{root} is not a pydantic model class in the given source")
    normalizer = Normalizer(module)
    models: dict[str, Any] = {}
    pending = [root]
    while pending:
        name = pending.pop()
        if name in models:
            continue
        models[name] = describe_model(module, normalizer, name)
        for field in models[name]["fields"].values():
            pending.extend(referenced_models(field["type"]))
    return models


def repository_path(path: Path) -> str:
    """`.../tensorrt_llm/llmapi/llm_args.py` (or its `_modules/....html` page) as the repository path."""
    text = path.as_posix()
    if "_modules/" in text and text.endswith(".html"):
        text = text.split("_modules/", 1)[1][: -len(".html")] + ".py"
    return text[text.index("tensorrt_llm/") :] if "tensorrt_llm/" in text else path.name


def git(git_dir: str, *argv: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, *argv], check=True, capture_output=True, text=True).stdout


def read_sources(args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    """The source texts, their repository paths and the commit they come from."""
    if args.git_dir:
        if not args.tag:
            raise SystemExit("--git-dir needs --tag")
        paths = args.path or list(DEFAULT_PATHS)
        texts = [git(args.git_dir, "show", f"{args.tag}:{path}") for path in paths]
        return texts, paths, git(args.git_dir, "rev-parse", f"{args.tag}^{{commit}}").strip()
    if not args.files:
        raise SystemExit("name the source files, or give --git-dir and --tag")
    texts = []
    for file in args.files:
        text = Path(file).read_text(encoding="utf-8")
        texts.append(python_from_viewcode(text) if file.endswith(".html") else text)
    return texts, args.path or [repository_path(Path(file)) for file in args.files], args.commit or "unknown-commit"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="source files (.py, or a Sphinx _modules .html page)")
    parser.add_argument("--git-dir", help="a TensorRT-LLM git directory to read --path files from at --tag")
    parser.add_argument("--tag", help="the release tag, e.g. v1.1.0rc5")
    parser.add_argument("--commit", help="the commit the files come from (with files; git mode finds it)")
    parser.add_argument("--path", action="append", help="repository path of a source file (repeatable)")
    parser.add_argument("--version", help="TensorRT-LLM version (default: the tag without its 'v')")
    parser.add_argument("--root", default=DEFAULT_ROOT, help=f"the model an engine YAML fills (default {DEFAULT_ROOT})")
    parser.add_argument("--note", help="a line on where the source text came from, kept in the data file")
    parser.add_argument("--out", help="output file (default: tensorrt_llm-<version>.json beside this script)")
    args = parser.parse_args(argv)
    version = args.version or (args.tag or "").removeprefix("v")
    if not version:
        raise SystemExit("give --version (or --tag)")
    texts, paths, commit = read_sources(args)
    schema: dict[str, Any] = {
        "tensorrt_llm_version": version,
        "source": " ".join([REPOSITORY, args.tag or f"v{version}", commit, *paths]),
        "generated_by": GENERATED_BY,
        "root": args.root,
        "models": build_schema(Module.parse(texts), args.root),
    }
    if args.note:
        schema["note"] = args.note
    out = Path(args.out) if args.out else HERE / f"tensorrt_llm-{version}.json"
    out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    sys.stderr.write(f"wrote {out}: {len(schema['models'])} models\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
