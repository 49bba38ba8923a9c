"""What the commands show: the two consoles, and the tables and lines that plans and benchmarks are
shown as (run states: status_output)."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from rich.console import Console
from rich.table import Table

from .. import deploy
from ..bench.results import TABLE_COLUMNS, BenchSummary, PointResult, table_rows
from ..planning.plan import Plan

console = Console(soft_wrap=True)  # long lines (URLs, curl commands) stay copyable
stderr = Console(stderr=True, soft_wrap=True)  # one paragraph; the terminal wraps it


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
        f"{point.requests} requests, {point.output_tokens_per_s:.1f} tok/s ({point.output_tokens_per_s_per_user:.1f}"
        f"/user), TTFT p50 {point.ttft_ms.p50:.1f} ms"
        if point.ttft_ms
        else "no figures"
    )
    verdict = "valid" if point.valid else "INVALID: " + "; ".join(point.problems)
    return f"concurrency {point.concurrency}: {figures}, {point.errors} errors; {verdict}"


def bench_table(summaries: list[BenchSummary]) -> Table:
    table = Table(*TABLE_COLUMNS)
    for row in table_rows(summaries):
        table.add_row(*row)
    return table
