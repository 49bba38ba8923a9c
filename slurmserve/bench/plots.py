"""The plots beside a benchmark's summary, drawn with matplotlib: throughput per GPU against tokens/s per
user (the Pareto view Dynamo's and CloudAI's reports use, with the frontier marked) and TTFT against
throughput. `aiperf plot` draws these views too, but renders PNGs through Chrome (kaleido), which
clusters rarely have; matplotlib draws them anywhere."""

from __future__ import annotations

import io
from pathlib import Path

from ..private import write_whole
from .results import BenchSummary

PARETO_PNG = "pareto.png"
TTFT_PNG = "ttft_vs_throughput.png"


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (more of each is better), by x."""
    best: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda point: (-point[0], -point[1])):
        if not best or y > best[-1][1]:
            best.append((x, y))
    return sorted(best)


def literal(text: str) -> str:
    """Text drawn as written: matplotlib reads `$...$` as math (and fails on what is not)."""
    return text.replace("$", r"\$")


def draw(summaries: list[BenchSummary], folder: Path, *, private: bool = True) -> list[Path]:
    """Both PNGs into `folder` (0600 if `private`, else as the user's new files are), one series per
    benchmark (points labelled by concurrency); only valid points are drawn."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    written = []
    pareto, pareto_axes = pyplot.subplots(figsize=(7, 5))
    ttft, ttft_axes = pyplot.subplots(figsize=(7, 5))
    everything: list[tuple[float, float]] = []
    for summary in summaries:
        valid = [point for point in summary.points if point.valid]
        label = literal(summary.label or summary.id)
        xs = [point.output_tokens_per_s_per_user for point in valid]
        ys = [point.output_tokens_per_s_per_gpu for point in valid]
        everything += zip(xs, ys, strict=True)
        pareto_axes.plot(xs, ys, marker="o", label=label)
        ttft_axes.plot(ys, [point.ttft_ms.p50 if point.ttft_ms else 0 for point in valid], marker="o", label=label)
        for point, x, y in zip(valid, xs, ys, strict=True):
            pareto_axes.annotate(f"c{point.concurrency}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    best = frontier(everything)
    if best:
        frontier_x, frontier_y = [x for x, _ in best], [y for _, y in best]
        pareto_axes.step(frontier_x, frontier_y, where="pre", color="black", linestyle="--", label="frontier")
        pareto_axes.scatter(frontier_x, frontier_y, s=120, facecolors="none", edgecolors="black")
    title = literal(", ".join(sorted({f"{s.recipe} (ISL {s.isl}, OSL {s.osl})" for s in summaries})))
    for axes, x_label, y_label in (
        (pareto_axes, "output tokens/s per user", "output tokens/s per GPU"),
        (ttft_axes, "output tokens/s per GPU", "TTFT p50 (ms)"),
    ):
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.set_title(title, fontsize=9)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    for figure, name in ((pareto, PARETO_PNG), (ttft, TTFT_PNG)):
        figure.tight_layout()
        image = io.BytesIO()
        figure.savefig(image, format="png", dpi=110)
        pyplot.close(figure)
        write_whole(folder / name, image.getvalue(), private=private)
        written.append(folder / name)
    return written
