"""KV-aware routing rehearsed for real on this machine: Dynamo's frontend and two mock workers (which publish
KV events), groups of requests each sharing a long prompt prefix. Under router_mode kv each group's requests
go to one worker; under round-robin they alternate. Counted from the workers' own /metrics
(dynamo_component_requests_total of their generate endpoint); `status` shows the KV hit rate."""

from __future__ import annotations

import random

import httpx
import pytest

from slurmserve.observability.live import WORKER_REQUESTS
from slurmserve.observability.metrics import samples, total
from slurmserve.runs import open_run

from ..helpers import slurmserve, status_of, wait_until

pytestmark = pytest.mark.slow

GROUPS = 4
PER_GROUP = 12  # the supervisor's canary (1 every 10 s) may land among a group's: at most 1 in 13
PREFIX_WORDS = 600  # about 2,200 tokens of the tiny model: 34 KV blocks of 64 shared by a group
WORDS = "health combine flower say praise tower note seven square rose eagle file problem fire run".split()


def served_per_worker(run: str) -> dict[str, float]:
    plan = open_run(run).plan()
    workers = [process for process in plan.processes if process.role == "agg"]
    return {
        worker.name: total(
            samples(f"http://{plan.host_node(worker).address}:{worker.ports['system']}/metrics"),
            WORKER_REQUESTS,
            dynamo_endpoint="generate",
        )
        for worker in workers
    }


def largest_shares(run: str) -> list[float]:
    """For each group of requests sharing a prefix, the share of them its busiest worker served."""
    plan = open_run(run).plan()
    rng = random.Random(26)
    shares = []
    for _ in range(GROUPS):
        prefix = " ".join(rng.choice(WORDS) for _ in range(PREFIX_WORDS))
        before = served_per_worker(run)
        for n in range(PER_GROUP):
            question = f"{prefix} question {n}: {rng.choice(WORDS)}?"
            body = {"model": plan.model, "messages": [{"role": "user", "content": question}], "max_tokens": 8}
            assert httpx.post(f"{plan.endpoint}/v1/chat/completions", json=body, timeout=30).status_code == 200
        served = {name: count - before[name] for name, count in served_per_worker(run).items()}
        shares.append(max(served.values()) / sum(served.values()))
    return shares


def deploy(run: str, router_mode: str) -> None:
    sets = ["--set", "agg.replicas=2", "--set", f"frontend.router_mode={router_mode}"]
    result = slurmserve("submit", "--recipe", "mocker-agg", *sets, "--name", run, "--timeout", "120")
    assert result.returncode == 0, result.stdout + result.stderr


def test_under_kv_each_prefix_group_stays_on_one_worker_and_status_shows_the_hit_rate(cancel_later):
    cancel_later("kv-route")
    deploy("kv-route", "kv")
    assert wait_until(lambda: status_of("kv-route").get("metrics") is not None, 30)
    shares = largest_shares("kv-route")
    assert all(share >= 0.9 for share in shares), shares
    finished = status_of("kv-route")["metrics"]["at"]
    assert wait_until(lambda: status_of("kv-route")["metrics"]["at"] > finished + 1, 20)
    live = status_of("kv-route")["metrics"]
    # A group's first request finds nothing cached; the rest find the shared prefix on their worker.
    assert live["kv_hit_rate"] > 0.7, live
    assert live["kv_hit_rate_from"].startswith("dynamo_frontend_cached_tokens_sum")
    assert "KV hit rate" in slurmserve("status", "kv-route").stdout


def test_under_round_robin_each_prefix_group_is_split_across_the_workers(cancel_later):
    cancel_later("rr-route")
    deploy("rr-route", "round-robin")
    shares = largest_shares("rr-route")
    assert all(0.4 <= share <= 0.6 for share in shares), shares  # about 1/2 with two workers
