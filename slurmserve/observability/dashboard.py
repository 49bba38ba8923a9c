"""The Grafana dashboard slurmserve ships (`grafana-dashboard.json`, beside this module): the deployment's
serving figures, per role and per worker, KV cache, and the supervisor's restarts. Its queries select a
run by the `run` label every target of slurmserve's carries, so one dashboard serves every deployment."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

DASHBOARD_FILE = Path(__file__).with_name("grafana-dashboard.json")


def shipped_dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD_FILE.read_text()))


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, rows excluded."""
    for panel in dashboard["panels"]:
        for query in panel.get("targets", []):
            yield panel["title"], query["expr"]


def datasource_uid(run: str) -> str:
    return f"slurmserve-{run}"


def dashboard_for(run: str, own_prometheus: bool = True) -> dict[str, Any]:
    """The shipped dashboard set on one run: the run selected, and its own Prometheus as the datasource (by
    the uid that `datasource_provisioning` gives it); without one, Grafana's default Prometheus (no uid
    that nothing provides)."""
    dashboard = shipped_dashboard()
    chosen = {"datasource": datasource_uid(run) if own_prometheus else None, "run": run}
    for variable in dashboard["templating"]["list"]:
        value = chosen[variable["name"]]
        variable["current"] = {"text": value, "value": value} if value else {}
    dashboard["uid"] = f"{dashboard['uid']}-{run}"[:40]  # Grafana's limit on uids
    dashboard["title"] = f"{dashboard['title']}: {run}"
    return dashboard


def datasource_provisioning(run: str, prometheus_url: str) -> str:
    """A Grafana provisioning file (datasources/) for the run's Prometheus, under the uid the dashboard uses."""
    source = {"name": f"slurmserve {run}", "type": "prometheus", "uid": datasource_uid(run), "url": prometheus_url}
    return yaml.safe_dump({"apiVersion": 1, "datasources": [source | {"access": "proxy"}]}, sort_keys=False)
