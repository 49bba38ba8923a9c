"""What the commands show: the two consoles, and the tables and lines that plans, run states and
benchmarks are shown as."""

from __future__ import annotations

import time
from textwrap import shorten
from typing import Any

from pydantic import TypeAdapter
from rich import box
from rich.console import Console
from rich.table import Column, Table

from .. import deploy
from ..bench.results import BenchSummary, PointResult
from ..bench.table import TABLE_COLUMNS, footnotes, table_rows
from ..planning.plan import Plan
from ..runs import LiveMetrics, Quantiles, UnreadableRun

console = Console(soft_wrap=True)  # long lines (URLs, curl commands) stay copyable
stderr = Console(stderr=True, soft_wrap=True)  # one paragraph; the terminal wraps it

LAST_ERROR_CHARS = 80  # in the table; --json has all of it
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
# The benchmark table: what it leaves to table.txt below this width.
WIDE_TABLE = 120
NARROW_LEAVES_OUT = ("req/s", "latency ms", "errors")


def warn(plan: Plan) -> None:
    """What the plan cannot honour, on stderr: said, never silently dropped."""
    for warning in plan.warnings:
        stderr.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


def to_json(value: object, kind: Any) -> str:
    return TypeAdapter(kind).dump_json(value, indent=2).decode()


def placement_table(plan: Plan) -> Table:
    table = Table(title=f"{plan.recipe} ({plan.engine}, {plan.mode}) on {plan.backend}: run {plan.run_name}")
    for column in ("process", "role", "node", "leaf", "GPUs", "ports", "after"):
        table.add_column(column)
    switch_of = {node.name: node.switch or "" for node in plan.nodes}
    for process in plan.processes:
        table.add_row(
            process.name,
            process.role,
            ",".join(process.nodes),
            ",".join(switch_of[n] for n in process.nodes),
            ",".join(map(str, process.gpus)) or "-",
            " ".join(f"{k}={v}" for k, v in process.ports.items()),
            ",".join(process.after) if len(process.after) <= 3 else f"{len(process.after)} processes",
        )
    table.caption = f"endpoint {plan.endpoint} · discovery {plan.discovery} · model {plan.model}"
    return table


def say_ready(deployment: deploy.Deployment, sample: dict[str, Any]) -> None:
    """A deployment that serves: where, its sample completion, and the commands to try, follow and stop it."""
    run, plan = deployment.run, deployment.plan
    choice = sample["choices"][0]
    text = (choice.get("message") or {}).get("content") or "(no text: the mock engine generates random token ids)"
    console.print(f"run [bold]{run.name}[/] is ready at [bold]{plan.endpoint}[/] (model {plan.model})")
    console.print(
        f"sample completion: {sample['usage']['completion_tokens']} tokens, "
        f"finish_reason {choice.get('finish_reason')}: {text}",
        highlight=False,
    )
    console.print(
        f"try: curl {plan.endpoint}/v1/chat/completions -H 'Content-Type: application/json' "
        f'-d \'{{"model": "{plan.model}", "messages": [{{"role": "user", "content": "Hello"}}], '
        f'"max_tokens": 32}}\''
    )
    console.print(
        f"status: slurmserve status {run.name}    logs: slurmserve logs {run.name} frontend    "
        f"stop: slurmserve cancel {run.name}"
    )


# ------------------------------------------------------------------------------------------ run states


def ago(moment: float | None) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int(time.time() - moment))
    if seconds < 120:
        return f"{seconds} s ago"
    return f"{seconds // 60} min ago" if seconds < 7200 else f"{seconds // 3600} h ago"


def styled(word: str) -> str:
    return f"[{STATE_STYLE[word]}]{word}[/]"


def run_list_table(reports: list[deploy.RunStatus], unreadable: list[UnreadableRun]) -> Table:
    """`status` without RUN: a line per run."""
    names = [report.run for report in reports] + [entry.name for entry in unreadable]
    # The run name whole, whatever the terminal's width: the other columns fold instead.
    table = Table(
        Column("run", no_wrap=True, min_width=max((len(name) for name in names), default=3)),
        Column("recipe", overflow="fold"),
        "backend",
        "state",
        Column("endpoint", overflow="fold"),
    )
    for report in reports:
        table.add_row(report.run, report.recipe, report.backend, styled(report.verdict.value), report.endpoint)
    for entry in unreadable:  # why, where the endpoint would be
        table.add_row(entry.name, "", "", styled(UNREADABLE), entry.reason)
    return table


def run_summary(report: deploy.RunStatus) -> dict[str, str]:
    """One run of `status` without RUN, for --json."""
    keys = ("run", "verdict", "reason", "recipe", "backend", "endpoint")
    return {key: str(getattr(report, key).value if key == "verdict" else getattr(report, key)) for key in keys}


def unreadable_summary(entry: UnreadableRun) -> dict[str, str]:
    """A run whose plan cannot be read, for --json: the keys of the others, with what is known."""
    known = {"run": entry.name, "verdict": UNREADABLE, "reason": entry.reason}
    return {**known, **dict.fromkeys(("recipe", "backend", "endpoint"), "")}


def status_table(report: deploy.RunStatus, trend: bool = False) -> Table:
    table = Table(
        "process",
        "node",
        "GPUs",
        "state",
        "since",
        "restarts",
        "last error",
        title=f"run {report.run}: {styled(report.verdict.value)} ({report.reason})",
    )
    for s in report.processes:
        table.add_row(
            s.name,
            ",".join(s.nodes),
            ",".join(map(str, s.gpus)) or "-",
            styled(s.state.value),
            ago(s.since),
            str(s.restarts),
            shorten(s.last_error or "", LAST_ERROR_CHARS, placeholder="..."),
        )
    table.caption = "\n".join(status_lines(report, trend))
    return table


def status_lines(report: deploy.RunStatus, trend: bool) -> list[str]:
    """Under the process table: who watches the run, what the frontend sees, canaries, nodes, serving."""
    watcher = "watched by its supervisor" if report.supervised else "not supervised now: states asked of the backend"
    lines = [f"{report.scheduler} · endpoint {report.endpoint} · {watcher}"]
    if report.prometheus:
        lines.append(f"Prometheus {report.prometheus} (the run's own: every series since the start)")
    if report.frontend:
        seen = ", ".join(f"{role} {count}/{planned}" for role, (count, planned) in report.frontend.items())
        lines.append(f"frontend sees {seen}")
    if report.canary:
        canary = report.canary
        outcome = f"ok in {canary.latency_s} s" if canary.ok else f"FAILED ({canary.error})"
        lines.append(f"canary completion {ago(canary.at)}: {outcome}")
    lines += [f"node {node}: {problem}" for node, problem in report.nodes.items()]
    lines += pool_lines(report)
    if report.metrics:
        lines += serving_lines(report.metrics, trend)
    return lines


def pool_lines(report: deploy.RunStatus) -> list[str]:
    """Per pool behind the global router: its processes' states and its own canary."""
    lines = []
    for pool in dict.fromkeys(s.pool for s in report.processes if s.pool):
        members = ", ".join(f"{s.name} {s.state.value}" for s in report.processes if s.pool == pool)
        canary = report.pool_canaries.get(pool)
        verdict = (
            ""
            if canary is None
            else f"; canary {ago(canary.at)}: "
            + (f"served by its workers in {canary.latency_s} s" if canary.ok else f"FAILED ({canary.error})")
        )
        lines.append(f"pool {pool}: {members}{verdict}")
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


def serving_lines(live: LiveMetrics, trend: bool) -> list[str]:
    """What the deployment serves, from its /metrics over the last window; with `trend`, sparklines."""
    # Two short lines, not one long one: `--watch` crops what is wider than the terminal.
    lines = [
        f"serving (last {live.window_s:.0f} s): {live.requests_per_s:.2f} req/s, {live.in_flight:g} in flight, "
        f"{live.queued:g} queued, {live.output_tokens_per_s:.1f} output tok/s",
        f"  TTFT p50/p99 {pair(live.ttft_ms)}, ITL p50/p99 {pair(live.itl_ms)}",
    ]
    lines += [
        f"  {name}: {worker.requests_per_s:.2f} req/s"
        + (f", KV cache {worker.kv_cache_usage:.0%}" if worker.kv_cache_usage is not None else "")
        for name, worker in live.workers.items()
    ]
    if trend and live.trend:
        lines.append(f"  req/s  {sparkline([point.requests_per_s for point in live.trend])}")
        lines.append(f"  TTFT   {sparkline([point.ttft_p50_ms or 0.0 for point in live.trend])}")
    return lines


# ------------------------------------------------------------------------------------------ benchmarks


def point_line(point: PointResult) -> str:
    """The progress line of one benchmark point."""
    figures = (
        f"{point.requests} requests in {point.measuring_s:.1f} s, {point.output_tokens_per_s:.1f} tok/s "
        f"({point.output_tokens_per_s_per_user:.1f}/user), TTFT p50 {point.ttft_ms.p50:.1f} ms"
        if point.ttft_ms
        else "no figures"
    )
    verdict = "valid" if point.valid else "INVALID: " + "; ".join(point.problems)
    return f"concurrency {point.concurrency}: {figures}, {point.errors} errors; {verdict}"


def bench_table(summaries: list[BenchSummary], width: int | None = None) -> Table:
    """The benchmark table for a terminal `width` wide (default: the console's; 80 through a pipe). Headers
    short and stacked on two lines, never cut; narrower than WIDE_TABLE, the columns NARROW_LEAVES_OUT are left to
    table.txt. One benchmark's name is the title; several are told apart by a number in the first
    column, their names under the table."""
    wide = (width or console.width) >= WIDE_TABLE
    shown = [i for i, column in enumerate(TABLE_COLUMNS) if wide or column.header not in NARROW_LEAVES_OUT]
    several = len(summaries) > 1
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, title_justify="left", caption_justify="left")
    for i in shown[0 if several else 1 :]:
        table.add_column(TABLE_COLUMNS[i].stacked or TABLE_COLUMNS[i].header, justify="left" if i == 0 else "right")
    numbers = {summary.label or summary.id: f"{n}" for n, summary in enumerate(summaries, 1)}
    for row in table_rows(summaries):
        cells = [numbers[row[0]], *row[1:]] if several else row
        table.add_row(*(cells[i] for i in shown[0 if several else 1 :]))
    table.title = None if several else series_name(summaries[0]) if summaries else None
    notes = [f"{numbers[s.label or s.id]}: {series_name(s)}" for s in summaries] if several else []
    if not wide:
        notes.append(f"{', '.join(NARROW_LEAVES_OUT)}: in table.txt (or a terminal {WIDE_TABLE} wide)")
    table.caption = "\n".join([*notes, *footnotes(summaries)]) or None
    return table


def series_name(summary: BenchSummary) -> str:
    return f"{summary.label or summary.id}: {summary.gpus} GPUs, ISL {summary.isl} / OSL {summary.osl}"
