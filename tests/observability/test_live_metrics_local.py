"""Live serving metrics end to end, on this machine and on the test cluster: with a client streaming
requests, `status --json` carries request rates, TTFT percentiles and per-worker figures that agree with
the frontend's and the worker's own /metrics; `metrics RUN --json` lists every /metrics endpoint."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from slurmserve.observability.live import TTFT, buckets, quantile
from slurmserve.observability.metrics import samples, total
from slurmserve.runs import open_run

from ..helpers import slurmserve, status_of, wait_until

pytestmark = pytest.mark.slow


def stream_requests(endpoint: str, model: str, stop: threading.Event) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True}
    while not stop.is_set():
        with httpx.stream("POST", f"{endpoint}/v1/chat/completions", json=body, timeout=5.0) as response:
            for _ in response.iter_lines():
                pass


def check_live_figures(run: str, recipe: str, worker_name: str, *hosts: str) -> list[dict]:
    """Deploy, stream requests for 12 s, check status's figures against /metrics; the run's targets."""
    result = slurmserve("submit", "--recipe", recipe, *hosts, "--name", run, "--timeout", "120")
    assert result.returncode == 0, result.stdout + result.stderr
    plan = open_run(run).plan()
    worker = plan.process(worker_name)
    worker_metrics = f"http://{plan.host_node(worker).address}:{worker.ports['system']}/metrics"
    assert wait_until(lambda: status_of(run).get("metrics") is not None, 30)
    before, worker_before = samples(f"{plan.endpoint}/metrics"), samples(worker_metrics)
    stop = threading.Event()
    client = threading.Thread(target=stream_requests, args=(plan.endpoint, plan.model, stop))
    client.start()
    threading.Event().wait(12.0)
    stop.set()
    client.join()
    after, worker_after = samples(f"{plan.endpoint}/metrics"), samples(worker_metrics)
    assert before and after and worker_before and worker_after
    finished = status_of(run)["metrics"]["at"]
    assert wait_until(lambda: status_of(run)["metrics"]["at"] > finished + 1, 20)
    live = status_of(run)["metrics"]
    sent = total(after, "dynamo_frontend_requests_total") - total(before, "dynamo_frontend_requests_total")
    # The supervisor's window holds the client's requests, and perhaps a canary or two besides.
    assert sent > 20 and abs(live["requests_per_s"] * live["window_s"] - sent) <= 4, (live, sent)
    ours = quantile(0.5, {b: n - buckets(before, TTFT).get(b, 0.0) for b, n in buckets(after, TTFT).items()})
    assert ours is not None and live["ttft_ms"]["p50"] == pytest.approx(ours * 1000, rel=0.5)
    generate = {"dynamo_endpoint": "generate"}
    served = total(worker_after, "dynamo_component_requests_total", **generate) - total(
        worker_before, "dynamo_component_requests_total", **generate
    )
    assert abs(live["workers"][worker_name]["requests_per_s"] * live["window_s"] - served) <= 4
    assert live["output_tokens_per_s"] > 0 and live["trend"]
    assert "serving (last" in slurmserve("status", run).stdout
    targets = json.loads(slurmserve("metrics", run, "--json").stdout)
    assert all(httpx.get(f"http://{g['targets'][0]}/metrics").status_code == 200 for g in targets)
    return targets


def test_status_carries_live_figures_that_agree_with_the_frontends_metrics(cancel_later):
    cancel_later("live")
    targets = check_live_figures("live", "mocker-agg", "agg-0")
    by_process = {group["labels"]["process"]: group for group in targets}
    assert set(by_process) == {"agg-0", "frontend", "supervisor"}  # one local host: file discovery, no etcd
    assert by_process["agg-0"]["labels"] == {
        "run": "live",
        "recipe": "mocker-agg",
        "role": "agg",
        "process": "agg-0",
        "node": open_run("live").plan().nodes[0].name,
        "backend": "local",
    }
    assert slurmserve("cancel", "live").returncode == 0
    assert not open_run("live").paths.targets.exists()  # a Prometheus globbing run directories lets it go


def test_on_the_test_cluster_the_supervisor_in_the_job_reports_the_same(slurm_lab, cancel_later):
    cancel_later("lab-live")
    targets = check_live_figures("lab-live", "mocker-disagg", "decode-0", "--hosts", str(slurm_lab.hosts_file("slurm")))
    labels = {group["labels"]["process"]: group["labels"] for group in targets}
    # NATS has no Prometheus endpoint; the supervisor serves its own, inside the job on the head node.
    assert set(labels) == {"etcd", "prefill-0", "decode-0", "frontend", "supervisor"}
    assert labels["decode-0"]["node"] == "node2" and labels["etcd"]["backend"] == "slurm"
    assert labels["supervisor"]["node"] == "node1"
    assert open_run("lab-live").paths.targets.exists()  # written by the supervisor inside the job
