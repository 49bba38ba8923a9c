"""Health per pool behind Dynamo's global router: a canary whose SLA targets the router's grid sends to
the pool must be served by that pool's own workers, as their request counters (`/metrics`) show."""

from __future__ import annotations

import time

from ..observability.metrics import samples, total
from ..observability.targets import metrics_url
from ..planning.plan import Plan, PlanPool
from ..runs import CanaryResult
from ..transport.http import canary_completion


def served_by(plan: Plan, pool: PlanPool) -> float | None:
    """Requests the pool's workers have served (their `generate` endpoint's counters); None when one does
    not answer."""
    counts = []
    for name in pool.workers:
        url = metrics_url(plan, plan.process(name))
        found = samples(url) if url else None
        if found is None:
            return None
        counts.append(total(found, "dynamo_component_requests_total", dynamo_endpoint="generate"))
    return sum(counts)


def pool_canary(plan: Plan, pool: PlanPool) -> CanaryResult:
    started = time.time()
    before = served_by(plan, pool)
    completion = canary_completion(plan.endpoint, plan.model, pool.canary_targets)
    latency = round(time.time() - started, 3)
    after = served_by(plan, pool)
    if completion is None:
        error: str | None = f"no completion with targets {pool.canary_targets} (an error, or no answer within 10 s)"
    elif before is None or after is None:
        error = "a worker of the pool does not answer /metrics"
    elif after <= before:
        error = f"the global router did not send a request with targets {pool.canary_targets} to this pool"
    else:
        error = None
    return CanaryResult(ok=error is None, at=started, latency_s=latency, error=error)
