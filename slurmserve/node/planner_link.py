"""`python -m slurmserve.node.planner_link RUN_DIR`: follows Dynamo's planner (virtual connector) for the
supervisor, as its child. Level-triggered, once a second: the planner's current decision becomes the counts
asked of the supervisor (requests/scale.json, as `slurmserve scale` asks), and once the supervisor has them
(workers ready and counted by the frontend) the decision is acknowledged; as failed when a worker it needs
could not start (the supervisor never tries one again). A planner restart (its decision ids
start again at 0) and a worker that died (the supervisor restarts it in place) need nothing more. Paused by
`slurmserve scale RUN --pause`. It ends with the supervisor (it watches its parent)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..planning.plan import Plan
from ..runs import RunDir
from ..runs.events import PlannerAcknowledged, PlannerDecided
from ..runs.records import PlannerDecision
from ..runtime.scaling import counts_met, decision_counts, decision_reason, unmeetable

POLL_S = 1.0
LOG_TAIL_BYTES = 65536  # the planner's log lines since its decision (a few per engine and interval)
# The planner's own ports: the link's runtime takes ephemeral ones.
PLANNER_OWN = ("DYN_SYSTEM_PORT", "DYN_TCP_RPC_PORT", "DYN_HEALTH_CHECK_ENABLED")


def log_tail(path: Path, size: int = LOG_TAIL_BYTES) -> str:
    """The end of a log, if this machine can read it (over SSH the planner's log is on its host)."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - size))
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def link_env(plan: Plan) -> dict[str, str]:
    """The planner's environment (discovery, namespace, advertised addresses) without its own ports."""
    return {key: value for key, value in plan.process("planner").env.items() if key not in PLANNER_OWN}


async def follow(run: RunDir, still_wanted: Callable[[], bool]) -> None:
    plan = run.plan()
    os.environ.update(link_env(plan))  # before Dynamo's import, which sets its logging up from it
    from dynamo._core import VirtualConnectorClient
    from dynamo.runtime import DistributedRuntime

    runtime = DistributedRuntime(asyncio.get_running_loop(), "etcd", "tcp", event_plane="zmq")
    client = VirtualConnectorClient(runtime, os.environ.get("DYN_NAMESPACE", "dynamo"))
    followed: tuple[int, dict[str, int]] | None = None
    acknowledged = False
    while still_wanted():
        decision = await client.get()
        # Dynamo 1.6.1's type stub leaves decision_id out of PlannerDecision; the object has it.
        ident: int = decision.decision_id  # type: ignore[attr-defined]
        if run.planner_paused:
            followed = None  # resumed, its current decision is asked again (counts by hand stood meanwhile)
        elif ident >= 0:
            counts = decision_counts(plan, decision.num_prefill_workers, decision.num_decode_workers)
            if (ident, counts) != followed:
                followed, acknowledged = (ident, counts), False
                reason = decision_reason(log_tail(run.path / plan.process("planner").log), ident)
                seen = PlannerDecision(decision_id=ident, counts=counts, at=time.time(), reason=reason)
                run.request_scale(counts)
                run.save_planner_decision(seen)
                run.record(PlannerDecided(decision_id=ident, counts=counts, reason=reason))
            state = run.supervisor_state() if not acknowledged else None
            failed = unmeetable(state, counts)
            if not acknowledged and (failed or counts_met(state, counts)):
                # Dynamo's connector has no "failed": the planner learns it from the counts it observes next.
                await client.complete(decision)
                acknowledged = True
                run.save_planner_decision(seen.model_copy(update={"acknowledged": True, "failed": failed}))
                run.record(PlannerAcknowledged(decision_id=ident, failed=failed))
        await asyncio.sleep(POLL_S)


if __name__ == "__main__":
    supervisor = os.getppid()
    asyncio.run(follow(RunDir(Path(sys.argv[1])), lambda: os.getppid() == supervisor))
