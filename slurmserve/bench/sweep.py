"""`slurmserve sweep`: the points of a parameter sweep (the Cartesian product of --vary lists, or the
lists paired with --zip), each a deployment of its own, measured one benchmark at a time, and where
their results go."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from ..backends import traits_for
from ..config.hosts import Hosts
from ..config.recipe import Recipe, load_recipe
from ..errors import DeploymentFailed, UserError
from ..interop.files import recipe_source
from ..planning.plan import Plan
from ..private import copy_as_new, make_out_dir, make_private_dir, write_whole
from ..runs import RunDir, slurmserve_home
from ..waiting import fan_out
from .measure import BenchRequest
from .plots import draw as draw_plots
from .results import BenchSummary, read_summary
from .table import text_table

SAFE_NAME = re.compile(r"[A-Za-z0-9._=,-]+")
# A point's folder name: its settings as they are when they are short and safe; else the readable
# start of them, `+` (never in a name of the first kind) and a short hash of all of them.
POINT_NAME_CHARS = 80
POINT_HASH_CHARS = 8
VERSIONED_PACKAGES = ("slurmserve", "ai-dynamo")
RESULTS_KEY_FILE = "results-key"  # in a point's folder: the key its results were measured under
SWEEP_DEADLINE_S = 7 * 24 * 3600.0  # deployments side by side on Slurm: each ends on its own (queue, bench)


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


@dataclass(frozen=True)
class SweepReport:
    folder: Path  # one folder per point (its benchmark), and the combined table and plots
    summaries: list[BenchSummary]
    measured: list[str]  # points deployed and benchmarked now
    skipped: list[str]  # points a run before had measured
    failed: dict[str, str]  # points whose deployment or benchmark failed, and why


class PreparedPoint(Protocol):
    @property
    def plan(self) -> Plan: ...


class DeployedPoint(Protocol):
    @property
    def run(self) -> RunDir: ...


Prepared = TypeVar("Prepared", bound=PreparedPoint)


@dataclass(frozen=True)
class SweepVerbs(Generic[Prepared]):
    """What a sweep does to each point: the deployment verbs (`slurmserve.deploy`'s, a layer above)."""

    prepare: Callable[[list[str], str], Prepared]  # the point's --set assignments, its run name
    submit: Callable[[Prepared], DeployedPoint]  # deployed and serving, or UserError / DeploymentFailed
    bench: Callable[[RunDir, BenchRequest], tuple[BenchSummary, Path]]
    cancel: Callable[[RunDir], list[str]]


def point_keys(
    recipe: str, hosts: Hosts, sets: Sequence[str], points: list[SweepPoint], request: BenchRequest
) -> dict[SweepPoint, str]:
    """Each point's results key (what its numbers depend on); a point that cannot be loaded is the
    user's error, found before anything starts."""
    keys = {}
    for point in points:
        try:
            loaded = load_recipe(recipe_source(recipe)[0], [*sets, *point.assignments], hosts.runtime.dynamo)
            keys[point] = results_key(loaded, hosts, request)
        except UserError as error:
            raise UserError(f"sweep point {point.name}: {error}") from None
    return keys


@dataclass
class Sweep(Generic[Prepared]):
    """One sweep's points, where their results go, and what has become of each."""

    verbs: SweepVerbs[Prepared]
    points: list[SweepPoint]
    request: BenchRequest
    keys: dict[SweepPoint, str]  # each point's results key
    key: str  # the sweep's: its folder's and its runs' names
    folder: Path
    private: bool  # a folder of the home's (0700/0600), not one the user named with --out
    say: Callable[[str], None]
    failed: dict[str, str] = field(default_factory=dict)
    benchmarks: threading.Lock = field(default_factory=threading.Lock)

    def to_measure(self, remeasure: bool) -> list[SweepPoint]:
        """The points not yet measured under their key (every point with `remeasure`); the others are said."""
        todo = [point for point in self.points if remeasure or self.measured_before(point) is None]
        for point in self.points:
            if point not in todo:
                self.say(f"{point.name}: measured before, skipped")
        for point in todo:
            if not remeasure and read_summary(self.folder / point.name) is not None:
                self.say(
                    f"{point.name}: measured before with another workload, recipe, hosts or version: measuring again"
                )
        return todo

    def measured_before(self, point: SweepPoint) -> BenchSummary | None:
        return current_summary(self.folder / point.name, self.keys[point])

    def prepare_all(self, todo: list[SweepPoint], sets: Sequence[str]) -> dict[SweepPoint, Prepared]:
        """Every point planned first: a point that cannot be deployed (too many GPUs, a bad value) is the
        user's error, found before any deployment starts."""
        prepared = {}
        for point in todo:
            try:
                prepared[point] = self.verbs.prepare(
                    [*sets, *point.assignments], f"sweep-{self.key}-{self.points.index(point)}"
                )
            except UserError as error:
                raise UserError(f"sweep point {point.name}: {error}") from None
        return prepared

    def measure(self, point: SweepPoint, prepared: Prepared) -> None:
        """Deploy the point, benchmark it (one benchmark at a time), save its results, cancel it."""
        try:
            deployment = self.verbs.submit(prepared)
        except (UserError, DeploymentFailed) as error:
            self.failed[point.name] = str(error)
            self.say(f"{point.name}: deployment failed: {error}")
            return
        try:
            self.say(f"{point.name}: run {prepared.plan.run_name} serves; benchmarking")
            with self.benchmarks:
                summary, results = self.verbs.bench(deployment.run, replace(self.request, label=point.name))
            save_point(results, self.folder / point.name, self.keys[point], private=self.private)
            self.say(f"{point.name}: {'valid' if summary.valid else 'INVALID'} ({len(summary.points)} points)")
        except (UserError, DeploymentFailed) as error:  # DeploymentFailed: its run was cancelled mid-benchmark
            self.failed[point.name] = str(error)
        finally:
            self.verbs.cancel(deployment.run)

    def measure_side_by_side(self, prepared: dict[SweepPoint, Prepared]) -> None:
        """Each point a Slurm job of its own, all at once (the partition queues what it has no room for)."""
        try:
            fan_out(list(prepared), lambda point: self.measure(point, prepared[point]), SWEEP_DEADLINE_S)
        except KeyboardInterrupt:  # the points' threads die with this process: their jobs (and aiperf) first
            for run in [RunDir(Path(p.plan.run_dir)) for p in prepared.values() if Path(p.plan.run_dir).is_dir()]:
                self.verbs.cancel(run)
            raise

    def report(self, todo: list[SweepPoint]) -> SweepReport:
        """What this sweep's settings measured (a point that failed now shows no earlier numbers), with the
        combined table and plots."""
        current = [point for point in self.points if point.name not in self.failed]
        summaries = [found for point in current if (found := self.measured_before(point))]
        if summaries:
            write_whole(self.folder / "table.txt", text_table(summaries).encode(), private=self.private)
            draw_plots(summaries, self.folder, private=self.private)
        measured = [point.name for point in todo if point.name not in self.failed]
        skipped = [point.name for point in self.points if point not in todo]
        return SweepReport(self.folder, summaries, measured, skipped, self.failed)


def sweep(
    verbs: SweepVerbs[Prepared],
    inputs: tuple[str, Recipe, Hosts, Sequence[str]],
    points: list[SweepPoint],
    request: BenchRequest,
    out: Path | None,
    remeasure: bool,
    say: Callable[[str], None],
) -> SweepReport:
    """One deployment per point (`inputs`: the recipe as named, loaded, the hosts and the --set common to
    every point): see `slurmserve.deploy.sweep`."""
    recipe, base, hosts, sets = inputs
    keys = point_keys(recipe, hosts, sets, points, request)
    key = sweep_key(results_key(base, hosts, request), points)
    folder = out or default_folder(slurmserve_home(), recipe, key)
    sweeping = Sweep(verbs, points, request, keys, key, folder, private=out is None, say=say)
    todo = sweeping.to_measure(remeasure)
    prepared = sweeping.prepare_all(todo, sets)
    if out is None:
        make_private_dir(folder)
    else:
        make_out_dir(out)  # one that cannot be written: exit 2, before any deployment
    if traits_for(hosts.backend).has_allocation:  # each deployment a job of its own
        sweeping.measure_side_by_side(prepared)
    else:  # one machine's (or hosts') GPUs and ports: one deployment at a time
        for point in todo:
            sweeping.measure(point, prepared[point])
    return sweeping.report(todo)
