"""`--set dotted.path=value`: recipe fields overridden from the command line."""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import UserError
from .files import unreadable_value


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply `--set dotted.path=value` assignments. Values are parsed as YAML (2 -> int, [a, b] -> list),
    except an environment variable's (`--set env.X=1`, `--set decode.env.X=on`): that is text as written."""
    for assignment in assignments:
        key, sep, raw_value = assignment.partition("=")
        if not sep or not key:
            raise UserError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set decode.replicas=2")
        *parents, leaf = key.split(".")
        target = data
        for depth, part in enumerate(parents):
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {assignment!r}: {'.'.join(parents[: depth + 1])} is not a section")
            target = child
        if parents and parents[-1] == "env":
            target[leaf] = raw_value
            continue
        try:
            target[leaf] = yaml.safe_load(raw_value) if raw_value else ""
        except yaml.YAMLError:
            target[leaf] = raw_value
        except ValueError as error:
            raise UserError(f"--set {key}: a value YAML cannot read ({unreadable_value(error)})") from None
    return data
