"""The one command line of a `command: [/bin/sh, -c]` container, read as the shell would read it, never run.

What Dynamo's recipes write there is taken: words and quotes, line continuations, `${VAR}`/`$VAR` from the
container's env, leading `VAR=value` assignments, `exec`, and `trtllm-llmapi-launch` in front of the module.
Anything that would make it more than one plain command (pipes, `&&`, `;`, redirections, subshells, command
substitution, several lines) is refused: its meaning is not a command line slurmserve can plan.
"""

from __future__ import annotations

import re
import shlex
from typing import NamedTuple

from ..errors import UserError

VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)
OPERATORS = frozenset(";&|()<>")
# Words in front of the program that start it without changing what it runs.
LAUNCHERS = ("exec", "trtllm-llmapi-launch")


class ShellCommand(NamedTuple):
    env: dict[str, str]  # the leading VAR=value assignments
    argv: list[str]  # the program and its arguments, variables expanded


def expand(text: str, env: dict[str, str], where: str) -> str:
    """`${VAR}` and `$VAR` replaced as the shell would, outside single quotes; `$(...)` and backquotes refused."""
    out, quote, index = [], "", 0
    while index < len(text):
        char = text[index]
        if char == "\\" and quote != "'" and index + 1 < len(text):
            out.append(text[index : index + 2])
            index += 2
            continue
        if char in "'\"" and quote in ("", char):
            quote = "" if quote else char
        elif quote != "'" and (char == "`" or text.startswith("$(", index)):
            raise UserError(f"{where}: command substitution ({char}...) has no plain command line: {text.strip()!r}")
        elif quote != "'" and (match := VARIABLE.match(text, index)):
            name = match[1] or match[2]
            if name not in env:
                raise UserError(f"{where}: ${{{name}}} is not set in the container's env, so its value is unknown")
            value = env[name]
            out.append(re.sub(r'(["\\$`])', r"\\\1", value) if quote == '"' else shlex.quote(value))
            index = match.end()
            continue
        elif char == "\n" and not quote and text[index + 1 :].strip():
            raise UserError(f"{where}: several commands (one a line); only one plain command can be read")
        out.append(char)
        index += 1
    return "".join(out)


def read_shell_command(script: str, env: dict[str, str], where: str) -> ShellCommand:
    """The assignments and argv of one shell command line (see the module's doc)."""
    joined = script.replace("\\\n", "")  # line continuations
    lexer = shlex.shlex(expand(joined, env, where), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError as error:  # an unclosed quote
        raise UserError(f"{where}: the shell command cannot be read ({error})") from None
    operators = [word for word in words if word and set(word) <= OPERATORS]
    if operators:
        raise UserError(
            f"{where}: {' '.join(dict.fromkeys(operators))} makes it more than one plain command (pipes, "
            "lists, redirections and subshells are not read); write the command itself"
        )
    assignments: dict[str, str] = {}
    while words and (match := ASSIGNMENT.fullmatch(words[0])):
        assignments[match[1]] = match[2]
        words.pop(0)
    while words and words[0] in LAUNCHERS:
        words.pop(0)
    if not words:
        raise UserError(f"{where}: the shell command runs nothing")
    return ShellCommand(assignments, words)
