"""What every file a user writes shares: YAML read into a mapping, unknown keys refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from ..errors import UserError


class Strict(BaseModel):
    """Every file a user writes rejects unknown keys: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise UserError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.object[error.start : error.start + 1]!r})"
        ) from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}{yaml_position(error)}: not valid YAML: {yaml_problem(error)}") from None
    except ValueError as error:  # a value YAML's constructors refuse: an int of over 4300 digits, 2001-02-30
        raise UserError(f"{path}: a value YAML cannot read ({unreadable_value(error)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def yaml_position(error: yaml.YAMLError) -> str:
    """`, line 3, column 7` where the YAML parser gave up (PyYAML counts from 0), or nothing if it says not."""
    mark = getattr(error, "problem_mark", None)
    return f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def yaml_problem(error: yaml.YAMLError) -> str:
    """What the parser found wrong, with the context it was in (`while parsing a flow sequence`), without
    its own positions (they name `<unicode string>`, not the file)."""
    if isinstance(error, yaml.MarkedYAMLError):
        return "; ".join(part for part in (error.problem, error.context) if part) or "unreadable"
    return str(error).splitlines()[0]


def unreadable_value(error: ValueError) -> str:
    """What a YAML constructor's ValueError says, without Python's advice to the programmer."""
    return str(error).split(";")[0]
