"""A worker's /metrics (where the supervisor learns its instance ids) follows the one rule of
observability.targets: the same endpoint as its readiness probe's, on the path Prometheus scrapes."""

from __future__ import annotations

from slurmserve.config.recipe import builtin_recipe_names
from slurmserve.observability.targets import metrics_url

from ..conftest import plan_of


def test_a_workers_metrics_url_is_its_readiness_endpoints():
    for recipe in builtin_recipe_names():
        plan = plan_of(recipe, "four-node-8gpu.yaml")
        for process in plan.processes:
            if process.is_worker:
                assert process.ready_url and process.ready_url.endswith("/health"), (recipe, process.name)
                assert metrics_url(plan, process) == process.ready_url.removesuffix("/health") + "/metrics"
