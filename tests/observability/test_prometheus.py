"""The in-job Prometheus for real (Debian's 2.42), on this machine and on the test cluster: with a client
sending requests, every target of a deployment (frontend, workers, etcd, Prometheus itself and the
supervisor) is up, every query of the shipped dashboard returns data, and a SIGKILLed worker, restarted
by the supervisor, is scraped again with its restart counted. After the job, `metrics RUN --open` serves
the saved data."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from slurmserve.observability.dashboard import panel_queries, shipped_dashboard
from slurmserve.runs import open_run

from ..helpers import ClientLoop, kill_and_recover, slurmserve, status_of, wait_until
from ..runtime.test_recovery_slurm import task_pid

pytestmark = pytest.mark.slow

# The mock engine exports no KV cache usage (real engines do): the one panel it leaves empty.
EMPTY_ON_THE_MOCK_ENGINE = {"KV cache usage by worker"}


def query(prometheus: str, expr: str) -> list[dict]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5.0).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def up_by_process(prometheus: str, run: str) -> dict[str, float]:
    return {r["metric"]["process"]: float(r["value"][1]) for r in query(prometheus, f'up{{run="{run}"}}')}


def crash_restarts(prometheus: str, run: str, process: str) -> float:
    expr = f'slurmserve_restarts_total{{run="{run}",process_name="{process}",cause="crash"}}'
    return sum(float(r["value"][1]) for r in query(prometheus, expr))


def panels_without_data(prometheus: str, run: str) -> list[str]:
    """The dashboard's queries that return no series, or only NaN (a quantile of nothing)."""
    empty = []
    for title, expr in panel_queries(shipped_dashboard()):
        found = query(prometheus, expr.replace("$run", run))
        if not any(math.isfinite(float(r["value"][1])) for r in found):
            empty.append(title)
    return empty


def check_prometheus(run: str, worker: str, kill_pid: Callable[[str, str], int], *argv: str) -> str:
    """Deploy with the in-job Prometheus; check targets, dashboard queries and a worker's restart."""
    sets = ["--set", "observability.prometheus=true", "--set", "observability.scrape_interval_s=1"]
    result = slurmserve("submit", *argv, *sets, "--name", run, "--timeout", "180")
    assert result.returncode == 0, result.stdout + result.stderr
    plan = open_run(run).plan()
    prometheus = plan.prometheus_url
    assert prometheus and status_of(run)["prometheus"] == prometheus
    assert f"Prometheus {prometheus}" in slurmserve("status", run).stdout
    all_up = dict.fromkeys([p.name for p in plan.processes if p.role != "nats"] + ["supervisor"], 1.0)
    with ClientLoop(plan.endpoint, plan.model) as client:
        assert wait_until(lambda: up_by_process(prometheus, run) == all_up, 40), up_by_process(prometheus, run)
        # Rates and quantiles need two scrapes with requests between them.
        assert wait_until(lambda: set(panels_without_data(prometheus, run)) <= EMPTY_ON_THE_MOCK_ENGINE, 40), (
            panels_without_data(prometheus, run)
        )
        kill_and_recover(run, worker, kill_pid(run, worker), client)
        assert wait_until(lambda: crash_restarts(prometheus, run, worker) == 1, 30)
        assert wait_until(lambda: up_by_process(prometheus, run) == all_up, 30), up_by_process(prometheus, run)
    return prometheus


def local_pid(run: str, process: str) -> int:
    pid = open_run(run).pid(process)
    assert pid
    return pid


def test_the_job_prometheus_scrapes_every_target_and_its_data_opens_after_the_job(prometheus_binary, cancel_later):
    cancel_later("prom-local")
    live_url = check_prometheus("prom-local", "agg-0", local_pid, "--recipe", "mocker-agg")
    # While the job runs, --open points at its own Prometheus.
    live = slurmserve("metrics", "prom-local", "--open")
    assert live.returncode == 0 and f"Prometheus is live at {live_url}" in live.stdout, live.stdout
    assert slurmserve("cancel", "prom-local").returncode == 0
    # After the job: the saved data, served again here until a TERM (or Ctrl-C).
    opened = subprocess.Popen(
        [sys.executable, "-m", "slurmserve", "metrics", "prom-local", "--open"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert opened.stdout is not None
        found = re.search(r"http://127\.0\.0\.1:\d+", opened.stdout.readline())
        assert found, "metrics --open printed no URL"
        url = found.group(0)
        served = query(url, 'max_over_time(dynamo_frontend_requests_total{run="prom-local"}[1h])')
        assert sum(float(r["value"][1]) for r in served) > 10
        restarts = 'max_over_time(slurmserve_restarts_total{run="prom-local",process_name="agg-0",cause="crash"}[1h])'
        assert [float(r["value"][1]) for r in query(url, restarts)] == [1.0]
    finally:
        opened.send_signal(signal.SIGTERM)
        assert opened.wait(timeout=30) == 0
    with pytest.raises(httpx.HTTPError):  # the Prometheus it started is gone with it
        httpx.get(f"{url}/-/ready", timeout=2.0)


def test_the_job_prometheus_on_the_test_cluster_keeps_restarted_workers_scraped(slurm_lab, cancel_later):
    cancel_later("prom-lab")
    hosts = str(slurm_lab.hosts_file("slurm"))
    check_prometheus("prom-lab", "decode-0", task_pid, "--recipe", "mocker-disagg", "--hosts", hosts)
    assert slurmserve("cancel", "prom-lab").returncode == 0
