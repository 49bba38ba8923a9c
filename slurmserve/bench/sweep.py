"""`slurmserve sweep`: the points of a parameter sweep (the Cartesian product of --vary lists, or the
lists paired with --zip), each a deployment of its own, and where their results go."""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError


@dataclass(frozen=True)
class SweepPoint:
    """One deployment of the sweep: the --set assignments that make it."""

    assignments: tuple[str, ...]

    @property
    def name(self) -> str:
        """Its folder and label: `decode.replicas=2,prefill.args.max_batch_size=16`, made safe as a name."""
        return re.sub(r"[^A-Za-z0-9._=,-]", "_", ",".join(self.assignments))


def parse_vary(vary: list[str]) -> list[tuple[str, list[str]]]:
    """`decode.replicas=1,2` -> ("decode.replicas", ["1", "2"]), for each --vary."""
    parsed = []
    for text in vary:
        key, equals, values = text.partition("=")
        choices = [value.strip() for value in values.split(",") if value.strip()]
        if not equals or not key.strip() or not choices:
            raise UserError(f"--vary {text!r}: write FIELD=VALUE,VALUE..., such as decode.replicas=1,2")
        parsed.append((key.strip(), choices))
    if not parsed:
        raise UserError("sweep: say what to vary, e.g. --vary decode.replicas=1,2")
    keys = [key for key, _ in parsed]
    if len(set(keys)) != len(keys):
        raise UserError(f"--vary: each field once ({', '.join(sorted({k for k in keys if keys.count(k) > 1}))} twice)")
    return parsed


def sweep_points(vary: list[str], zipped: bool = False) -> list[SweepPoint]:
    """Every combination of the values (or, with `zipped`, the i-th value of each list together)."""
    parsed = parse_vary(vary)
    keys = [key for key, _ in parsed]
    lists = [values for _, values in parsed]
    if zipped:
        if len({len(values) for values in lists}) != 1:
            raise UserError(f"--zip: every --vary needs as many values ({', '.join(map(str, map(len, lists)))} given)")
        rows = list(zip(*lists, strict=True))
    else:
        rows = list(itertools.product(*lists))
    return [SweepPoint(tuple(f"{key}={value}" for key, value in zip(keys, row, strict=True))) for row in rows]


def sweep_key(recipe: str, hosts: str | None, sets: list[str], points: list[SweepPoint]) -> str:
    """What names a sweep's folder: the same command resumes the same sweep."""
    text = "\n".join([recipe, hosts or "", *sets, *(point.name for point in points)])
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_folder(root: Path, recipe: str, key: str) -> Path:
    return root / "sweeps" / f"{Path(recipe).stem}-{key}"
