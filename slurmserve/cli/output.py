"""What the commands show: the two consoles, and the tables and lines that plans and benchmarks are
shown as (run states: status_output)."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from rich import box
from rich.console import Console
from rich.table import Table

from .. import deploy
from ..bench.results import BenchSummary, PointResult
from ..bench.table import TABLE_COLUMNS, footnotes, table_rows
from ..planning.plan import Plan

console = Console(soft_wrap=True)  # long lines (URLs, curl commands) stay copyable
stderr = Console(stderr=True, soft_wrap=True)  # one paragraph; the terminal wraps it

# The benchmark table: what it leaves to table.txt below this width.
WIDE_TABLE = 120
NARROW_LEAVES_OUT = ("req/s", "latency ms", "errors")


def warn(plan: Plan) -> None:
    """What the plan cannot honour, on stderr: said, never silently dropped."""
    for warning in plan.warnings:
        stderr.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


def to_json(value: object, kind: Any) -> str:
    return TypeAdapter(kind).dump_json(value, indent=2).decode()


def say_ready(deployment: deploy.Deployment, sample: dict[str, Any]) -> None:
    """A deployment that serves: where, its sample completion, and the commands to try, follow and stop it."""
    run, plan = deployment.run, deployment.plan
    choice = sample["choices"][0]
    text = ((choice.get("message") or {}).get("content") or "").strip() or "(no text)"
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
    numbers = {summary.shown_as: f"{n}" for n, summary in enumerate(summaries, 1)}
    for row in table_rows(summaries):
        cells = [numbers[row[0]], *row[1:]] if several else row
        table.add_row(*(cells[i] for i in shown[0 if several else 1 :]))
    table.title = None if several else series_name(summaries[0]) if summaries else None
    notes = [f"{numbers[s.shown_as]}: {series_name(s)}" for s in summaries] if several else []
    if not wide:
        notes.append(f"{', '.join(NARROW_LEAVES_OUT)}: in table.txt (or a terminal {WIDE_TABLE} wide)")
    table.caption = "\n".join([*notes, *footnotes(summaries)]) or None
    return table


def series_name(summary: BenchSummary) -> str:
    return f"{summary.shown_as}: {summary.gpus} GPUs, ISL {summary.isl} / OSL {summary.osl}"


def gpu_ranges(gpus: list[int]) -> str:
    """[0, 1, 2, 3, 6] -> `0-3,6`: a worker's eight GPUs in three characters, not fifteen."""
    spans: list[list[int]] = []
    for gpu in gpus:
        if spans and gpu == spans[-1][-1] + 1:
            spans[-1].append(gpu)
        else:
            spans.append([gpu])
    return ",".join(f"{span[0]}-{span[-1]}" if len(span) > 2 else ",".join(map(str, span)) for span in spans) or "-"
