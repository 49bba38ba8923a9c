"""The one error type the CLI turns into a clean message and exit status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input: a malformed file, an impossible placement, an unreachable host.

    The message is shown as-is (one paragraph, no traceback) and the CLI exits with status 2.
    """


class DeploymentFailed(Exception):
    """The input was fine but the deployment did not become ready (CLI exit status 1)."""


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice a typo most likely meant (difflib's ratio, as `get_close_matches` judges it), if any is close."""
    found = difflib.get_close_matches(word, list(choices), n=1)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """` (did you mean 'PREFIX+CHOICE'?)` for the closest choice, or nothing when none is close."""
    match = closest(word, choices)
    return f" (did you mean {prefix + match!r}?)" if match else ""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a command, and what it had started with it: the message says what
    was stopped (the CLI exits 128 + the signal's number). A KeyboardInterrupt still, for callers that
    handle the Ctrl-C and know nothing more."""
