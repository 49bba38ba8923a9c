"""The supervisor's checks that are no part of its tick's loop: the slow ones it runs in the background
(`Periodic`: the canary completion, the nodes' daemons) and what a dead process's log says."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..health.pools import pool_canary
from ..planning.plan import Plan, Process
from ..runs import CanaryResult, RunDir
from ..transport.http import canary_completion

CANARY_INTERVAL_S = 10.0  # the supervisor's completion through the frontend, this often (and one a pool)
LAST_LOG_LINE_CHARS = 200
LOG_LINES_SEARCHED = 20

Result = TypeVar("Result")


@dataclass
class Periodic(Generic[Result]):
    """A slow check run in the background every `interval` seconds; the tick takes its result when done."""

    interval: float
    due: float = 0.0
    running: Future[Result] | None = None

    def poll(self, threads: ThreadPoolExecutor, work: Callable[[], Result], now: float) -> Result | None:
        """Start the check when due; return its result once (None while none is new)."""
        if self.running is None:
            if now >= self.due:
                self.running = threads.submit(work)
            return None
        if not self.running.done():
            return None
        result, self.running, self.due = self.running.result(), None, now + self.interval
        return result


def send_canary(plan: Plan) -> tuple[CanaryResult, dict[str, CanaryResult]]:
    """A completion through the frontend: the deployment's canary, and each pool's behind a global router."""
    if plan.pools:
        return send_pool_canaries(plan)
    started = time.time()
    completion = canary_completion(plan.endpoint, plan.model)
    result = CanaryResult(
        ok=completion is not None,
        at=started,
        latency_s=round(time.time() - started, 3),
        error=None if completion else "no completion with generated tokens (an error, or no answer within 10 s)",
    )
    return result, {}


def send_pool_canaries(plan: Plan) -> tuple[CanaryResult, dict[str, CanaryResult]]:
    """One canary per pool, with targets the global router's grid sends there: served, and by that
    pool's workers. The deployment's canary fails when one pool's does."""
    started = time.time()
    results = {pool.name: pool_canary(plan, pool) for pool in plan.pools if pool.canary_targets}
    failed = [f"pool {name}: {result.error}" for name, result in results.items() if not result.ok]
    deployment = CanaryResult(
        ok=not failed,
        at=started,
        latency_s=max((result.latency_s for result in results.values()), default=0.0),
        error="; ".join(failed) or None,
    )
    return deployment, results


def exit_reason(run: RunDir, process: Process) -> str:
    """'exited', with the last error its log shows near the end (a SIGKILL leaves none)."""
    log = run.path / process.log
    tail = log.read_text(errors="replace").splitlines()[-LOG_LINES_SEARCHED:] if log.exists() else []
    error = next((line for line in reversed(tail) if "error" in line.lower() or "traceback" in line.lower()), None)
    return "exited" + (
        f"; its log: {error.strip()[:LAST_LOG_LINE_CHARS]}" if error else " (no error in its log: killed?)"
    )
