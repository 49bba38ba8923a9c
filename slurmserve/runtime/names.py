"""Run names taken again, and runs removed: only a run that its backend says is stopped (nothing of it
runs, nor can start again) is set aside or removed."""

from __future__ import annotations

import time

from ..backends import backend_for
from ..errors import UserError
from ..planning.plan import Plan
from ..runs import RunDir, aside_path, list_runs, name_holders, remove_run, set_aside


def stopped(run: RunDir) -> bool:
    """Nothing of the run runs, nor can start again, as its backend sees it: only such a run is set aside
    (its name taken again) or removed."""
    return backend_for(run.plan().backend).finished(run)


def take_name(plan: Plan) -> None:
    """Free the plan's run name: a stopped run holding it is set aside (renamed with its start time, still
    readable by `status` and `logs`); a live one keeps it (exit 2)."""
    for held in name_holders(plan):
        if held.is_symlink() and not held.exists():  # the home folder's link to a run removed by hand
            held.unlink()
            continue
        run = RunDir(held.resolve())
        if not run.paths.plan.exists():
            raise UserError(
                f"--name {plan.run_name}: {held} is in the way and holds no run: remove it, or choose another name"
            )
        if not stopped(run):
            raise UserError(
                f"--name {plan.run_name}: run {run.name} ({run.path}) is live: cancel it first "
                f"(slurmserve cancel {run.name}), or choose another name"
            )
        target = aside_path(run)
        backend_for(run.plan().backend).move_run_dir(run.plan(), str(target))
        set_aside(run, target)


def remove(runs: list[RunDir]) -> None:
    """Delete stopped runs' folders; refuses (exit 2, nothing removed) when any of them is live."""
    live = [run.name for run in runs if not stopped(run)]
    if live:
        raise UserError(
            f"live run(s) {', '.join(live)}: cancel first (slurmserve cancel RUN), then remove; nothing was removed"
        )
    for run in runs:
        remove_run(run)


def prune(older_than_s: float) -> list[str]:
    """Remove every stopped run that has recorded nothing for `older_than_s` seconds; their names."""
    cutoff = time.time() - older_than_s
    old = [run for run in list_runs() if run.last_active() < cutoff and stopped(run)]
    for run in old:
        remove_run(run)
    return [run.name for run in old]
