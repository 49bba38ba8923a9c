"""A recipe's `lifetime:` section (or `submit --lifetime`): how long the deployment is served as a chain of Slurm
jobs, each within the cluster's time limit, each successor ready a handover lead time before its predecessor
ends, behind one gateway address. Durations are written as `14d`, `12h`, `30m`, `90s` or combined (`1h30m`)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from .fields import Identifier
from .files import Strict

DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
UNIT_S = (86400, 3600, 60, 1)
MAX_LIFETIME_S = 366 * 86400  # a year: beyond it a number is a typo, not a plan
SLURM_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def duration_s(text: str) -> int:
    """`1h30m` -> 5400; ValueError naming what is wrong."""
    match = DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration such as 14d, 12h, 30m, 90s or 1h30m")
    seconds = sum(int(part or 0) * unit for part, unit in zip(match.groups(), UNIT_S, strict=True))
    if not 0 < seconds <= MAX_LIFETIME_S:
        raise ValueError(f"{text!r}: a duration from 1 s to 366 days")
    return seconds


def _duration(text: str) -> str:
    duration_s(text)
    return text.strip()


Duration = Annotated[str, AfterValidator(_duration)]


def slurm_time_s(text: str) -> int | None:
    """A Slurm time limit (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in seconds; None for none (UNLIMITED,
    INFINITE, or 0, which Slurm reads as no limit)."""
    match = SLURM_TIME.fullmatch(text)
    if match is None:
        return None
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
    elif third is not None:  # HH:MM:SS
        hours, minutes, seconds = int(first), int(second), int(third)
    else:  # MM[:SS]
        hours, minutes, seconds = 0, int(first), int(second or 0)
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds or None


def shown(seconds: int) -> str:
    """5400 -> `1h30m`: a duration as a recipe writes it."""
    parts = []
    for unit, name in zip(UNIT_S, "dhms", strict=True):
        count, seconds = divmod(seconds, unit)
        parts += [f"{count}{name}"] if count else []
    return "".join(parts) or "0s"


class GatewaySpec(Strict):
    host: Identifier | None = None  # a host of the hosts file; none: the machine that submits


class LifetimeSpec(Strict):
    total: Duration
    job: Duration | None = None  # each job's time limit; default: the hosts file's slurm.time
    handover: Duration | None = None  # the successor ready this long before its predecessor ends; default below
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
