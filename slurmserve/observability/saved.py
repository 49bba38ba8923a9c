"""The `metrics` verbs: a run's Prometheus targets, its in-job Prometheus (live, or opened afterwards on
the data it saved in the run directory) and the Grafana dashboard set on it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DeploymentFailed, UserError
from ..planning.plan import PROMETHEUS_READY_PATH, Plan
from ..private import lock_record, make_private_dir, take_lock, write_private
from ..runs import RunDir
from ..transport.http import http_ok
from ..waiting import wait_until
from .dashboard import dashboard_for, datasource_provisioning
from .prometheus import OpenedData, free_port, open_saved, open_url
from .targets import file_sd_targets


def metrics_targets(run: RunDir) -> tuple[Path, list[dict[str, Any]]]:
    """The run's Prometheus targets (file_sd), written into its folder as the supervisor keeps them."""
    if run.ended:
        raise UserError(f"run {run.name} has ended: it has no metrics endpoints any more")
    state = run.supervisor_state()
    groups = file_sd_targets(run.plan(), state.metrics_endpoint if state else None)
    run.save_targets(groups)
    return run.paths.targets, groups


def run_prometheus(run: RunDir) -> tuple[Plan, str]:
    """The run's plan and its in-job Prometheus's URL; exit 2 when the recipe asked for none."""
    plan = run.plan()
    if plan.prometheus_url is None:
        raise UserError(
            f"run {run.name} has no Prometheus of its own: set observability.prometheus: true in its recipe "
            "(or --set observability.prometheus=true), or point a Prometheus at `slurmserve metrics RUN`'s targets"
        )
    return plan, plan.prometheus_url


@dataclass
class SavedMetrics:
    """Where a run's Prometheus data can be queried: its live server, or one opened on the saved data."""

    url: str
    opened: OpenedData | None  # None: the run's own Prometheus still serves, or another `metrics --open`
    elsewhere: bool = False  # another `metrics --open` serves the saved data: at `url`


def open_metrics(run: RunDir) -> SavedMetrics:
    """The run's Prometheus while it serves; after the job, a Prometheus on this machine serving the data
    it saved in the run directory (close it with `.opened.close()`)."""
    plan, live_url = run_prometheus(run)
    if http_ok(live_url + PROMETHEUS_READY_PATH):
        return SavedMetrics(live_url, None)
    if not run.paths.prometheus_data.is_dir():
        raise UserError(f"run {run.name} saved no Prometheus data ({run.paths.prometheus_data} is missing)")
    configured = plan.process("prometheus").command[0]
    binary = shutil.which(configured)
    if binary is None:
        raise UserError(f"cannot open run {run.name}'s data: {configured} is not here")
    # One Prometheus at a time on the data (a second would replay, and remove, the first's write-ahead log).
    lock, port = run.paths.open_lock, free_port()
    holder = take_lock(lock, open_url(port))
    if holder is None:  # its URL follows its lock at once
        wait_until(lambda: bool(lock_record(lock)), 2.0)
        return SavedMetrics(lock_record(lock), None, elsewhere=True)
    opened_log = run.paths.prometheus_open_log
    make_private_dir(opened_log.parent)  # a run directory whose logs/ was removed
    opened = open_saved(binary, run.path, opened_log, port, holder)
    if opened is None:
        raise DeploymentFailed(f"Prometheus did not start on {run.paths.prometheus_data}: see {opened_log}")
    return SavedMetrics(opened.url, opened)


def grafana_dashboard(run: RunDir) -> tuple[dict[str, Any], str]:
    """The shipped dashboard set on the run, and where its data comes from in words. With an in-job
    Prometheus, the Grafana provisioning file that makes it the dashboard's datasource is written in the
    run directory; without one, the words say how to give the dashboard data."""
    plan = run.plan()
    dashboard = dashboard_for(run.name, own_prometheus=plan.prometheus_url is not None)
    if plan.prometheus_url is None:
        return dashboard, (
            f"run {run.name} has no Prometheus of its own, so no datasource file was written: import the dashboard "
            f"into a Grafana whose Prometheus scrapes the targets file of `slurmserve metrics {run.name}` and pick "
            "that Prometheus at the top of the dashboard, or submit with --set observability.prometheus=true "
            "for a Prometheus of the run's own"
        )
    path = run.paths.datasource
    make_private_dir(path.parent)
    write_private(path, datasource_provisioning(run.name, plan.prometheus_url))
    return dashboard, f"its datasource: {path} (Grafana provisioning)"
