"""Live serving metrics for `status`: the frontend's and each worker's /metrics, scraped every few seconds
by the supervisor (in a thread of its own, off its fast tick), summed up over the last minute: rates from
counter deltas, TTFT and ITL percentiles from histogram bucket deltas (as Prometheus's
histogram_quantile computes them)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from prometheus_client.samples import Sample

from ..planning.plan import Plan
from ..runs import LiveMetrics, Quantiles, TrendPoint, WorkerLive
from ..waiting import fan_out
from .metrics import samples, total
from .targets import metrics_url

WINDOW_S = 60.0
TREND_POINTS = 24  # two minutes of scrapes
SCRAPE_DEADLINE_S = 3.0
# The engine's KV cache use, by the names engines export it: a fraction (0..1), or a percentage.
KV_USAGE_FRACTION = ("vllm:kv_cache_usage_perc", "trtllm:kv_cache_utilization", "sglang:token_usage")
KV_USAGE_PERCENT = ("dynamo_component_kvstats_gpu_cache_usage_percent",)
TTFT = "dynamo_frontend_time_to_first_token_seconds"
ITL = "dynamo_frontend_inter_token_latency_seconds"

Buckets = dict[float, float]  # upper bound -> cumulative count


@dataclass(frozen=True)
class FrontendReading:
    requests: float
    in_flight: float
    queued: float
    output_tokens: float
    ttft: Buckets
    itl: Buckets


@dataclass(frozen=True)
class WorkerReading:
    requests: float
    kv_cache_usage: float | None


@dataclass(frozen=True)
class Reading:
    at: float
    frontend: FrontendReading | None
    workers: dict[str, WorkerReading]


def buckets(found: Iterable[Sample], histogram: str) -> Buckets:
    """A histogram's cumulative buckets, summed over its label sets (models)."""
    summed: Buckets = {}
    for sample in found:
        if sample.name == f"{histogram}_bucket":
            bound = float(sample.labels["le"])
            summed[bound] = summed.get(bound, 0.0) + sample.value
    return summed


def quantile(q: float, cumulative: Buckets) -> float | None:
    """The q-quantile of a histogram's observations (its cumulative buckets), interpolated linearly
    within the bucket it falls in; None without observations."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: its bound is all that is known
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def frontend_reading(found: list[Sample]) -> FrontendReading:
    return FrontendReading(
        requests=total(found, "dynamo_frontend_requests_total"),
        in_flight=total(found, "dynamo_frontend_inflight_requests"),
        queued=total(found, "dynamo_frontend_queued_requests"),
        output_tokens=total(found, "dynamo_frontend_output_sequence_tokens_sum"),
        ttft=buckets(found, TTFT),
        itl=buckets(found, ITL),
    )


def worker_reading(found: list[Sample]) -> WorkerReading:
    usage = next((total(found, name) for name in KV_USAGE_FRACTION if any(s.name == name for s in found)), None)
    if usage is None:
        percent = next((total(found, name) for name in KV_USAGE_PERCENT if any(s.name == name for s in found)), None)
        usage = percent / 100 if percent is not None else None
    return WorkerReading(
        requests=total(found, "dynamo_component_requests_total", dynamo_endpoint="generate"), kv_cache_usage=usage
    )


def delta(new: Buckets, old: Buckets) -> Buckets:
    return {bound: count - old.get(bound, 0.0) for bound, count in new.items()}


def as_ms(q50: float | None, q99: float | None) -> Quantiles | None:
    return None if q50 is None or q99 is None else Quantiles(p50=round(q50 * 1000, 3), p99=round(q99 * 1000, 3))


def summarize(old: Reading, new: Reading, trend: list[TrendPoint]) -> LiveMetrics | None:
    """The window between two readings (None without the frontend's figures at both ends)."""
    if old.frontend is None or new.frontend is None:
        return None
    span = max(new.at - old.at, 1e-6)
    front, before = new.frontend, old.frontend
    ttft, itl = delta(front.ttft, before.ttft), delta(front.itl, before.itl)
    workers = {
        name: WorkerLive(
            requests_per_s=round(max(reading.requests - old.workers[name].requests, 0.0) / span, 3),
            kv_cache_usage=reading.kv_cache_usage,
        )
        for name, reading in new.workers.items()
        if name in old.workers
    }
    return LiveMetrics(
        at=new.at,
        window_s=round(span, 2),
        requests_per_s=round(max(front.requests - before.requests, 0.0) / span, 3),
        in_flight=front.in_flight,
        queued=front.queued,
        ttft_ms=as_ms(quantile(0.5, ttft), quantile(0.99, ttft)),
        itl_ms=as_ms(quantile(0.5, itl), quantile(0.99, itl)),
        output_tokens_per_s=round(max(front.output_tokens - before.output_tokens, 0.0) / span, 3),
        workers=workers,
        trend=trend,
    )


class MetricsWatcher:
    """Scrapes the deployment every plan.scrape_interval_s in a daemon thread (each second until the frontend
    first answers); `latest` is the last summary."""

    def __init__(self, plan: Plan):
        self.every_s = plan.scrape_interval_s
        self.frontend = f"{plan.endpoint}/metrics"
        self.workers = {p.name: url for p in plan.processes if p.is_worker and (url := metrics_url(plan, p))}
        self.readings: deque[Reading] = deque()
        self.trend: deque[TrendPoint] = deque(maxlen=TREND_POINTS)
        self.latest: LiveMetrics | None = None
        self.stopped = threading.Event()
        # One client for every scrape: kept-alive connections, one per endpoint.
        self.client = httpx.Client(limits=httpx.Limits(max_connections=len(self.workers) + 1))

    def start(self) -> None:
        if self.every_s > 0:
            threading.Thread(target=self.loop, name="metrics", daemon=True).start()

    def loop(self) -> None:
        while not self.stopped.wait(self.every_s if self.readings else 1.0):
            self.scrape()

    def scrape(self) -> None:
        urls = {"": self.frontend, **self.workers}
        found = fan_out(list(urls), lambda name: samples(urls[name], self.client), SCRAPE_DEADLINE_S)
        front = found[""].value
        if front is None:  # no frontend yet (or not now): no window can start or end here
            return
        reading = Reading(
            at=time.time(),
            frontend=frontend_reading(front),
            workers={name: worker_reading(got.value) for name, got in found.items() if name and got.value is not None},
        )
        self.readings.append(reading)
        while len(self.readings) > 2 and reading.at - self.readings[1].at >= WINDOW_S:
            self.readings.popleft()
        if len(self.readings) < 2:  # a window needs two ends
            return
        summary = summarize(self.readings[0], reading, list(self.trend))
        if summary is not None:
            point = TrendPoint(
                at=reading.at,
                requests_per_s=summary.requests_per_s,
                ttft_p50_ms=summary.ttft_ms.p50 if summary.ttft_ms else None,
            )
            self.trend.append(point)
            self.latest = summary.model_copy(update={"trend": list(self.trend)})
