"""`metrics`: a run's Prometheus targets, its Prometheus (live, or its saved data served again), its
Grafana dashboard."""

from __future__ import annotations

import json
import signal

import typer

from .. import deploy
from ..runs import RunDir, open_run
from .exits import clean_errors
from .output import console, stderr


@clean_errors
def metrics(
    run: str,
    as_json_: bool = typer.Option(False, "--json", help="Print the targets (file_sd JSON)"),
    open_: bool = typer.Option(False, "--open", help="Serve the run's saved Prometheus data here, until Ctrl-C"),
    grafana: bool = typer.Option(False, "--grafana", help="Print the Grafana dashboard set on this run"),
) -> None:
    """The run's Prometheus targets: every /metrics endpoint (frontend, workers, etcd, the supervisor),
    labelled with run, recipe, role, process, node and backend, in file_sd format (RUN_DIR/prometheus/targets.json).
    With --open, the run's own Prometheus (observability.prometheus): live, or its saved data served again."""
    found = open_run(run)
    if grafana:
        dashboard, source = deploy.grafana_dashboard(found)
        print(json.dumps(dashboard, indent=2))
        stderr.print(f"Grafana dashboard for run {run}; {source}", highlight=False)
        return
    if open_:
        serve_saved_metrics(found)
        return
    path, groups = deploy.metrics_targets(found)
    if as_json_:
        print(json.dumps(groups, indent=2))
        return
    console.print(f"{len(groups)} targets in {path} (a Prometheus file_sd_configs file; kept while the run lives)")


def serve_saved_metrics(run: RunDir) -> None:
    saved = deploy.open_metrics(run)
    if saved.elsewhere:
        console.print(
            f"run {run.name}'s saved metrics are already served at [bold]{saved.url}[/] (by another metrics --open)"
        )
        return
    if saved.opened is None:
        console.print(f"run {run.name}'s Prometheus is live at [bold]{saved.url}[/]")
        return
    # Before the URL is out: a TERM stops the server it started (as Ctrl-C does) from the moment it is known.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        console.print(f"run {run.name}'s saved metrics at [bold]{saved.url}[/] (Ctrl-C to stop)", highlight=False)
        saved.opened.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        saved.opened.close()
