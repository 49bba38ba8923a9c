"""`--set dotted.path=value`: recipe fields overridden from the command line."""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import UserError


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply `--set dotted.path=value` assignments; values are parsed as YAML (2 -> int, [a, b] -> list)."""
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
        try:
            target[leaf] = yaml.safe_load(raw_value) if raw_value else ""
        except yaml.YAMLError:
            target[leaf] = raw_value
    return data
