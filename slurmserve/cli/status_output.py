"""What `status` shows: the list of runs, and a run's processes with what its supervisor sees. At any
width (80 columns, a pipe) what a user copies stays whole: run names, process names, endpoints. What
does not fit a column goes on a line of its own under the table, wrapped between words."""

from __future__ import annotations

import time
from textwrap import shorten

from rich.console import Group
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

from .. import deploy
from ..runs import LiveMetrics, Quantiles, UnreadableRun
from ..runtime.background import CANARY_INTERVAL_S
from .output import console, gpu_ranges

LAST_ERROR_CHARS = 160  # under the table; --json has all of it
UNREADABLE = "unreadable"  # the state `status` lists a run in whose plan it cannot read
STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "pending": "dim",
    "unhealthy": "yellow",
    "failed": "red",
    "stopped": "dim",
    "degraded": "yellow",
    UNREADABLE: "red",
}
SPARKS = "▁▂▃▄▅▆▇█"
UNLIMITED = 10_000  # columns: wide enough for any table


def ago(moment: float | None) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int(time.time() - moment))
    if seconds < 120:
        return f"{seconds} s ago"
    return f"{seconds // 60} min ago" if seconds < 7200 else f"{seconds // 3600} h ago"


def styled(word: str) -> str:
    return f"[{STATE_STYLE[word]}]{word}[/]"


# ------------------------------------------------------------------------------------------ the run list


def run_list(reports: list[deploy.RunStatus], unreadable: list[UnreadableRun], width: int) -> Group:
    """`status` without RUN: a row per run, its endpoint under its name (both whole, to be copied). The
    recipe column only where `width` has room for it: a default run name starts with its recipe anyway."""
    table = run_list_table(reports, unreadable, with_recipe=True)
    # Measured without a limit: a table measured within `width` says it fits by squeezing its columns.
    if Measurement.get(console, console.options.update_width(UNLIMITED), table).maximum > width:
        table = run_list_table(reports, unreadable, with_recipe=False)
    why = [Text(f"{entry.name}: {entry.reason}") for entry in unreadable]
    return Group(table, *why)


def run_list_table(reports: list[deploy.RunStatus], unreadable: list[UnreadableRun], with_recipe: bool) -> Table:
    columns: list[Column | str] = [Column("run / endpoint", no_wrap=True), "state", "backend"]
    table = Table(*columns, *([Column("recipe", no_wrap=True)] if with_recipe else []))
    for report in reports:
        where = f"{escape(report.run)}\n  [bold]{escape(report.endpoint)}[/]"
        table.add_row(where, styled(report.verdict.value), report.backend, *([report.recipe] if with_recipe else []))
    for entry in unreadable:  # why: under the table
        table.add_row(escape(entry.name), styled(UNREADABLE), "", *([""] if with_recipe else []))
    return table


def run_summary(report: deploy.RunStatus) -> dict[str, str]:
    """One run of `status` without RUN, for --json."""
    keys = ("run", "verdict", "reason", "recipe", "backend", "endpoint")
    return {key: str(getattr(report, key).value if key == "verdict" else getattr(report, key)) for key in keys}


def unreadable_summary(entry: UnreadableRun) -> dict[str, str]:
    """A run whose plan cannot be read, for --json: the keys of the others, with what is known."""
    known = {"run": entry.name, "verdict": UNREADABLE, "reason": entry.reason}
    return {**known, **dict.fromkeys(("recipe", "backend", "endpoint"), "")}


# ------------------------------------------------------------------------------------------ one run


def status_view(report: deploy.RunStatus, watching: bool = False) -> Group:
    """A run's verdict, its processes, and what its supervisor sees, a line each under the table. While
    `watching` (`status --watch`), how to quit comes first: a terminal too short crops the bottom."""
    heading = f"run [bold]{escape(report.run)}[/]: {styled(report.verdict.value)} ({escape(report.reason)})"
    if watching:
        heading = f"[dim]redrawn every second; Ctrl-C to quit[/]\n{heading}"
    lines = status_lines(report, trend=watching)
    # Wrapped between words at the terminal's width, even on a console that leaves wrapping to the
    # terminal: `--watch` crops what is wider.
    top = Text.from_markup(heading)
    top.no_wrap = False
    return Group(top, process_table(report), *(Text(line, no_wrap=False) for line in lines))


def process_table(report: deploy.RunStatus) -> Table:
    table = Table(
        Column("process", no_wrap=True), Column("node", overflow="fold"), "GPUs", "state", "since", "restarts"
    )
    for s in report.processes:
        table.add_row(
            s.name, ",".join(s.nodes), gpu_ranges(s.gpus), styled(s.state.value), ago(s.since), str(s.restarts)
        )
    return table


def status_lines(report: deploy.RunStatus, trend: bool) -> list[str]:
    """Under the process table: where it serves, who watches it, what the frontend sees, canaries, nodes,
    last errors, serving figures."""
    watcher = "watched by its supervisor" if report.supervised else "not supervised now: states asked of the backend"
    lines = [f"endpoint {report.endpoint}", f"{report.scheduler} · {watcher}"]
    if report.prometheus:
        lines.append(f"Prometheus {report.prometheus} (the run's own: every series since the start)")
    if report.frontend:
        seen = ", ".join(f"{role} {count}/{planned}" for role, (count, planned) in report.frontend.items())
        lines.append(f"frontend sees {seen}")
    lines += [
        f"autoscale {role}: {counts.actual} ready of {counts.desired} asked (min {counts.min}, max {counts.max})"
        for role, counts in report.autoscale.items()
        if counts.min < counts.max
    ]
    if report.planner:
        decided = report.planner
        counts = ", ".join(f"{role} {count}" for role, count in decided.counts.items())
        state = "acknowledged" if decided.acknowledged else "being met"
        state = f"acknowledged as failed: {decided.failed}" if decided.failed else state
        lines.append(f"planner: decision {decided.decision_id} ({counts}) {ago(decided.at)}, {state}")
        lines += [f"planner's reason: {decided.reason}"] if decided.reason else []
    if report.canary:
        canary = report.canary
        outcome = f"ok in {canary.latency_s} s" if canary.ok else f"FAILED ({canary.error})"
        lines.append(f"canary completion {ago(canary.at)}: {outcome}")
    lines += [f"node {node}: {problem}" for node, problem in report.nodes.items()]
    lines += [
        f"{s.name} last error: {shorten(s.last_error, LAST_ERROR_CHARS, placeholder='...')}"
        for s in report.processes
        if s.last_error
    ]
    lines += pool_lines(report)
    if report.metrics:
        lines += serving_lines(report.metrics, trend, pools=bool(report.pool_canaries))
    return lines


def pool_lines(report: deploy.RunStatus) -> list[str]:
    """Per pool behind the global router: its processes' states and its own canary."""
    lines = []
    for pool in dict.fromkeys(s.pool for s in report.processes if s.pool):
        members = ", ".join(f"{s.name} {s.state.value}" for s in report.processes if s.pool == pool)
        canary = report.pool_canaries.get(pool)
        lines.append(f"pool {pool}: {members}")
        if canary is not None:  # a line of its own: the pool's line is long enough with its processes
            outcome = f"served by its workers in {canary.latency_s} s" if canary.ok else f"FAILED ({canary.error})"
            lines.append(f"  its canary {ago(canary.at)}: {outcome}")
    return lines


def sparkline(values: list[float]) -> str:
    """The values as a row of bars, scaled to their own range."""
    if not values:
        return ""
    low, high = min(values), max(values)
    return "".join(
        SPARKS[round((value - low) / (high - low) * (len(SPARKS) - 1)) if high > low else 0] for value in values
    )


def pair(found: Quantiles | None) -> str:
    return f"{found.p50:.1f}/{found.p99:.1f} ms" if found else "-"


def kv_cache(usage: float | None) -> str:
    """n/a: the engine reports no KV cache use (the mock engine's prefill workers, for one)."""
    return "n/a" if usage is None else f"{usage:.0%}"


def serving_lines(live: LiveMetrics, trend: bool, pools: bool) -> list[str]:
    """What the deployment serves, from its /metrics over the last window (the supervisor's own canaries
    among it, and said so); with `trend`, sparklines."""
    # Short lines, not one long one: `--watch` crops what is taller than the terminal.
    canaries = f"1 every {CANARY_INTERVAL_S:g} s" + (", and 1 a pool" if pools else "")
    lines = [
        f"serving (last {live.window_s:.0f} s): {live.requests_per_s:.2f} req/s, {live.in_flight:g} in flight, "
        f"{live.queued:g} queued, {live.output_tokens_per_s:.1f} output tok/s",
        f"  TTFT p50/p99 {pair(live.ttft_ms)}, ITL p50/p99 {pair(live.itl_ms)}",
    ]
    if live.kv_hit_rate is not None:
        # The whole formula is status --json's kv_hit_rate_from; 80 columns hold this much of it.
        lines.append(f"  KV hit rate {live.kv_hit_rate:.0%} (dynamo_frontend_cached_tokens / prompt tokens)")
    lines += [
        f"  {name}: {worker.requests_per_s:.2f} req/s, KV cache {kv_cache(worker.kv_cache_usage)}"
        for name, worker in live.workers.items()
    ]
    lines.append(f"  (counting the supervisor's canary completions: {canaries})")
    if trend and live.trend:
        lines.append(f"  req/s  {sparkline([point.requests_per_s for point in live.trend])}")
        lines.append(f"  TTFT   {sparkline([point.ttft_p50_ms or 0.0 for point in live.trend])}")
    return lines
