"""Benchmarks a performance engineer can trust: the default sample, the p99 of few requests marked, the
frontier that noise does not decide, the plots' axes and legends, `bench compare`'s refusal and labels,
and the table at 80 columns."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from slurmserve.bench import measure as measuring
from slurmserve.bench.compare import benchmark_folders, compare
from slurmserve.bench.frontier import RELATIVE_FLOOR, Measured, dominates, frontier, frontier_line, measured
from slurmserve.bench.plots import FRONTIER_LABEL, draw_pareto
from slurmserve.bench.results import gate, median_interval, per_user_rates
from slurmserve.bench.table import TABLE_COLUMNS, text_table
from slurmserve.bench.workload import MIN_MEASURING_S, MIN_REQUESTS, Point, Tokenizer, Workload
from slurmserve.cli.output import bench_table
from slurmserve.config.recipe import load_recipe
from slurmserve.errors import UserError
from slurmserve.observability.metrics import FrontendCounters

from ..conftest import plan_of
from .test_bench import summary


def test_the_default_sample_is_200_requests_and_30_s_or_the_recipes_larger_count():
    mocker = Workload(load_recipe("mocker-disagg").bench, gpus=4, replay=True)
    assert [(p.requests, p.min_measuring_s) for p in mocker.points()] == [(MIN_REQUESTS, MIN_MEASURING_S)] * 2
    assert [p.requests for p in mocker.points(quick=True)] == [10, 40]  # the recipe's 10 per concurrency
    assert [(p.requests, p.min_measuring_s) for p in mocker.points(requests=7)] == [(7, 0.0)] * 2
    (big,) = Workload(load_recipe("gpt-oss-120b-disagg").bench, gpus=8, replay=False).points()
    assert big.requests == 20480  # perf.yaml's 10 x 2048 in flight: more than 200


def test_a_duration_bound_point_tells_aiperf_to_wait_for_every_answer():
    workload = Workload(load_recipe("mocker-agg").bench, gpus=1, replay=False)
    plan = plan_of("mocker-agg", "local.yaml")
    argv = workload.aiperf_argv("aiperf", plan, Point(4, 900, 4, 30.0, duration_s=30.0), Tokenizer("t", "/h"), "/o")
    assert argv[argv.index("--benchmark-duration") + 1] == "30" and "--benchmark-grace-period" in argv
    assert "--benchmark-duration" not in workload.aiperf_argv(
        "aiperf", plan, Point(4, 9, 4), Tokenizer("t", "/h"), "/o"
    )


@pytest.mark.parametrize(
    ("before", "runs", "expected"),
    [
        # no rate known: bound by its count; 200 requests took 10 s, so measured again for 30 s
        (0.0, [(200, 10.0), (610, 30.2)], [(200, None), (2400, 30.0)]),
        # 200 requests took 40 s: the count was the later bound, one run
        (0.0, [(200, 40.0)], [(200, None)]),
        # the last point served 20/s: 200 requests come in 10 s, so bound by 30 s at once
        (20.0, [(650, 30.1)], [(2400, 30.0)]),
        # ...but this point served fewer in its 30 s: measured again for its count
        (20.0, [(120, 30.1), (200, 50.0)], [(2400, 30.0), (200, None)]),
    ],
)
def test_a_point_measures_until_both_its_requests_and_its_seconds_are_done(monkeypatch, before, runs, expected):
    sent = []
    outcomes = iter(runs)

    def measure_once(run, workload, point, folder, aiperf, tokenizer):
        sent.append((point.requests, point.duration_s))
        requests, seconds = next(outcomes)
        figures = {"requests": requests, "measuring_s": seconds, "requests_per_s": requests / seconds, "aiperf_s": 1.0}
        return summary("a", **figures).points[0]

    monkeypatch.setattr(measuring, "measure_once", measure_once)
    point = Point(1, MIN_REQUESTS, 1, MIN_MEASURING_S)
    result = measuring.measure(None, None, point, None, "aiperf", None, before)
    assert sent == expected and result.requests == runs[-1][0] and result.aiperf_s == len(runs)  # both runs' time


def test_a_difference_within_the_spread_dominates_nothing():
    noise = 1.0
    assert not dominates(Measured(749.7, 100.0, noise, noise), Measured(749.0, 99.5, noise, noise))
    assert dominates(Measured(749.7, 150.0, noise, noise), Measured(749.0, 100.0, noise, noise))
    # much more per GPU, but clearly less per user: a trade-off, both on the frontier
    assert not dominates(Measured(700.0, 150.0, noise, noise), Measured(749.0, 100.0, noise, noise))
    reruns = [[(749.0, 100.2), (749.6, 99.9)], [(749.7, 99.8), (749.1, 100.1)]]
    frontiers = [frontier([Measured(x, y, 7.5, 2.0, concurrency=c) for c, (x, y) in enumerate(run)]) for run in reruns]
    assert [{p.concurrency for p in found} for found in frontiers] == [{0, 1}, {0, 1}]  # noise moved nothing


def test_a_points_spread_comes_from_its_own_requests_and_never_less_than_the_floor():
    wide = summary("a", per_user_median_low=300.0, per_user_median_high=500.0, request_latency_cv=0.5, requests=25)
    narrow = summary("a", per_user_median_low=349.0, per_user_median_high=351.0, request_latency_cv=0.0)
    assert measured(wide.points[0]).x_noise == 150.0  # the far end of the median's interval
    assert measured(wide.points[0]).y_noise == pytest.approx(2 * 0.5 / 5 * 150.0)  # two standard errors
    assert measured(narrow.points[0]).x_noise == pytest.approx(RELATIVE_FLOOR * 350.0)


def test_the_medians_interval_holds_two_modes_honestly(tmp_path):
    # the mock engine's users: most see ~750 tokens/s, a third get their tokens in one burst
    rates = [750.0 + i % 7 for i in range(130)] + [50_000.0] * 70
    low, high = median_interval(rates)
    assert 750 <= low <= high <= 757  # the median is among the steady ones: bursts do not widen it
    records = [
        '{"metadata":{"benchmark_phase":"warmup"},"metrics":{"output_token_throughput_per_user":{"value":1.0}}}',
        '{"metadata":{"benchmark_phase":"profiling"},"metrics":{"output_token_throughput_per_user":{"value":2.5}}}',
    ]
    (tmp_path / "profile_export.jsonl").write_text("\n".join(records) + "\n")
    assert per_user_rates(tmp_path) == [2.5]  # warm-up requests left out


def test_the_p99_of_fewer_than_100_requests_is_marked_with_a_footnote():
    few, many = summary("few", requests=40), summary("many", requests=200)
    table = text_table([few, many])
    rows = {line.split()[0]: line for line in table.splitlines() if line.startswith(("few ", "many "))}
    assert "50.0~" in rows["few"] and "~" not in rows["many"]
    assert "~ p99 of fewer than 100 requests" in table
    assert "~ p99" not in text_table([many])


def test_table_txt_says_what_each_column_is_once():
    table = text_table([summary("a")])
    for column in TABLE_COLUMNS:
        assert table.count(column.meaning) == 1
    assert "TTFT not counted" in table  # why tok/s per user can exceed tok/s at concurrency 1


def rendered(summaries, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(bench_table(summaries, width))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 200])
def test_the_table_is_readable_at_80_columns(width):
    long_label = summary("decode.replicas=2,prefill.replicas=2", output_tokens_per_s=123456.7, requests=50)
    text = rendered([summary("decode.replicas=1"), long_label], width)
    assert "…" not in text and max(map(len, text.splitlines())) <= width
    for word in ("conc", "tok/s", "/GPU", "/user", "TTFT", "ITL", "valid", "123456.7"):
        assert word in text
    assert "1: decode.replicas=1: 8 GPUs, ISL 32 / OSL 16" in text  # the series named under the table
    assert ("0 (0.0%)" in text) == (width >= 120) and ("in table.txt" in text) == (width < 120)


def legend_of(summaries) -> list[str]:
    from matplotlib import pyplot

    figure, axes = pyplot.subplots()
    draw_pareto(axes, summaries)
    labels = axes.get_legend_handles_labels()[1]
    pyplot.close(figure)
    return labels


def test_the_legend_has_the_gpus_and_a_frontier_only_when_one_is_drawn():
    one = summary("a")
    other = summary("b", output_tokens_per_s_per_gpu=300.0)
    assert legend_of([one]) == ["a (8 GPUs)"]
    assert sorted(legend_of([one, other])) == ["a (8 GPUs)", "b (8 GPUs)", FRONTIER_LABEL]
    mixed = other.model_copy(update={"osl": 64})
    assert FRONTIER_LABEL not in legend_of([one, mixed])  # no frontier across workloads


def saved(tmp_path, name: str, **changes):
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(summary(name.split("/")[-1]).model_copy(update=changes).model_dump_json())
    return folder


def test_compare_refuses_to_mix_workloads_unless_asked(tmp_path):
    saved(tmp_path, "a")
    saved(tmp_path, "b", isl=128, osl=64)
    with pytest.raises(UserError, match="different workloads .*ISL 128 / OSL 64.*--mix-workloads"):
        compare([str(tmp_path / "a"), str(tmp_path / "b")], tmp_path / "out")
    summaries, _ = compare([str(tmp_path / "a"), str(tmp_path / "b")], tmp_path / "out", mix_workloads=True)
    assert [s.label for s in summaries] == ["a [chat, ISL 32 / OSL 16]", "b [chat, ISL 128 / OSL 64]"]


def test_compare_labels_each_series_distinctly(tmp_path):
    saved(tmp_path, "one/decode.replicas=1", run="sweep-1")
    saved(tmp_path, "two/decode.replicas=1", run="sweep-2")
    sources = [str(tmp_path / "one" / "decode.replicas=1"), str(tmp_path / "two" / "decode.replicas=1")]
    summaries, _ = compare(sources, tmp_path / "out")
    assert [s.label for s in summaries] == ["decode.replicas=1 (sweep-1/x)", "decode.replicas=1 (sweep-2/x)"]
    twice, _ = compare(sources[:1] * 2, tmp_path / "out2")
    assert len({s.label for s in twice}) == 2


def test_compare_takes_a_sweep_folder_a_run_or_says_what_does_not_exist(tmp_path, monkeypatch):
    points = [saved(tmp_path, "sweep/decode.replicas=1"), saved(tmp_path, "sweep/decode.replicas=2")]
    assert benchmark_folders(str(tmp_path / "sweep")) == points
    monkeypatch.setenv("SLURMSERVE_HOME", str(tmp_path / "home"))
    older, newer = (
        saved(tmp_path, "home/runs/demo/bench/20260101-000000"),
        saved(tmp_path, "home/runs/demo/bench/20260102-000000"),
    )
    assert older.exists() and benchmark_folders("demo") == [newer]
    with pytest.raises(UserError, match=f"{tmp_path / 'nowhere'} does not exist"):
        benchmark_folders(str(tmp_path / "nowhere"))


def test_the_frontier_is_said_in_words_where_one_is_drawn():
    one, other = summary("a"), summary("b", output_tokens_per_s_per_gpu=300.0)
    assert frontier_line([one]) is None  # one point: nothing to choose between
    assert frontier_line([one, other.model_copy(update={"osl": 64})]) is None  # workloads mixed
    assert frontier_line([one, other]).endswith(": b c4")  # b: twice a's per GPU, the same per user
    assert "frontier (tok/s/user against tok/s/GPU" in text_table([one, other])


def test_the_supervisors_canaries_during_a_long_point_do_not_fail_the_gate():
    point = summary("a").points[0]  # 640 output tokens and 4 of the warm-up: 704
    canaries = FrontendCounters(streamed_ok=44, output_tokens=704 + 80, unary_ok=5)  # five 16-token canaries
    assert gate(point, 16, False, canaries) == []
    unexplained = FrontendCounters(streamed_ok=44, output_tokens=704 + 80, unary_ok=0)
    assert gate(point, 16, False, unexplained) == ["the frontend counted 784 output tokens, aiperf 704"]
