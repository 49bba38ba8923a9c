"""A benchmark's results: each point's figures from aiperf's export, the validity gate, and the
summary (summary.json, our own schema) with its table."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..observability.metrics import FrontendCounters

SUMMARY_VERSION = 1
AIPERF_EXPORT = "profile_export_aiperf.json"
SUMMARY_JSON = "summary.json"
AIPERF_RECORDS = "profile_export.jsonl"  # one line per request
MEASURED = '"benchmark_phase":"profiling"'
PER_USER_RATE = re.compile(r'"output_token_throughput_per_user":\{"value":([0-9.eE+-]+)')
# The frontend may count a little more than aiperf sent: the supervisor's canaries meanwhile, unary (not
# streamed) completions of at most CANARY_TOKENS each (transport.http.chat_completion's default), one every
# 10 s, so a point of 30 s and more sees several; and a little beyond.
COUNTER_SLACK_TOKENS = 64
CANARY_TOKENS = 16


class Percentiles(BaseModel):
    p50: float
    p90: float
    p99: float


class PointResult(BaseModel):
    """One concurrency point: aiperf's figures, and whether the point is valid (and if not, why)."""

    concurrency: int
    requests: int  # completed, after warm-up
    errors: int
    error_rate: float  # % of requests
    ttft_ms: Percentiles | None = None
    itl_ms: Percentiles | None = None
    request_latency_ms: Percentiles | None = None
    output_tokens_per_s: float = 0.0
    output_tokens_per_s_per_gpu: float = 0.0
    output_tokens_per_s_per_user: float = 0.0
    # How far the point's figures could move in a rerun (see frontier.measured): where the median user's
    # decode rate falls 95 times in 100, and the request latencies' standard deviation over their mean.
    per_user_median_low: float | None = None
    per_user_median_high: float | None = None
    request_latency_cv: float | None = None
    requests_per_s: float = 0.0
    goodput: float | None = None  # requests/s meeting the recipe's goodput SLOs
    output_tokens: int = 0
    shortest_output: float = 0.0  # tokens
    warmup_requests: int = 0
    warmup_output_tokens: int = 0
    artifacts: str  # aiperf's own files, relative to the benchmark folder
    measuring_s: float = 0.0  # aiperf's measured window (after warm-up)
    aiperf_s: float = 0.0  # aiperf's whole run, its start-up and warm-up included
    valid: bool = True
    problems: list[str] = []


class BenchSummary(BaseModel):
    version: int = SUMMARY_VERSION
    id: str
    run: str
    recipe: str
    backend: str
    engine: str
    mode: str
    model: str
    gpus: int
    endpoint_type: str
    isl: int
    osl: int
    started: str
    points: list[PointResult] = []
    label: str = ""  # what tells this benchmark from others in a comparison (a sweep point's settings)

    @property
    def valid(self) -> bool:
        return all(point.valid for point in self.points)

    @property
    def shown_as(self) -> str:
        """Its name in tables and plots: its label, else its id."""
        return self.label or self.id

    @property
    def workload(self) -> str:
        """What was sent: benchmarks of different workloads answer different questions."""
        return f"{self.endpoint_type}, ISL {self.isl} / OSL {self.osl}"


def _figure(export: dict[str, Any], key: str, field: str = "avg") -> float:
    value = (export.get(key) or {}).get(field)
    return float(value) if value is not None else 0.0


def _percentiles(export: dict[str, Any], key: str) -> Percentiles | None:
    found = export.get(key)
    if not found or found.get("p50") is None:
        return None
    return Percentiles(p50=found["p50"], p90=found["p90"], p99=found["p99"])


def point_result(
    export: dict[str, Any], concurrency: int, gpus: int, artifacts: str, per_user: list[float] | None = None
) -> PointResult:
    """A point's figures from aiperf's profile_export_aiperf.json (and its requests' decode rates)."""
    warmup = export.get("warmup_metrics") or {}
    errors = sum(int(entry.get("count", 0)) for entry in export.get("error_summary") or [])
    throughput = _figure(export, "output_token_throughput")
    latency_mean = _figure(export, "request_latency")
    median_low, median_high = median_interval(per_user) if per_user else (None, None)
    return PointResult(
        concurrency=concurrency,
        requests=int(_figure(export, "request_count")),
        errors=errors,
        error_rate=_figure(export, "request_error_rate"),
        ttft_ms=_percentiles(export, "time_to_first_token"),
        itl_ms=_percentiles(export, "inter_token_latency"),
        request_latency_ms=_percentiles(export, "request_latency"),
        output_tokens_per_s=throughput,
        output_tokens_per_s_per_gpu=throughput / max(gpus, 1),
        # The median user's: aiperf's average of per-request rates is pulled far up by a request whose
        # tokens came in one burst.
        output_tokens_per_s_per_user=_figure(export, "output_token_throughput_per_user", "p50")
        or _figure(export, "output_token_throughput_per_user"),
        per_user_median_low=median_low,
        per_user_median_high=median_high,
        request_latency_cv=_figure(export, "request_latency", "std") / latency_mean if latency_mean else None,
        requests_per_s=_figure(export, "request_throughput"),
        goodput=_figure(export, "goodput") if export.get("goodput") else None,
        output_tokens=int(_figure(export, "total_output_tokens")),
        shortest_output=_figure(export, "output_sequence_length", "min"),
        warmup_requests=int(_figure(warmup, "request_count")),
        warmup_output_tokens=int(_figure(warmup, "total_output_tokens")),
        artifacts=artifacts,
        measuring_s=_figure(export, "benchmark_duration"),
    )


def failed_point(concurrency: int, artifacts: str, why: str) -> PointResult:
    """A point aiperf could not measure at all (it exits non-zero when every request failed)."""
    return PointResult(
        concurrency=concurrency,
        requests=0,
        errors=0,
        error_rate=100.0,
        artifacts=artifacts,
        valid=False,
        problems=[why],
    )


def gate(result: PointResult, osl: int, ignore_eos: bool, counted: FrontendCounters | None) -> list[str]:
    """Why a point's figures cannot be trusted (empty: valid): errors, no tokens, outputs shorter than
    asked, or the frontend's own counters disagreeing with aiperf's."""
    problems = []
    if result.errors:
        problems.append(f"{result.errors} of {result.requests + result.errors} requests failed")
    if result.output_tokens == 0:
        problems.append("0 output tokens were generated")
    elif ignore_eos and result.shortest_output < osl:
        problems.append(
            f"outputs shorter than asked: as few as {result.shortest_output:g} of {osl} tokens (ignore_eos)"
        )
    if counted is None:
        problems.append("the frontend's /metrics did not answer, so its counters could not be checked")
        return problems
    sent_ok = result.requests + result.warmup_requests
    if counted.streamed_ok < sent_ok:
        problems.append(f"the frontend counted {counted.streamed_ok:g} streamed requests served, aiperf {sent_ok}")
    tokens = result.output_tokens + result.warmup_output_tokens
    slack = max(COUNTER_SLACK_TOKENS, 0.01 * tokens)
    canaries = CANARY_TOKENS * max(counted.unary_ok, 0.0)
    if not -slack <= counted.output_tokens - tokens <= slack + canaries:
        problems.append(f"the frontend counted {counted.output_tokens:g} output tokens, aiperf {tokens}")
    return problems


def median_interval(values: list[float]) -> tuple[float, float]:
    """Where the median of a rerun's sample falls 95 times in 100: the order statistics n/2 -+ sqrt(n)
    (two standard errors of the binomial count below the median). No shape assumed: the users' rates of
    the mock engine have two modes (tokens streamed one by one, or in one burst), where a spread such as
    p25-p75 says nothing about the median."""
    ordered = sorted(values)
    n = len(ordered)
    reach = math.sqrt(n)
    return ordered[max(0, math.floor(n / 2 - reach))], ordered[min(n - 1, math.ceil(n / 2 + reach))]


def per_user_rates(folder: Path) -> list[float]:
    """Each measured request's decode rate (tokens/s after its first token), from aiperf's per-request
    export (warm-up requests left out). Read by pattern, not parsed: a line holds every token's timing."""
    try:
        lines = (folder / AIPERF_RECORDS).read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [float(found[1]) for line in lines if MEASURED in line and (found := PER_USER_RATE.search(line)) is not None]


def read_export(folder: Path) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads((folder / AIPERF_EXPORT).read_text())
    except (OSError, ValueError):
        return None
    return found


def read_summary(folder: Path) -> BenchSummary | None:
    """The folder's summary; None if it has none, or one that cannot be read (not UTF-8, not a summary)."""
    try:
        return BenchSummary.model_validate_json((folder / SUMMARY_JSON).read_text())
    except (OSError, UnicodeDecodeError, ValidationError):
        return None
