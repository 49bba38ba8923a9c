"""The one error type the CLI turns into a clean message and exit status 2."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


class UserError(Exception):
    """Bad input: a malformed file, an impossible placement, an unreachable host.

    The message is shown as-is (one paragraph, no traceback) and the CLI exits with status 2.
    """


class DeploymentFailed(Exception):
    """The input was fine but the deployment did not become ready (CLI exit status 1)."""


def describe_validation_error(source: str | Path, error: ValidationError) -> UserError:
    """Turn pydantic's report into one paragraph naming the file, each field path and what was wrong."""
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            problems.append(f"{path}: unknown key")
            continue
        got = item.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        problems.append(f"{path}: {item['msg']}{got_text}")
    return UserError(f"{source}: " + "; ".join(problems))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a command, and what it had started with it: the message says what
    was stopped (the CLI exits 128 + the signal's number). A KeyboardInterrupt still, for callers that
    handle the Ctrl-C and know nothing more."""
