"""Flags of a manifest that the Dynamo here no longer takes: Dynamo's recipes run images from 0.6 to 1.3, and
flags drift (the 1.6.1 frontend rejects `--router-reset-states`). Dynamo's own parsers are asked
(slurmserve.node.flagcheck, as plan time asks them); a rejected flag is left out of the imported recipe and
reported, with the parser's words and where it was."""

from __future__ import annotations

import re
import sys
from typing import Any

from ..backends.preflight import command_rejections
from .importer import Imported

REJECTION = re.compile(r"(?P<process>\S+): (?P<said>.*? rejects (?P<flag>--[A-Za-z0-9][\w.-]*).*)")


def without_flag(section: dict[str, Any], flag: str) -> bool:
    """Take `flag` out of a recipe section's args or extra_args (with its value there); whether it was there."""
    key = flag.removeprefix("--").replace("-", "_")
    if key in section.get("args", {}):
        del section["args"][key]
        return True
    words = section.get("extra_args", [])
    if flag not in words:
        return False
    at = words.index(flag)
    has_value = at + 1 < len(words) and not words[at + 1].startswith("-")
    del words[at : at + 2 if has_value else at + 1]
    return True


def drop_rejected_flags(imported: Imported, python: str = sys.executable) -> None:
    """Ask this interpreter's Dynamo about each service's command; leave out what it rejects, and say so."""
    asked = [{key: value for key, value in command.items() if key != "field"} for command in imported.commands]
    fields = {command["process"]: command["field"] for command in imported.commands}
    for line in command_rejections(python, asked) or []:  # None: no Dynamo here to ask (plan asks the nodes')
        match = REJECTION.fullmatch(line)
        if match is None:
            imported.warnings.append(line)
            continue
        field = fields.get(match["process"], "")
        section = imported.recipe.get(field, {})
        if without_flag(section, match["flag"]):
            place = "frontend.extra_args" if field == "frontend" else f"{field}.args"
            imported.warnings.append(f"{match['process']}: {match['said']}; left out of the recipe's {place}")
        else:
            imported.warnings.append(f"{line}; take it out of the manifest")
        for key in ("args", "extra_args"):
            if key in section and not section[key]:
                del section[key]
