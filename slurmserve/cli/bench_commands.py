"""The benchmark commands: `bench` a serving run (or `bench compare` benchmarks), `sweep` deployments."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import deploy
from ..bench.frontier import frontier_line
from ..bench.measure import BenchRequest
from ..bench.results import BenchSummary
from ..bench.sweep import sweep_points
from ..bench.table import invalid_points
from ..errors import DeploymentFailed
from ..runs import open_run
from .exits import clean_errors, said_on_interrupt
from .options import (
    AiperfOption,
    ConcurrencyOption,
    FreshOption,
    HostsOption,
    IslOption,
    OslOption,
    RecipeOption,
    RequestsOption,
    SetOption,
    TimeoutOption,
    numbers,
    timeout_s,
)
from .output import bench_table, console, point_line, stderr

QuickOption = typer.Option(
    False,
    "--quick",
    help="A smoke run: the recipe's request count alone (default: at least 200 requests and 30 s a point)",
)


@clean_errors
def bench(
    run: str = typer.Argument(..., metavar="RUN | compare", help="A serving run; or `compare` and benchmark folders"),
    folders: Optional[list[str]] = typer.Argument(
        None, metavar="[DIR|RUN...]", help="With compare: benchmark folders, sweep folders or runs"
    ),
    concurrency: Optional[str] = ConcurrencyOption,
    isl: Optional[int] = IslOption,
    osl: Optional[int] = OslOption,
    requests: Optional[int] = RequestsOption,
    aiperf: Optional[str] = AiperfOption,
    out: Optional[Path] = typer.Option(None, "--out", help="With compare: where the combined table and plot go"),
    fresh: bool = FreshOption,
    json_out: bool = typer.Option(False, "--json", help="Print the summary (summary.json) instead of the table"),
    quick: bool = QuickOption,
    mix: bool = typer.Option(False, "--mix-workloads", help="With compare: allow benchmarks of different ISL/OSL"),
) -> None:
    """Benchmark a serving run with aiperf, a point per concurrency (exit 1 if a point fails the validity
    gate); `bench compare DIR|RUN...` puts benchmarks side by side."""
    if run == "compare":
        compare(folders or [], out, mix)
        return
    request = BenchRequest(
        numbers(concurrency, "--concurrency"), isl, osl, requests, aiperf, fresh_between_points=fresh, quick=quick
    )
    progress = stderr if json_out else console  # with --json, stdout is the summary alone
    with said_on_interrupt(f"bench of run {run} interrupted: aiperf stopped, the point it measured left incomplete"):
        summary, folder = deploy.bench(open_run(run), request, lambda point: progress.print(point_line(point)))
    if json_out:
        print(summary.model_dump_json(indent=2))
    else:
        console.print(bench_table([summary]), soft_wrap=False)  # its notes wrap at the table's width
    progress.print(f"results: {folder / 'summary.json'} (with table.txt, the plots, aiperf's own files per point)")
    if not summary.valid:
        raise DeploymentFailed(
            f"run {run}: {sum(not p.valid for p in summary.points)} point(s) failed the validity gate"
        )


def compare(sources: list[str], out: Path | None, mix_workloads: bool) -> None:
    """`bench compare`: the benchmarks' table side by side, their invalid points, where the plots went."""
    summaries, folder = deploy.compare(sources, out, mix_workloads)
    console.print(bench_table(summaries), soft_wrap=False)  # its notes wrap at the table's width
    said_frontier(summaries)
    for line in invalid_points(summaries):
        console.print(f"invalid: {line}", highlight=False)
    console.print(f"table and plots: {folder}")


def said_frontier(summaries: list[BenchSummary]) -> None:
    """Which points are on the Pareto plot's frontier, in words (none said where none is drawn)."""
    line = frontier_line(summaries)
    if line:
        console.print(line, highlight=False)


@clean_errors
def sweep(
    recipe: str = RecipeOption,
    hosts: Optional[str] = HostsOption,
    set_: list[str] = SetOption,
    vary: list[str] = typer.Option([], "--vary", help="A field and its values: --vary decode.replicas=1,2"),
    zipped: bool = typer.Option(False, "--zip", help="Pair the --vary lists (i-th values together), not every mix"),
    concurrency: Optional[str] = ConcurrencyOption,
    isl: Optional[int] = IslOption,
    osl: Optional[int] = OslOption,
    requests: Optional[int] = RequestsOption,
    aiperf: Optional[str] = AiperfOption,
    out: Optional[Path] = typer.Option(None, "--out", help="The sweep's folder (default: one per command)"),
    timeout: float = TimeoutOption,
    fresh: bool = FreshOption,
    quick: bool = QuickOption,
    remeasure: bool = typer.Option(False, "--remeasure", help="Measure every point again, ignoring saved results"),
) -> None:
    """Deploy, benchmark and cancel one deployment per combination of the --vary values (exit 1 if a
    point failed); run again, it measures only what is missing or would measure other numbers now
    (another workload, recipe, engine config, hosts file or version)."""
    points, timeout = sweep_points(vary, zipped), timeout_s(timeout)
    request = BenchRequest(
        numbers(concurrency, "--concurrency"), isl, osl, requests, aiperf, fresh_between_points=fresh, quick=quick
    )
    console.print(f"sweep of {len(points)} point(s): " + "; ".join(point.name for point in points), highlight=False)
    with said_on_interrupt("sweep interrupted: its deployments cancelled and aiperf stopped; run it again to resume"):
        report = deploy.sweep(
            recipe, hosts, set_, points, request, out=out, timeout=timeout, remeasure=remeasure, say=console.print
        )
    if report.summaries:
        console.print(bench_table(report.summaries), soft_wrap=False)  # its notes wrap at the table's width
        said_frontier(report.summaries)
    console.print(
        f"sweep folder: {report.folder} (table.txt, pareto.png with the frontier, a folder per point); "
        f"measured {len(report.measured)}, skipped {len(report.skipped)}, failed {len(report.failed)}"
    )
    invalid = invalid_points(report.summaries)
    if report.failed or invalid:
        raise DeploymentFailed("; ".join([*(f"{name}: {why}" for name, why in report.failed.items()), *invalid]))
