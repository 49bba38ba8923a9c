"""Run names taken again: a stopped run set aside under a name with its start time, or removed, with the
home folder's link to it."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..config.fields import IDENTIFIER_MAX
from ..planning.plan import Plan
from ..private import write_private
from .layout import RunPaths
from .rundir import RunDir, runs_root, taken


def name_holders(plan: Plan) -> list[Path]:
    """What already holds the plan's run name: the home folder's entry of that name (a run, or a link to
    one under any run_root) and the plan's own run directory, each once."""
    found = [path for path in (runs_root() / plan.run_name, Path(plan.run_dir)) if taken(path)]
    return list({path.resolve(): path for path in found}.values())


def aside_path(run: RunDir) -> Path:
    """Where a stopped run is set aside: its folder's name with its start time as a suffix (and a counter
    when two runs of that name started in the same second), within the bound every run name has."""
    suffix = f"-{run.started_at():%Y%m%d-%H%M%S}"
    base = run.name[: IDENTIFIER_MAX - len(suffix) - 4] + suffix  # room for a counter
    candidates = (run.path.parent / (base if count == 1 else f"{base}-{count}") for count in range(1, 1000))
    return next(path for path in candidates if not any(taken(where) for where in (path, runs_root() / path.name)))


def set_aside(run: RunDir, target: Path) -> None:
    """Rename a stopped run's folder, and the home folder's link to it, so that its name can be taken
    again. Its plan follows it (name and folder): `status`, `logs` and `rm` read it under its new name."""
    if run.path.exists():  # another host's copy, renamed first, may have been this very folder (a shared filesystem)
        run.path.rename(target)
    drop_home_link(run)
    if runs_root() / target.name != target:
        (runs_root() / target.name).symlink_to(target)
    plan = RunDir(target).plan().model_copy(update={"run_name": target.name, "run_dir": str(target)})
    write_private(RunPaths(target).plan, plan.model_dump_json(indent=2) + "\n")


def remove_run(run: RunDir) -> None:
    """Delete a run's folder and the home folder's link to it."""
    drop_home_link(run)
    shutil.rmtree(run.path)


def drop_home_link(run: RunDir) -> None:
    """The home folder's link to a run kept under another run_root (only a link to that very run)."""
    link = runs_root() / run.name
    if link.is_symlink() and link.resolve() == run.path:
        link.unlink()
