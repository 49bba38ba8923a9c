"""What `submit` shows while it waits: where the deployment is (queued and why, staging the model, each
role's readiness) and for how long, instead of a fixed "starting...". On a terminal a spinner line that
changes in place; on a pipe (a log, CI) a line per change."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..planning.plan import Plan
from ..runtime.launch import SubmitProgress
from .output import console

LOOK_EVERY_S = 1.0  # a look asks the scheduler (squeue on Slurm): not more often than `status --watch`


@contextmanager
def progress_shown(plan: Plan) -> Iterator[None]:
    """Shows where the submitted deployment is until the block ends."""
    progress, done = SubmitProgress(plan), threading.Event()
    if console.is_terminal:
        spinner = console.status(f"submitting run {plan.run_name}...")
        with spinner, following(progress, done, lambda where: spinner.update(f"[{progress.elapsed_s:.0f} s] {where}")):
            yield
        return
    last: list[str] = []

    def on_change(where: str) -> None:
        if last != [where]:
            last[:] = [where]
            console.print(f"[{progress.elapsed_s:.0f} s] {where}", highlight=False)

    with following(progress, done, on_change):
        yield


@contextmanager
def following(progress: SubmitProgress, done: threading.Event, say: Callable[[str], None]) -> Iterator[None]:
    """A thread telling `say` where the deployment is, every LOOK_EVERY_S, until the block ends."""

    def follow() -> None:
        while not done.is_set():
            try:
                say(progress.where())
            except Exception:
                pass
            done.wait(LOOK_EVERY_S)

    thread = threading.Thread(target=follow, name="submit-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(LOOK_EVERY_S * 5)
