"""`bench compare`: benchmarks from anywhere (a benchmark's folder, a sweep's, a run's) side by side, in one
table and one set of plots, each series named distinctly; benchmarks of different workloads only when asked
(their figures answer different questions, and one frontier across them would mislead)."""

from __future__ import annotations

import time
from pathlib import Path

from ..config.fields import IDENTIFIER
from ..errors import UserError
from ..private import make_out_dir, make_private_dir, write_whole
from ..runs import RunPaths, run_dir_for
from . import plots
from .results import SUMMARY_JSON, BenchSummary, read_summary
from .table import text_table


def benchmark_folders(source: str) -> list[Path]:
    """The benchmarks a name on the command line stands for: a benchmark's folder; a sweep's folder (one
    benchmark per point); a run's directory or a run's name (its latest benchmark)."""
    path = Path(source).expanduser()
    if not path.exists() and IDENTIFIER.fullmatch(source) and run_dir_for(source, None).is_dir():
        path = run_dir_for(source, None)
    if not path.exists():
        raise UserError(f"bench compare: {source} does not exist (nor is it the name of a run)")
    if (path / SUMMARY_JSON).is_file():
        return [path]
    benchmarks = RunPaths(path).bench
    if benchmarks.is_dir():  # a run's: its latest benchmark (their names are their start times)
        measured = sorted(child for child in benchmarks.iterdir() if (child / SUMMARY_JSON).is_file())
        if measured:
            return measured[-1:]
        raise UserError(f"bench compare: run {path.name} has no finished benchmark (`slurmserve bench {path.name}`)")
    points = sorted(child for child in path.iterdir() if (child / SUMMARY_JSON).is_file()) if path.is_dir() else []
    if not points:
        raise UserError(
            f"bench compare: {source} holds no benchmark summary that can be read (summary.json): name a "
            "benchmark's folder (RUN_DIR/bench/<id>), a sweep's folder or a run"
        )
    return points


def distinct(summaries: list[BenchSummary], mixed: bool) -> list[BenchSummary]:
    """Each benchmark labelled so that no two read alike: its own label (its run's and id's when it has
    none), with its workload when workloads are mixed, its run and id when two labels are still alike,
    and a number when even those are (a folder named twice)."""
    labels = [summary.label or f"{summary.run}/{summary.id}" for summary in summaries]
    if mixed:
        labels = [f"{label} [{summary.workload}]" for label, summary in zip(labels, summaries, strict=True)]
    labels = [
        f"{label} ({summary.run}/{summary.id})" if labels.count(label) > 1 and summary.label else label
        for label, summary in zip(labels, summaries, strict=True)
    ]
    labels = [f"{label} #{n}" if labels.count(label) > 1 else label for n, label in enumerate(labels, 1)]
    return [summary.model_copy(update={"label": label}) for label, summary in zip(labels, summaries, strict=True)]


def compare(
    sources: list[str], out: Path | None = None, mix_workloads: bool = False
) -> tuple[list[BenchSummary], Path]:
    """Benchmarks side by side: their table and plots in `out` (made as the user's new files are, to
    share; default: a private compare-<time> folder beside the first)."""
    if not sources:
        raise UserError("bench compare: name the benchmarks to compare (folders, sweep folders or runs)")
    folders = [folder for source in sources for folder in benchmark_folders(source)]
    summaries = []
    for folder in folders:
        summary = read_summary(folder)
        if summary is None:
            raise UserError(f"bench compare: {folder} holds no benchmark summary that can be read (summary.json)")
        summaries.append(summary)
    workloads = sorted({summary.workload for summary in summaries})
    if len(workloads) > 1 and not mix_workloads:
        raise UserError(
            f"bench compare: these benchmarks measure different workloads ({'; '.join(workloads)}), whose "
            "figures are not comparable: compare one workload at a time, or pass --mix-workloads to see them "
            "side by side (each series named with its workload, no frontier across them)"
        )
    summaries = distinct(summaries, mixed=len(workloads) > 1)
    target = out or folders[0].parent / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    if out is None:
        make_private_dir(target)
    else:
        make_out_dir(out)
    write_whole(target / "table.txt", text_table(summaries).encode(), private=out is None)
    plots.draw(summaries, target, private=out is None)
    return summaries, target
