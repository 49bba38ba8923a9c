"""KV-aware routing rehearsed for real on this machine: Dynamo's frontend and two mock workers (which publish
KV events), groups of requests each sharing a long prompt prefix. Under router_mode kv each group's requests
go to one worker; under round-robin they alternate. Counted from the workers' own /metrics
(dynamo_component_requests_total of their generate endpoint); `status` shows the KV hit rate."""

from __future__ import annotations

import httpx
import pytest

from slurmserve.bench.workload import shared_prefix_prompts
from slurmserve.observability.metrics import requests_served
from slurmserve.runs import open_run

from ..helpers import slurmserve, status_of, wait_until

pytestmark = pytest.mark.slow

GROUPS = 4
PER_GROUP = 12  # the supervisor's canary (1 every 10 s) may land among a group's: at most 1 in 13
PREFIX_WORDS = 600  # about 2,200 tokens of the tiny model: 34 KV blocks of 64 shared by a group


def largest_shares(run: str, role: str = "agg") -> list[float]:
    """For each group of requests sharing a prefix (sent one group after the other), the share of them the
    busiest worker of `role` served."""
    plan = open_run(run).plan()
    prompts = shared_prefix_prompts(GROUPS, PER_GROUP, PREFIX_WORDS, seed=26)
    shares = []
    for group in range(GROUPS):
        before = requests_served(plan, role)
        for _, prompt in (item for item in prompts if item[0] == group):
            body = {"model": plan.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 8}
            assert httpx.post(f"{plan.endpoint}/v1/chat/completions", json=body, timeout=30).status_code == 200
        served = [count - before[name] for name, count in requests_served(plan, role).items()]
        shares.append(max(served) / sum(served))
    return shares


TWO_AGG_WORKERS = ("agg.replicas=2",)
# Two prefill and two decode workers of two (simulated) GPUs each: eight, as many as this machine's.
TWO_OF_EACH = tuple(
    f"{role}.{key}"
    for role in ("prefill", "decode")
    for key in ("replicas=2", "tensor_parallel=2", "expert_parallel=2")
)


def deploy(run: str, router_mode: str, recipe: str = "mocker-agg", sets: tuple[str, ...] = TWO_AGG_WORKERS) -> None:
    flags = [word for s in (*sets, f"frontend.router_mode={router_mode}") for word in ("--set", s)]
    result = slurmserve("submit", "--recipe", recipe, *flags, "--name", run, "--timeout", "120")
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


def test_in_disagg_mode_kv_routes_the_prefill_workers(cancel_later):
    """The mock engine's decode workers publish no KV events (Dynamo's design: the prompt's KV cache is
    built by prefill), so in disagg mode it is the prefill workers whose choice follows the prefix."""
    cancel_later("kv-disagg")
    deploy("kv-disagg", "kv", "mocker-disagg", TWO_OF_EACH)
    shares = largest_shares("kv-disagg", "prefill")
    assert all(share >= 0.9 for share in shares), shares
