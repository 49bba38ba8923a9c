"""Waiting for a submitted deployment: until it serves (the frontend sees every planned worker, lists the
model and completes a request), or until it fails, when everything is stopped and the reason said. And
where it is meanwhile (SubmitProgress), for `submit` to show."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends import backend_for
from ..backends.base import Backend, Launch
from ..errors import DeploymentFailed
from ..planning.plan import FRONTEND_COMPONENT_OF_ROLE, Plan
from ..runs import ProcessState, RunDir, SupervisorState
from ..runs.events import Failed
from ..transport.http import canary_completion, http_ok, model_listed, workers_seen
from ..waiting import throttled, wait_until

LIVENESS_CHECK_INTERVAL_S = 1.0  # asking a scheduler costs more than an HTTP probe
LAUNCHER_REPORT_S = 5.0  # how long a launcher gets to report a failure submit saw first


def wait_for_deployment(backend: Backend, launch: Launch, run: RunDir, plan: Plan, timeout: float) -> dict[str, Any]:
    """Wait until the deployment serves (the sample completion), or fail: a process died, the launch
    failed, or the deadline passed. A failure stops everything first."""

    def dead() -> list[str]:
        return [name for name, alive in backend.alive(run).items() if alive is False]

    def going() -> bool:
        return not dead() and launch.failure() is None

    missing, sample = wait_serving(plan, timeout, throttled(going, LIVENESS_CHECK_INTERVAL_S))
    if sample is not None:
        return sample
    launch.settle(LAUNCHER_REPORT_S)
    gone, launch_failure = dead(), launch.failure()
    leftovers = backend.stop(run)
    lacking = run.preflight_report()
    if lacking:
        run.record(Failed(preflight=lacking))
        raise DeploymentFailed(
            f"run {plan.run_name}: the node preflight failed, nothing was started:\n"
            + "\n".join(f"  {line}" for line in lacking)
            + (f"\n(still running: {', '.join(leftovers)})" if leftovers else "")
        )
    run.record(Failed(waiting_for=missing, dead=gone, timeout_s=None if gone or launch_failure else timeout))
    if gone:
        reason = ", ".join(f"{name} exited" for name in gone)
    elif launch_failure:
        reason = "the launch failed"
    else:
        reason = f"the start timed out (not ready within --timeout {timeout:g} s)"
    raise DeploymentFailed(
        f"run {plan.run_name}: {reason} while waiting for {missing}; everything was stopped"
        + (f" except {', '.join(leftovers)}" if leftovers else "")
        + f". Logs: {run.paths.logs}"
        + launcher_tail(run)
    )


def wait_serving(
    plan: Plan, timeout: float, still_worth_waiting: Callable[[], bool]
) -> tuple[str, dict[str, Any] | None]:
    """Wait until the frontend sees every planned worker, lists the model and completes a request.

    Returns ("", that completion) when serving, else (what was still missing at the deadline, None).
    """
    expected: dict[str, int] = {}
    for role, count in plan.workers_expected.items():
        component = FRONTEND_COMPONENT_OF_ROLE[role]
        expected[component] = expected.get(component, 0) + count
    sample: dict[str, Any] | None = None

    def completes() -> bool:
        nonlocal sample
        sample = canary_completion(plan.endpoint, plan.model)
        return sample is not None

    checks = [
        ("frontend answering", lambda: http_ok(f"{plan.endpoint}/health")),
        (
            "workers registered with the frontend",
            lambda: all(workers_seen(plan.endpoint)[c] >= n for c, n in expected.items()),
        ),
        (f"model {plan.model} listed", lambda: model_listed(plan.endpoint, plan.model)),
        # Listed is not yet routable (a known Dynamo race): only a real completion proves it.
        ("a completion with generated tokens", completes),
    ]
    deadline = time.monotonic() + timeout
    for label, check in checks:
        if not wait_until(check, max(0.0, deadline - time.monotonic()), still_worth_waiting):
            return label, None
    return "", sample


def launcher_tail(run: RunDir, lines: int = 15) -> str:
    """The end of the launcher's own output: where a failed readiness probe says what it saw."""
    path = run.paths.launcher_log
    text = path.read_text(errors="replace").strip() if path.exists() else ""
    return f"\n--- last lines of {path}:\n" + "\n".join(text.splitlines()[-lines:]) if text else ""


class SubmitProgress:
    """Where a submitted deployment is, in one line, read from its run directory (the supervisor's state),
    its scheduler and the model cache: queued (and why), staging the model (bytes so far and the rate),
    each role's readiness; after the time since submit began."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.run = RunDir(Path(plan.run_dir))
        self.backend = backend_for(plan.backend)
        self.began = time.monotonic()
        self.staged: tuple[float, int] | None = None  # (when, bytes) at the last look

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.began

    def where(self) -> str:
        scheduler = self.backend.scheduler(self.run)
        if scheduler.queued:
            return f"queued: {scheduler.description}"
        state = self.run.supervisor_state()
        staging = self.staging() if state is None or not any_started(state) else None
        if staging:
            return staging
        return readiness(self.plan, state) if state else "launching"

    def staging(self) -> str | None:
        """The model's bytes downloaded so far and the rate since the last look, while a stager works."""
        stage = self.plan.model_stage
        if stage is None:
            return None
        # Imported when a model stages: huggingface_hub's import is a tenth of a second on every submit's
        # way to sbatch otherwise.
        from ..modelcache.snapshots import staging_root

        folder = staging_root(Path(stage.cache), stage.repo, stage.revision)
        if not folder.exists():
            return None
        now, size = time.monotonic(), folder_bytes(folder)
        before, self.staged = self.staged, (now, size)
        rate = f", {(size - before[1]) / (now - before[0]) / 1e6:.0f} MB/s" if before and now > before[0] else ""
        return f"staging model {stage.repo}: {size / 1e6:,.0f} MB{rate}"


def any_started(state: SupervisorState) -> bool:
    return any(watch.state is not ProcessState.PENDING for watch in state.processes.values())


def readiness(plan: Plan, state: SupervisorState) -> str:
    """Each role in start order, as ready of planned: `etcd ready, prefill 0/1, decode 1/1 ready`."""
    roles: dict[str, list[bool]] = {}
    for process in plan.launched:
        watch = state.processes.get(process.name)
        roles.setdefault(process.role, []).append(watch is not None and watch.state is ProcessState.READY)
    return ", ".join(role_readiness(role, ready) for role, ready in roles.items())


def role_readiness(role: str, ready: list[bool]) -> str:
    if all(ready):
        return f"{role} ready" if len(ready) == 1 else f"{role} {len(ready)}/{len(ready)} ready"
    return f"{role} {sum(ready)}/{len(ready)}"


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under a folder, those that vanish while counted (a stager moving them) aside."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            total += path.stat().st_size if path.is_file() else 0
    return total
