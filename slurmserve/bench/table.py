"""The benchmark table: its columns and what each one is, in words, its rows, its footnotes, and
table.txt (the table as plain text, beside a summary or a comparison)."""

from __future__ import annotations

from dataclasses import dataclass

from .frontier import frontier_line
from .results import BenchSummary, Percentiles

# p99 is the 99th of 100 sorted requests: from fewer, it is (nearly) the slowest one, not a percentile.
P99_SAMPLES = 100
FEW_SAMPLES = "~"


@dataclass(frozen=True)
class TableColumn:
    """A column of the benchmark table: its header, what it is in words, and its header stacked on two
    lines where it is longer than its figures (a terminal 80 columns wide)."""

    header: str
    meaning: str
    stacked: str = ""


TABLE_COLUMNS = (
    TableColumn("point", "the benchmark (a run's name, or a sweep point's settings)"),
    TableColumn("conc", "concurrency: requests in flight at once"),
    TableColumn("n", "requests measured (after the warm-up)"),
    TableColumn("req/s", "requests completed per second of the measuring window"),
    TableColumn("tok/s", "output tokens per second, all requests together (output tokens / measuring window)"),
    TableColumn("tok/s/GPU", "tok/s divided by the deployment's GPUs", "tok/s\n/GPU"),
    TableColumn(
        "tok/s/user",
        "the decode speed one user sees: a request's output tokens after the first, over the time after its "
        "first token (TTFT not counted: at concurrency 1 it can exceed tok/s), for the median request",
        "tok/s\n/user",
    ),
    TableColumn(
        "TTFT ms",
        "time to first token, from sending a request to its first output token: p50 / p99",
        "TTFT ms\np50/p99",
    ),
    TableColumn(
        "ITL ms", "inter-token latency, a request's mean time between output tokens: p50 / p99", "ITL ms\np50/p99"
    ),
    TableColumn(
        "latency ms", "request latency, from sending a request to its last token: p50 / p99", "latency ms\np50/p99"
    ),
    TableColumn("errors", "failed requests (and their share of all)"),
    TableColumn(
        "valid",
        "the validity gate: no failed request, every output as long as asked, and the frontend's own counters "
        "agreeing with aiperf's",
    ),
)


def _pair(found: Percentiles | None, requests: int) -> str:
    if not found:
        return "-"
    return f"{found.p50:.1f} / {found.p99:.1f}{FEW_SAMPLES if requests < P99_SAMPLES else ''}"


def table_rows(summaries: list[BenchSummary]) -> list[list[str]]:
    """One row per point of each benchmark, in TABLE_COLUMNS' order."""
    return [
        [
            summary.shown_as,
            str(point.concurrency),
            str(point.requests),
            f"{point.requests_per_s:.2f}",
            f"{point.output_tokens_per_s:.1f}",
            f"{point.output_tokens_per_s_per_gpu:.1f}",
            f"{point.output_tokens_per_s_per_user:.1f}",
            _pair(point.ttft_ms, point.requests),
            _pair(point.itl_ms, point.requests),
            _pair(point.request_latency_ms, point.requests),
            f"{point.errors} ({point.error_rate:.1f}%)",
            "yes" if point.valid else "NO",
        ]
        for summary in summaries
        for point in summary.points
    ]


def footnotes(summaries: list[BenchSummary]) -> list[str]:
    """Under the table: what a marked p99 means, if one is marked."""
    if any(0 < point.requests < P99_SAMPLES for summary in summaries for point in summary.points):
        return [f"{FEW_SAMPLES} p99 of fewer than {P99_SAMPLES} requests: about the slowest one, not a percentile"]
    return []


def invalid_points(summaries: list[BenchSummary]) -> list[str]:
    """A line per point that failed the validity gate, saying why."""
    return [
        f"{summary.shown_as} concurrency {point.concurrency}: {'; '.join(point.problems)}"
        for summary in summaries
        for point in summary.points
        if not point.valid
    ]


def definitions() -> list[str]:
    """The table's header block: each column, once, in words."""
    width = max(len(column.header) for column in TABLE_COLUMNS)
    return [f"{column.header.ljust(width)}  {column.meaning}" for column in TABLE_COLUMNS]


def text_table(summaries: list[BenchSummary]) -> str:
    """The table as plain text (table.txt beside the summary): what each column is, the rows, the
    footnotes, then why any point is invalid."""
    rows = [[column.header for column in TABLE_COLUMNS], *table_rows(summaries)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS) - 1)]
    lines = ["  ".join([*map(str.ljust, row[:-1], widths), row[-1]]) for row in rows]
    invalid = [f"invalid: {line}" for line in invalid_points(summaries)]
    best = [found] if (found := frontier_line(summaries)) else []
    return "\n".join([*definitions(), "", *lines, *footnotes(summaries), *best, *invalid]) + "\n"
