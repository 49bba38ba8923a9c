"""The in-job Prometheus on the head node."""

from __future__ import annotations

from ..plan import PROMETHEUS_CONFIG, PROMETHEUS_DATA, PROMETHEUS_READY_PATH, Process
from .common import PlanContext, log_of

# The in-job Prometheus keeps what it scraped for as long as the run directory lives (its default: 15 days,
# after which `metrics RUN --open` would find the data deleted).
PROMETHEUS_RETENTION = "10y"


def prometheus_process(ctx: PlanContext) -> Process:
    """The in-job Prometheus on the head node, beside etcd: it scrapes the run's targets from the start and
    keeps its data in the run directory, where `metrics RUN --open` finds it after the job."""
    address, port = ctx.head.address, ctx.ports.take(ctx.head.name)
    return Process(
        name="prometheus",
        role="prometheus",
        nodes=[ctx.head.name],
        ports={"http": port},
        command=[
            ctx.binaries.prometheus or "prometheus",
            f"--config.file={ctx.run_dir}/{PROMETHEUS_CONFIG}",
            f"--storage.tsdb.path={ctx.run_dir}/{PROMETHEUS_DATA}",
            f"--storage.tsdb.retention.time={PROMETHEUS_RETENTION}",
            f"--web.listen-address={address}:{port}",
        ],
        ready_url=f"http://{address}:{port}{PROMETHEUS_READY_PATH}",
        log=log_of("prometheus"),
    )
