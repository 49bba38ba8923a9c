"""`slurmserve sweep`: the points of a parameter sweep (the Cartesian product of --vary lists, or the
lists paired with --zip), each a deployment of its own, and where their results go."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from ..config.hosts import Hosts
from ..config.recipe import Recipe
from ..errors import UserError
from ..private import copy_as_new, write_whole
from .results import BenchSummary, read_summary
from .runner import BenchRequest

SAFE_NAME = re.compile(r"[A-Za-z0-9._=,-]+")
# A point's folder name: its settings as they are when they are short and safe; else the readable
# start of them, `+` (never in a name of the first kind) and a short hash of all of them.
POINT_NAME_CHARS = 80
POINT_HASH_CHARS = 8
VERSIONED_PACKAGES = ("slurmserve", "ai-dynamo")
RESULTS_KEY_FILE = "results-key"  # in a point's folder: the key its results were measured under


@dataclass(frozen=True)
class SweepPoint:
    """One deployment of the sweep: the --set assignments that make it."""

    assignments: tuple[str, ...]

    @property
    def name(self) -> str:
        """Its folder and label: `decode.replicas=2,prefill.args.max_batch_size=16`; unique and bounded."""
        text = ",".join(self.assignments)
        if SAFE_NAME.fullmatch(text) and len(text) <= POINT_NAME_CHARS:
            return text
        readable = re.sub(r"[^A-Za-z0-9._=,-]", "_", text)[:POINT_NAME_CHARS]
        return f"{readable}+{hashlib.sha256(text.encode()).hexdigest()[:POINT_HASH_CHARS]}"


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
    for key, choices in parsed:
        repeated = sorted({value for value in choices if choices.count(value) > 1})
        if repeated:
            raise UserError(f"--vary {key}: each value once (value {', '.join(repeated)} twice)")
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


def versions() -> dict[str, str]:
    """The versions of what serves and measures here (a package not installed: "")."""
    found = {}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = ""
    return found


def results_key(recipe: Recipe, hosts: Hosts, request: BenchRequest) -> str:
    """Everything a point's numbers depend on, as a hash: the recipe as loaded (its --set included), its
    engine configs' content, the hosts, the workload and the versions. A point saved under another key
    is measured again."""
    engine_configs = {
        group.field: hashlib.sha256(Path(group.spec.engine_config).read_bytes()).hexdigest()
        for group in recipe.worker_groups()
        if group.spec.engine_config is not None
    }
    workload = {name: value for name, value in asdict(request).items() if name != "label"}
    inputs = {
        "recipe": recipe.model_dump(mode="json"),
        "engine_configs": engine_configs,
        "hosts": hosts.model_dump(mode="json"),
        "workload": workload,
        "versions": versions(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def sweep_key(results: str, points: list[SweepPoint]) -> str:
    """What names a sweep's folder and runs: what its points' numbers depend on, and the points."""
    text = "\n".join([results, *(point.name for point in points)])
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_folder(root: Path, recipe: str, key: str) -> Path:
    return root / "sweeps" / f"{Path(recipe).stem}-{key}"


def current_summary(folder: Path, key: str) -> BenchSummary | None:
    """A point folder's summary, if it was measured under `key` (else its numbers are not this sweep's)."""
    try:
        saved = (folder / RESULTS_KEY_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return read_summary(folder) if saved == key else None


def save_point(results: Path, folder: Path, key: str, *, private: bool) -> None:
    """A point's benchmark folder copied into the sweep's (replacing an earlier measurement whole), with
    the key it was measured under; `private`: kept 0700/0600, else made as the user's new files are."""
    shutil.rmtree(folder, ignore_errors=True)
    if private:
        shutil.copytree(results, folder)
    else:
        copy_as_new(results, folder)
    write_whole(folder / RESULTS_KEY_FILE, f"{key}\n".encode(), private=private)
