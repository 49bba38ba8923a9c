"""Live serving metrics for `status`: the frontend's and each worker's /metrics, scraped every few seconds
(by the supervisor's scraper, a process of its own: observability.scraping), summed up over the last
minute: rates from counter deltas, TTFT and ITL percentiles from histogram bucket deltas (as Prometheus's
histogram_quantile computes them). Pure: readings in, summaries out."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from prometheus_client.samples import Sample

from ..runs import LiveMetrics, Quantiles, TrendPoint, WorkerLive
from .metrics import WORKER_REQUESTS, total

WINDOW_S = 60.0
TREND_POINTS = 24  # two minutes of scrapes
# The engine's KV cache use, by the names engines export it: a fraction (0..1), or a percentage.
KV_USAGE_FRACTION = ("vllm:kv_cache_usage_perc", "trtllm:kv_cache_utilization", "sglang:token_usage")
KV_USAGE_PERCENT = ("dynamo_component_kvstats_gpu_cache_usage_percent",)
TTFT = "dynamo_frontend_time_to_first_token_seconds"
ITL = "dynamo_frontend_inter_token_latency_seconds"
# The KV hit rate: of the prompt tokens the frontend saw, the share the workers found in their KV cache
# (each response's usage.prompt_tokens_details.cached_tokens), whatever the router mode.
CACHED_TOKENS = "dynamo_frontend_cached_tokens_sum"
INPUT_TOKENS = "dynamo_frontend_input_sequence_tokens_sum"
# The families the readings below read: an exposition is cut down to these before it is parsed.
FRONTEND_FAMILIES = (
    "dynamo_frontend_requests_total",
    "dynamo_frontend_inflight_requests",
    "dynamo_frontend_queued_requests",
    "dynamo_frontend_output_sequence_tokens_sum",
    CACHED_TOKENS,
    INPUT_TOKENS,
    f"{TTFT}_bucket",
    f"{ITL}_bucket",
)
WORKER_FAMILIES = (WORKER_REQUESTS, *KV_USAGE_FRACTION, *KV_USAGE_PERCENT)

Buckets = dict[float, float]  # upper bound -> cumulative count


@dataclass(frozen=True)
class FrontendReading:
    requests: float
    in_flight: float
    queued: float
    output_tokens: float
    ttft: Buckets
    itl: Buckets
    cached_tokens: float = 0.0
    input_tokens: float = 0.0


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
        cached_tokens=total(found, CACHED_TOKENS),
        input_tokens=total(found, INPUT_TOKENS),
    )


def kv_hit_rate(new: FrontendReading, old: FrontendReading) -> float | None:
    """The share of the window's prompt tokens found in a worker's KV cache (None: no prompt in the window)."""
    prompted = new.input_tokens - old.input_tokens
    return round(min(max((new.cached_tokens - old.cached_tokens) / prompted, 0.0), 1.0), 4) if prompted > 0 else None


def worker_reading(found: list[Sample]) -> WorkerReading:
    usage = next((total(found, name) for name in KV_USAGE_FRACTION if any(s.name == name for s in found)), None)
    if usage is None:
        percent = next((total(found, name) for name in KV_USAGE_PERCENT if any(s.name == name for s in found)), None)
        usage = percent / 100 if percent is not None else None
    return WorkerReading(requests=total(found, WORKER_REQUESTS, dynamo_endpoint="generate"), kv_cache_usage=usage)


def delta(new: Buckets, old: Buckets) -> Buckets:
    return {bound: count - old.get(bound, 0.0) for bound, count in new.items()}


def as_ms(q50: float | None, q99: float | None) -> Quantiles | None:
    return None if q50 is None or q99 is None else Quantiles(p50=round(q50 * 1000, 3), p99=round(q99 * 1000, 3))


def rate(new: float, old: float, span: float) -> float:
    """A counter's rate per second (a counter reset counts as none)."""
    return round(max(new - old, 0.0) / max(span, 1e-6), 3)


def worker_live(old: Reading, new: Reading, name: str) -> WorkerLive:
    return WorkerLive(
        requests_per_s=rate(new.workers[name].requests, old.workers[name].requests, new.at - old.at),
        kv_cache_usage=new.workers[name].kv_cache_usage,
    )


def summarize(
    old: Reading, new: Reading, trend: list[TrendPoint], workers: dict[str, WorkerLive]
) -> LiveMetrics | None:
    """The window between two of the frontend's readings (None without its figures at both ends), with the
    workers' figures (each from its own readings: see LiveFigures)."""
    if old.frontend is None or new.frontend is None:
        return None
    span = max(new.at - old.at, 1e-6)
    front, before = new.frontend, old.frontend
    ttft, itl = delta(front.ttft, before.ttft), delta(front.itl, before.itl)
    return LiveMetrics(
        at=new.at,
        window_s=round(span, 2),
        requests_per_s=rate(front.requests, before.requests, span),
        in_flight=front.in_flight,
        queued=front.queued,
        ttft_ms=as_ms(quantile(0.5, ttft), quantile(0.99, ttft)),
        itl_ms=as_ms(quantile(0.5, itl), quantile(0.99, itl)),
        output_tokens_per_s=rate(front.output_tokens, before.output_tokens, span),
        kv_hit_rate=kv_hit_rate(front, before),
        workers=workers,
        trend=trend,
    )


class Timed(Protocol):
    @property
    def at(self) -> float: ...


Kept = TypeVar("Kept", bound=Timed)


@dataclass
class Window(Generic[Kept]):
    """Readings of one endpoint, oldest first, kept to the last WINDOW_S (and at least two: a window needs
    two ends; one read less often than that spans its two latest readings)."""

    readings: deque[Kept] = field(default_factory=deque)

    def add(self, reading: Kept) -> None:
        self.readings.append(reading)
        while len(self.readings) > 2 and reading.at - self.readings[1].at >= WINDOW_S:
            self.readings.popleft()

    def ends(self) -> tuple[Kept, Kept] | None:
        return (self.readings[0], self.readings[-1]) if len(self.readings) >= 2 else None


@dataclass
class LiveFigures:
    """What the scrapes so far say: the frontend's window, each worker's own (workers may be read less
    often than the frontend, in rounds: see scraping), and the trend of past summaries."""

    frontend: Window[Reading] = field(default_factory=Window)
    workers: dict[str, Window[Reading]] = field(default_factory=dict)
    trend: deque[TrendPoint] = field(default_factory=lambda: deque(maxlen=TREND_POINTS))

    def worker_read(self, name: str, at: float, reading: WorkerReading | None) -> None:
        """A worker's scrape; one that did not answer drops out of the figures until it has two readings
        again (as a worker missing from a scrape always did)."""
        if reading is None:
            self.workers.pop(name, None)
        else:
            self.workers.setdefault(name, Window()).add(Reading(at, None, {name: reading}))

    def frontend_read(self, at: float, reading: FrontendReading) -> LiveMetrics | None:
        """The frontend's scrape; the summary of the window it ends (None until there are two)."""
        self.frontend.add(Reading(at, reading, {}))
        ends = self.frontend.ends()
        if ends is None:
            return None
        workers = {name: worker_live(*pair, name) for name, window in self.workers.items() if (pair := window.ends())}
        summary = summarize(*ends, list(self.trend), workers)
        if summary is None:
            return None
        ttft_p50 = summary.ttft_ms.p50 if summary.ttft_ms else None
        self.trend.append(TrendPoint(at=at, requests_per_s=summary.requests_per_s, ttft_p50_ms=ttft_p50))
        return summary.model_copy(update={"trend": list(self.trend)})
