"""The plots beside a benchmark's summary, drawn with matplotlib: throughput per GPU against tokens/s per
user (the Pareto view Dynamo's and CloudAI's reports use, with the frontier marked) and TTFT against
throughput. `aiperf plot` draws these views too, but renders PNGs through Chrome (kaleido), which
clusters rarely have; matplotlib draws them anywhere."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..private import write_whole
from .frontier import frontier_of, measured
from .results import BenchSummary

PARETO_PNG = "pareto.png"
TTFT_PNG = "ttft_vs_throughput.png"
# The axes' labels define their figures, once, in words.
PER_USER_AXIS = (
    "output tokens/s per user: the median request's decode speed\n"
    "(output tokens after the first / the time after the first token; TTFT not counted)"
)
PER_GPU_AXIS = "output tokens/s per GPU\n(all output tokens / measuring time / the deployment's GPUs)"
TTFT_AXIS = "TTFT p50 (ms): time to first token of the median request"
FRONTIER_LABEL = "frontier (not beaten on both axes beyond the spread)"
CAPTION = "cN: N requests in flight at once. Bars: +- the run-to-run spread of each figure."
HEADROOM = 1.12  # above the largest point: room for its label


def literal(text: str) -> str:
    """Text drawn as written: matplotlib reads `$...$` as math (and fails on what is not)."""
    return text.replace("$", r"\$")


def series_label(summary: BenchSummary) -> str:
    """A legend entry: the benchmark's label and its GPUs (per-GPU figures depend on them)."""
    gpus = f"{summary.gpus} GPU" + ("" if summary.gpus == 1 else "s")
    return literal(f"{summary.shown_as} ({gpus})")


def from_zero(axes: Any) -> None:
    """Both axes from zero: a difference looks as large as it is (autoscaling zoomed into 749.0-749.7, a
    0.1% window in which noise looked like a trade-off)."""
    _, x_high = axes.get_xlim()
    _, y_high = axes.get_ylim()
    axes.set_xlim(0, max(x_high, 1e-9) * HEADROOM)
    axes.set_ylim(0, max(y_high, 1e-9) * HEADROOM)


def draw_pareto(axes: Any, summaries: list[BenchSummary]) -> None:
    """Each benchmark's valid points with their spread, labelled by concurrency; the frontier marked
    (and in the legend) when there are points of one workload to choose between."""
    for summary in summaries:
        points = [measured(point, summary.label) for point in summary.points if point.valid]
        axes.errorbar(
            [p.x for p in points],
            [p.y for p in points],
            xerr=[p.x_noise for p in points],
            yerr=[p.y_noise for p in points],
            marker="o",
            capsize=3,
            label=series_label(summary),
        )
        for point in points:
            axes.annotate(
                f"c{point.concurrency}", (point.x, point.y), textcoords="offset points", xytext=(5, 5), fontsize=8
            )
    best = frontier_of(summaries)
    if best:
        axes.plot([p.x for p in best], [p.y for p in best], color="black", linestyle="--", linewidth=0.8)
        axes.scatter(
            [p.x for p in best], [p.y for p in best], s=160, facecolors="none", edgecolors="black", label=FRONTIER_LABEL
        )


def draw(summaries: list[BenchSummary], folder: Path, *, private: bool = True) -> list[Path]:
    """Both PNGs into `folder` (0600 if `private`, else as the user's new files are), one series per
    benchmark; only valid points are drawn."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    pareto, pareto_axes = pyplot.subplots(figsize=(8, 6))
    ttft, ttft_axes = pyplot.subplots(figsize=(8, 6))
    draw_pareto(pareto_axes, summaries)
    for summary in summaries:
        valid = [point for point in summary.points if point.valid]
        ttft_axes.plot(
            [point.output_tokens_per_s_per_gpu for point in valid],
            [point.ttft_ms.p50 if point.ttft_ms else 0 for point in valid],
            marker="o",
            label=series_label(summary),
        )
    title = literal(", ".join(sorted({f"{s.recipe} (ISL {s.isl}, OSL {s.osl})" for s in summaries})))
    for figure, axes, x_label, y_label in (
        (pareto, pareto_axes, PER_USER_AXIS, PER_GPU_AXIS),
        (ttft, ttft_axes, PER_GPU_AXIS, TTFT_AXIS),
    ):
        from_zero(axes)
        axes.set_xlabel(x_label, fontsize=8)
        axes.set_ylabel(y_label, fontsize=8)
        axes.set_title(title, fontsize=9)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
        figure.text(0.01, 0.005, CAPTION, fontsize=7, color="dimgray")
    return [save(figure, folder / name, private) for figure, name in ((pareto, PARETO_PNG), (ttft, TTFT_PNG))]


def save(figure: Any, path: Path, private: bool) -> Path:
    from matplotlib import pyplot

    figure.tight_layout(rect=(0, 0.03, 1, 1))  # room for the caption
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=110)
    pyplot.close(figure)
    write_whole(path, image.getvalue(), private=private)
    return path
