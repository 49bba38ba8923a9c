"""The options several commands share, and the parsers of option text that typer cannot type itself."""

from __future__ import annotations

import math
import re

import typer

from ..errors import UserError

RecipeOption = typer.Option(..., "--recipe", help="A built-in recipe name or a recipe file")
HostsOption = typer.Option(None, "--hosts", help="Hosts file (default: this machine)")
SetOption = typer.Option([], "--set", help="Override a recipe field: --set decode.replicas=2")
# What `bench` and `sweep` share: the command line's changes to the recipe's bench profile.
ConcurrencyOption = typer.Option(None, "--concurrency", help="Concurrency points, e.g. 1,8,32 (default: the recipe's)")
IslOption = typer.Option(None, "--isl", min=1, help="Input tokens per request")
OslOption = typer.Option(None, "--osl", min=1, help="Output tokens per request")
RequestsOption = typer.Option(None, "--requests", min=1, help="Exactly this many requests per point (no 30 s floor)")
AiperfOption = typer.Option(None, "--aiperf", help="aiperf to run (default: the one install.sh --bench installs)")
FreshOption = typer.Option(
    False, "--fresh-between-points", help="Restart the workers between points (prefix and KV caches empty)"
)

DURATION = re.compile(r"([0-9]{1,6})([smhd])")
SECONDS_PER = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def numbers(text: str | None, option: str) -> list[int] | None:
    """`1,8,32` -> [1, 8, 32]."""
    if text is None:
        return None
    try:
        values = [int(word) for word in text.split(",")]
    except ValueError:
        raise UserError(f"{option} {text!r}: must be whole numbers separated by commas, such as 1,8,32") from None
    if any(value < 1 for value in values):
        raise UserError(f"{option} {text!r}: each must be at least 1")
    return values


def duration_s(text: str, option: str) -> float:
    """`7d`, `12h`, `30m`, `90s` -> seconds."""
    match = DURATION.fullmatch(text.strip())
    if match is None:
        raise UserError(f"{option} {text!r}: must be a whole number and a unit (s, m, h or d), such as 7d or 12h")
    return int(match[1]) * SECONDS_PER[match[2]]


MOST_TIMEOUT_S = 7 * 86400.0  # a model that takes a week to serve is a start that failed


def timeout_s(value: float) -> float:
    """--timeout: seconds, above 0 and at most a week (not nan, not inf)."""
    if not math.isfinite(value) or not 0 < value <= MOST_TIMEOUT_S:
        raise UserError(
            f"--timeout {value:g}: must be a number of seconds above 0 and at most {MOST_TIMEOUT_S:g} (7 days)"
        )
    return value


TimeoutOption = typer.Option(600.0, "--timeout", help="Seconds to wait for the deployment to serve")
