"""Live serving metrics, fast parts: the exposition format read by prometheus_client's parser, rates from
counter deltas, percentiles from histogram bucket deltas."""

from __future__ import annotations

import os
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from slurmserve.config.recipe import builtin_recipe_names
from slurmserve.observability.live import Reading, frontend_reading, quantile, summarize, worker_live, worker_reading
from slurmserve.runs import create_run, run_dir_for

from ..conftest import plan_of

FRONTEND = """# TYPE dynamo_frontend_requests_total counter
dynamo_frontend_requests_total{{model="m",request_type="stream",status="success"}} {requests}
dynamo_frontend_requests_total{{model="m",request_type="unary",status="success"}} 1
# TYPE dynamo_frontend_inflight_requests gauge
dynamo_frontend_inflight_requests{{model="m"}} 3
# TYPE dynamo_frontend_queued_requests gauge
dynamo_frontend_queued_requests{{model="m"}} 1
# TYPE dynamo_frontend_output_sequence_tokens histogram
dynamo_frontend_output_sequence_tokens_sum{{model="m"}} {tokens}
dynamo_frontend_output_sequence_tokens_count{{model="m"}} {requests}
# TYPE dynamo_frontend_time_to_first_token_seconds histogram
dynamo_frontend_time_to_first_token_seconds_bucket{{model="m",le="0.01"}} {fast}
dynamo_frontend_time_to_first_token_seconds_bucket{{model="m",le="0.1"}} {requests}
dynamo_frontend_time_to_first_token_seconds_bucket{{model="m",le="+Inf"}} {requests}
dynamo_frontend_time_to_first_token_seconds_sum{{model="m"}} 1
dynamo_frontend_time_to_first_token_seconds_count{{model="m"}} {requests}
"""
KV_HITS = """# TYPE dynamo_frontend_cached_tokens histogram
dynamo_frontend_cached_tokens_sum{{model="m"}} {cached}
dynamo_frontend_cached_tokens_count{{model="m"}} 1
# TYPE dynamo_frontend_input_sequence_tokens histogram
dynamo_frontend_input_sequence_tokens_sum{{model="m"}} {prompted}
dynamo_frontend_input_sequence_tokens_count{{model="m"}} 1
"""
WORKER = """# TYPE dynamo_component_requests_total counter
dynamo_component_requests_total{{dynamo_endpoint="generate"}} {requests}
dynamo_component_requests_total{{dynamo_endpoint="worker_kv_query_source_1"}} 7
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0"}} 0.25
"""


def parsed(text: str) -> list:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def reading(at: float, requests: int, tokens: int, fast: int, worker_requests: int) -> Reading:
    front = frontend_reading(parsed(FRONTEND.format(requests=requests, tokens=tokens, fast=fast)))
    return Reading(at, front, {"decode-0": worker_reading(parsed(WORKER.format(requests=worker_requests)))})


def test_rates_and_percentiles_come_from_the_window_between_two_scrapes():
    old, new = reading(100.0, 10, 100, 10, 10), reading(110.0, 110, 3300, 60, 60)
    live = summarize(old, new, [], {"decode-0": worker_live(old, new, "decode-0")})
    assert live is not None
    assert live.requests_per_s == 10.0  # 100 requests in 10 s
    assert live.output_tokens_per_s == 320.0 and (live.in_flight, live.queued) == (3, 1)
    # 100 first tokens in the window: 50 under 10 ms, 50 between 10 and 100 ms.
    assert live.ttft_ms is not None and live.ttft_ms.p50 == 10.0 and live.ttft_ms.p99 == 98.2
    assert live.workers["decode-0"].requests_per_s == 5.0 and live.workers["decode-0"].kv_cache_usage == 0.25


def test_the_kv_hit_rate_is_the_cached_share_of_the_windows_prompt_tokens():
    def at(when: float, cached: int, prompted: int) -> Reading:
        text = FRONTEND.format(requests=10, tokens=100, fast=10) + KV_HITS.format(cached=cached, prompted=prompted)
        return Reading(when, frontend_reading(parsed(text)), {})

    live = summarize(at(100.0, 1000, 4000), at(110.0, 8200, 13000), [], {})
    assert live is not None and live.kv_hit_rate == 0.8  # 7,200 of 9,000 prompt tokens were cached
    idle = summarize(at(100.0, 50, 500), at(110.0, 50, 500), [], {})
    assert idle is not None and idle.kv_hit_rate is None  # no prompt in the window: no rate, not 0%


def test_the_quantile_interpolates_within_its_bucket_as_prometheus_does():
    assert round(quantile(0.5, {0.1: 0.0, 0.2: 10.0, float("inf"): 10.0}) or 0, 9) == 0.15
    assert quantile(0.99, {0.1: 0.0, float("inf"): 5.0}) == 0.1  # beyond the last finite bound
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None


def test_without_the_frontend_there_is_nothing_to_say():
    worker_only = Reading(1.0, None, {})
    assert summarize(worker_only, reading(2.0, 1, 1, 1, 1), [], {}) is None


def test_scraping_is_a_recipe_setting_and_can_be_off():
    assert plan_of("mocker-agg", "local.yaml").scrape_interval_s == 5.0
    assert plan_of("mocker-agg", "local.yaml", "observability.scrape_interval_s=0").scrape_interval_s == 0.0


def test_the_run_list_never_cuts_a_run_name_on_a_narrow_terminal():
    name = "mocker-disagg-20261130-061530-2a68b"
    plan = plan_of("mocker-disagg", "local.yaml")
    create_run(plan.model_copy(update={"run_name": name, "run_dir": str(run_dir_for(name, None))}))
    result = subprocess.run(
        [sys.executable, "-m", "slurmserve", "status"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert result.returncode == 0 and name in result.stdout, result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_the_recipe_list_never_cuts_a_recipe_name_on_a_narrow_terminal():
    result = subprocess.run(
        [sys.executable, "-m", "slurmserve", "recipes"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert result.returncode == 0
    assert all(name in result.stdout for name in builtin_recipe_names()), result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
