"""Which points of the Pareto view (tokens/s per user against tokens/s per GPU, more of each is better) are
on its frontier, decided so that noise does not decide it: a point is dominated only by one that is at
least as good on both axes and better on one by more than the run-to-run spread of the two."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .results import BenchSummary, PointResult

# Two standard errors: a difference that a rerun shows again about 19 times in 20.
STANDARD_ERRORS = 2.0
# What a run's own sample cannot show: the machine's other load, another placement of the same deployment.
# Four reruns of the README's sweep (the mock engine on 2 cores shared with other work) differed by 1-20% a
# point where their own samples showed a few %. With a floor of 2%, one of the four put a second point on
# the frontier; with 5% (7% for the difference of two points) all four drew the same frontier, and a
# difference a sweep is run to find (a third more per GPU) still counts.
RELATIVE_FLOOR = 0.05


@dataclass(frozen=True)
class Measured:
    """A point of the Pareto view with how far either figure could move in a rerun (its noise, +-)."""

    x: float  # output tokens/s per user
    y: float  # output tokens/s per GPU
    x_noise: float
    y_noise: float
    series: str = ""
    concurrency: int = 0


def measured(point: PointResult, series: str = "") -> Measured:
    """The point's figures and their noise: the median user's rate moves within the interval its requests
    give the median (results.median_interval); throughput per GPU (requests in flight over their mean
    latency) with the latencies' relative spread over the root of the requests (two standard errors of
    the mean); neither less than RELATIVE_FLOOR."""
    x, y = point.output_tokens_per_s_per_user, point.output_tokens_per_s_per_gpu
    x_error = y_error = 0.0
    if point.per_user_median_low is not None and point.per_user_median_high is not None:
        x_error = max(x - point.per_user_median_low, point.per_user_median_high - x)
    if point.request_latency_cv is not None:
        y_error = STANDARD_ERRORS * point.request_latency_cv / math.sqrt(max(point.requests, 1)) * y
    return Measured(x, y, max(RELATIVE_FLOOR * x, x_error), max(RELATIVE_FLOOR * y, y_error), series, point.concurrency)


def dominates(better: Measured, other: Measured) -> bool:
    """`better` is at least as good on both axes (within the spread) and better beyond it on one. The
    spread of a difference is that of both points together (independent measurements)."""
    x_spread = math.hypot(better.x_noise, other.x_noise)
    y_spread = math.hypot(better.y_noise, other.y_noise)
    not_worse = better.x >= other.x - x_spread and better.y >= other.y - y_spread
    return not_worse and (better.x > other.x + x_spread or better.y > other.y + y_spread)


def frontier(points: list[Measured]) -> list[Measured]:
    """The points no other point dominates, by x."""
    return sorted(
        (point for point in points if not any(dominates(other, point) for other in points if other is not point)),
        key=lambda point: (point.x, point.y),
    )


def frontier_of(summaries: list[BenchSummary]) -> list[Measured] | None:
    """The frontier of the benchmarks' valid points; None where there is none to draw: fewer than two
    points, or workloads mixed (a frontier across them compares different questions)."""
    points = [measured(point, s.shown_as) for s in summaries for point in s.points if point.valid]
    if len(points) < 2 or len({summary.workload for summary in summaries}) != 1:
        return None
    return frontier(points)


def frontier_line(summaries: list[BenchSummary]) -> str | None:
    """The frontier in words: which points are on it (by benchmark and concurrency)."""
    best = frontier_of(summaries)
    if best is None:
        return None
    on_it = ", ".join(
        f"{point.series} c{point.concurrency}" if len(summaries) > 1 else f"c{point.concurrency}" for point in best
    )
    return f"frontier (tok/s/user against tok/s/GPU, differences within the run-to-run spread ignored): {on_it}"
