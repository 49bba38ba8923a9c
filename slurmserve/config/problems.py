"""pydantic's report on a file a user wrote, in the user's words: where (the file, or the `--set` that put the
value there; a list entry by its index and name, `hosts[1] (gpu02)`), what is wrong, and the closest valid
key or value when a typo is the likely cause. No pydantic phrasing (`Value error, ...`, `Input should be`)."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ..errors import UserError, did_you_mean
from .engine_schema import shown

Location = tuple[int | str, ...]

# pydantic's message for a kind of error, as a user reads it; {name} comes from the error's context.
MESSAGES = {
    "missing": "missing (a required key)",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "finite_number": "must be a finite number",
}
PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")
# How pydantic names a union's member types in an error's location, in words.
UNION_MEMBER_WORDS = {
    "str": "text",
    "function-after": "text",
    "int": "a whole number",
    "constrained-int": "a whole number",
    "float": "a number",
    "constrained-float": "a number",
    "bool": "true/false",
}
SHOWN_CHARS = 60  # of a value quoted back: enough to recognise it, not a screenful of a 400-digit number


def describe_validation_error(
    source: str | Path, error: ValidationError, data: Any, model: type[BaseModel], assignments: Sequence[str] = ()
) -> UserError:
    """One paragraph: each problem after the place its value came from (`source`, or the `--set`
    assignment that wrote it), named by its path in the file."""
    said, last_origin = [], None
    for item, members in deduplicated(error.errors()):
        path, text = describe(item, members, data, model)
        # A rule of the whole file (mode disagg needs a prefill section) broken by a --set: the file with it.
        whole = f"{source} with {', '.join(f'--set {cut(a)}' for a in assignments)}" if assignments else str(source)
        origin = assignment_of(path, assignments) or (whole if not path else str(source))
        said.append(text if origin == last_origin else f"{origin}: {text}")  # a source named once for its run
        last_origin = origin
    return UserError("; ".join(said))


def deduplicated(items: list[ErrorDetails]) -> list[tuple[ErrorDetails, list[str]]]:
    """One error a value: a union (a flag's value may be text, a number or a boolean) reports one error per
    member it is not, each under a location ending with the member's name. The first is kept, with the
    names of the members tried."""
    tried: dict[Location, tuple[ErrorDetails, list[str]]] = {}
    for item in items:
        where = tuple(part for part in item["loc"] if not is_union_member(part))
        members = [str(part) for part in item["loc"] if is_union_member(part)]
        if where in tried:
            tried[where][1].extend(members)
            continue
        item["loc"] = where  # pydantic made this list for us: ours to change
        tried[where] = (item, members)
    return list(tried.values())


def is_union_member(part: int | str) -> bool:
    """pydantic names a union member it tried by its type: `str`, `constrained-int`, `function-after[...]`."""
    return isinstance(part, str) and bool(re.fullmatch(r"(str|int|float|bool|constrained-\w+|[\w-]+\[.*\])", part))


def describe(item: ErrorDetails, members: list[str], data: Any, model: type[BaseModel]) -> tuple[str, str]:
    """(dotted path, the problem in words) of one error; `members`: the union's types the value is none of."""
    loc = item["loc"]
    path = dotted(loc)
    where = named(loc, data)
    if item["type"] == "extra_forbidden":
        key = str(loc[-1])
        inner = where.rpartition(": ")[2]
        suggestion = did_you_mean(key, valid_keys(model, loc[:-1]), inner[: len(inner) - len(key)])
        return path, f"{where}: unknown key{suggestion}"
    said = union_message(members, item) if len(members) > 1 else message(item)
    return path, f"{where}: {said}" if where else said


def union_message(members: list[str], item: ErrorDetails) -> str:
    """`must be text, a number or true/false`: each type of the union the value could have been."""
    kinds = list(dict.fromkeys(UNION_MEMBER_WORDS.get(member.split("[")[0], member) for member in members))
    if "a number" in kinds and "a whole number" in kinds:  # a number takes whole ones too
        kinds.remove("a whole number")
    got = item.get("input")
    shown_got = "" if isinstance(got, dict | list) else f" (got {briefly(got)})"
    return f"must be {', '.join(kinds[:-1])} or {kinds[-1]}{shown_got}"


def message(item: ErrorDetails) -> str:
    context = item.get("ctx") or {}
    if item["type"] == "literal_error":
        choices = re.findall(r"'([^']*)'", str(context.get("expected", "")))
        got = item.get("input")
        hint = did_you_mean(got, choices) if isinstance(got, str) else ""
        return f"must be {context.get('expected', '')!s} (got {briefly(got)}){hint}"
    text = MESSAGES.get(item["type"], "").format(**context) or item["msg"]
    for prefix in PYDANTIC_PREFIXES:
        text = text.removeprefix(prefix)
    text = text.replace("Input should be", "must be")
    got = item.get("input")
    shown = item["type"] != "missing" and not isinstance(got, dict | list) and item["loc"]
    return f"{text} (got {briefly(got)})" if shown else text


def briefly(value: Any) -> str:
    """A value as the YAML author wrote it ('high', true, null), cut short when long."""
    return cut(shown(value))


def cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def dotted(loc: Location) -> str:
    """`decode.replicas`, `hosts.1.address`: the path as `--set` would write it."""
    return ".".join(str(part) for part in loc)


def named(loc: Location, data: Any) -> str:
    """The path as the user finds it in the file: `decode.replicas`; a list entry by its index and, when it
    has one, its name: `hosts[1] (gpu02): address`."""
    text, value = "", data
    for part in loc:
        if isinstance(part, int):
            value = value[part] if isinstance(value, list) and part < len(value) else None
            name = value.get("name") if isinstance(value, dict) else None
            text += f"[{part}]" + (f" ({name}): " if isinstance(name, str) else "")
            continue
        value = value.get(part) if isinstance(value, dict) else None
        text += ("." if text and not text.endswith(": ") else "") + part
    return text.removesuffix(": ")


def assignment_of(path: str, assignments: Sequence[str]) -> str | None:
    """The `--set` that wrote the value at `path` (or a value inside it), if one did: the last one, as it won."""
    for assignment in reversed(assignments):
        key = assignment.partition("=")[0]
        # the value it wrote, one inside it, or a section it made (`--set decod.replicas=2` makes `decod`)
        if path and (path == key or path.startswith(key + ".") or key.startswith(path + ".")):
            return f"--set {cut(assignment)}"
    return None


def valid_keys(model: type[BaseModel], loc: Location) -> list[str]:
    """The keys the model takes at `loc` (a path of keys and list indexes), for a suggestion."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue  # a list's item: the list's model, already found
        fields = current.model_fields if isinstance(current, type) and issubclass(current, BaseModel) else {}
        if part not in fields:
            return []
        current = model_in(fields[part].annotation)
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def model_in(annotation: Any) -> Any:
    """The model a field holds: itself, or inside an Optional, a list or a union (`list[NicSpec] | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        return next((found for arg in typing.get_args(annotation) if (found := model_in(arg)) is not None), None)
    return None
