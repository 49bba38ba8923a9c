"""Benchmarks, fast parts: workloads and aiperf's command line, reading aiperf's export, the validity
gate, sweep points, the frontier, and bad input."""

from __future__ import annotations

import json

import pytest

from slurmserve.bench.compare import compare
from slurmserve.bench.frontier import Measured, frontier
from slurmserve.bench.measure import BenchRequest, tokenizer_for
from slurmserve.bench.results import BenchSummary, gate, point_result
from slurmserve.bench.sweep import sweep_points
from slurmserve.bench.table import text_table
from slurmserve.bench.workload import Tokenizer, Workload, check_replay_covers, replay_trace_of
from slurmserve.config.recipe import BenchSpec, load_recipe
from slurmserve.errors import UserError
from slurmserve.observability.metrics import FrontendCounters

from ..conftest import plan_of
from ..helpers import slurmserve, slurmserve_in_process


def export(**changes) -> dict:
    """aiperf's profile_export_aiperf.json, the parts slurmserve reads (values as aiperf 0.13 writes them)."""
    latency = {"unit": "ms", "p50": 40.0, "p90": 45.0, "p99": 50.0, "avg": 41.0, "min": 30.0, "max": 52.0}
    found = {
        "request_count": {"avg": 40.0},
        "request_error_rate": {"avg": 0.0},
        "error_summary": [],
        "time_to_first_token": latency,
        "inter_token_latency": {**latency, "p50": 2.0, "p90": 2.5, "p99": 3.0},
        "request_latency": latency,
        "output_token_throughput": {"avg": 1200.0},
        "output_token_throughput_per_user": {"avg": 350.0},
        "request_throughput": {"avg": 75.0},
        "total_output_tokens": {"avg": 640.0},
        "output_sequence_length": {"min": 16.0, "avg": 16.0},
        "warmup_metrics": {"request_count": {"avg": 4.0}, "total_output_tokens": {"avg": 64.0}},
    }
    return found | changes


def test_the_recipe_profile_makes_dynamos_perf_job_shape():
    spec = load_recipe("gpt-oss-120b-disagg").bench
    assert (spec.isl, spec.osl, spec.concurrency_per_gpu, spec.seed, spec.ignore_eos) == (8192, 1024, [256], 100, True)
    workload = Workload(spec, gpus=8, replay=False)
    (point,) = workload.points()
    assert (point.concurrency, point.requests, point.warmup) == (2048, 20480, 2048)  # 256 per GPU x 8 GPUs
    argv = workload.aiperf_argv(
        "aiperf", plan_of("gpt-oss-120b-disagg", "two-node-8gpu.yaml"), point, Tokenizer("t", "/h"), "/o"
    )
    assert argv[:2] == ["aiperf", "profile"] and "--streaming" in argv
    inputs = [argv[i + 1] for i, word in enumerate(argv) if word == "--extra-inputs"]
    assert inputs[:3] == ["max_tokens:1024", "min_tokens:1024", "ignore_eos:true"]
    assert argv[argv.index("--random-seed") + 1] == "100" and argv[argv.index("--concurrency") + 1] == "2048"


def test_a_mocker_is_asked_for_text_of_the_benchmarks_length():
    plan = plan_of("mocker-disagg", "local.yaml")
    trace = replay_trace_of(plan)
    assert trace and trace.endswith("tiny-mock/replay.jsonl")
    workload = Workload(BenchSpec(osl=32, concurrency=[1, 4]), gpus=8, replay=True)
    assert workload.extra_inputs()[-1] == '{"nvext": {"annotations": ["output_replay_id:osl-32"]}}'
    assert [p.concurrency for p in workload.points()] == [1, 4]
    check_replay_covers(trace, 32)
    with pytest.raises(UserError, match=r"--osl 3000: .* no answer of that length \(nearest: 1920, 1984, 2048\)"):
        check_replay_covers(trace, 3000)


def test_the_command_line_changes_the_profile():
    spec = BenchRequest(concurrency=[2, 8], osl=32).applied_to(BenchSpec(concurrency_per_gpu=[4], isl=100))
    assert (spec.concurrencies(gpus=8), spec.isl, spec.osl) == ([2, 8], 100, 32)


def test_aiperfs_export_becomes_a_point():
    point = point_result(export(), concurrency=4, gpus=8, artifacts="c4")
    assert point.ttft_ms is not None and point.ttft_ms.p99 == 50.0 and point.itl_ms and point.itl_ms.p50 == 2.0
    assert point.output_tokens_per_s_per_gpu == 150.0 and point.requests == 40 and point.warmup_requests == 4
    assert gate(point, osl=16, ignore_eos=True, counted=FrontendCounters(44, 704)) == []


@pytest.mark.parametrize(
    "changes, counted, reason",
    [
        ({"error_summary": [{"count": 3}], "request_count": {"avg": 37.0}}, (41, 656), "3 of 40 requests failed"),
        ({"total_output_tokens": {"avg": 0.0}}, (44, 64), "0 output tokens were generated"),
        ({"output_sequence_length": {"min": 8.0}}, (44, 704), "outputs shorter than asked: as few as 8 of 16 tokens"),
        ({}, (40, 704), "the frontend counted 40 streamed requests served, aiperf 44"),
        ({}, (44, 2000), "the frontend counted 2000 output tokens, aiperf 704"),
    ],
)
def test_the_validity_gate_names_what_is_wrong(changes, counted, reason):
    point = point_result(export(**changes), concurrency=4, gpus=8, artifacts="c4")
    problems = gate(point, osl=16, ignore_eos=True, counted=FrontendCounters(*counted))
    assert any(reason in problem for problem in problems), problems


def test_a_frontend_that_did_not_answer_is_a_problem_too():
    point = point_result(export(), concurrency=4, gpus=8, artifacts="c4")
    assert gate(point, osl=16, ignore_eos=True, counted=None) == [
        "the frontend's /metrics did not answer, so its counters could not be checked"
    ]


def test_sweep_points_are_the_product_or_the_pairs():
    product = sweep_points(["decode.replicas=1,2", "prefill.args.max_batch_size=16,32"])
    assert [p.name for p in product] == [
        "decode.replicas=1,prefill.args.max_batch_size=16",
        "decode.replicas=1,prefill.args.max_batch_size=32",
        "decode.replicas=2,prefill.args.max_batch_size=16",
        "decode.replicas=2,prefill.args.max_batch_size=32",
    ]
    paired = sweep_points(["decode.replicas=1,2", "prefill.args.max_batch_size=16,32"], zipped=True)
    assert [p.assignments for p in paired] == [
        ("decode.replicas=1", "prefill.args.max_batch_size=16"),
        ("decode.replicas=2", "prefill.args.max_batch_size=32"),
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--vary", "decode.replicas"], "--vary 'decode.replicas': write FIELD=VALUE,VALUE"),
        (["--vary", "a=1,2", "--vary", "b=1", "--zip"], "--zip: every --vary needs as many values (2, 1 given)"),
        ([], "sweep: say what to vary"),
        (["--vary", "a=1", "--vary", "a=2"], "--vary: each field once (a twice)"),
        (["--vary", "a=1", "--concurrency", "1,x"], "--concurrency '1,x': must be whole numbers"),
    ],
)
def test_bad_sweeps_are_exit_2_before_anything_starts(argv, message):
    result = slurmserve_in_process("sweep", "--recipe", "mocker-agg", *argv)
    assert result.returncode == 2 and message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr


def test_a_profile_with_both_kinds_of_concurrency_is_refused():
    result = slurmserve(
        "plan", "--recipe", "mocker-agg", "--set", "bench.concurrency=[1]", "--set", "bench.concurrency_per_gpu=[2]"
    )
    assert result.returncode == 2 and "concurrency_per_gpu, not both" in " ".join(result.stderr.split())


def test_bench_of_a_run_that_does_not_exist_or_without_aiperf_is_exit_2(tmp_path):
    assert slurmserve("bench", "nosuchrun").returncode == 2
    result = slurmserve("bench", "compare", str(tmp_path))
    assert result.returncode == 2 and "holds no benchmark summary" in result.stderr


def test_the_frontier_keeps_what_nothing_beats():
    points = [Measured(x, y, 0.1, 0.1) for x, y in [(10, 100), (20, 80), (15, 70), (30, 20), (5, 90)]]
    assert [(p.x, p.y) for p in frontier(points)] == [(10, 100), (20, 80), (30, 20)]


def summary(label: str, **point) -> BenchSummary:
    found = point_result(export(), concurrency=4, gpus=8, artifacts="c4").model_copy(update=point)
    return BenchSummary(
        id="x",
        run="r",
        recipe="mocker-disagg",
        backend="local",
        engine="mocker",
        mode="disagg",
        model="m",
        gpus=8,
        endpoint_type="chat",
        isl=32,
        osl=16,
        started="now",
        points=[found],
        label=label,
    )


def test_compare_puts_benchmarks_side_by_side_with_the_reasons_of_invalid_points(tmp_path):
    for name, changes in (("a", {}), ("b", {"valid": False, "problems": ["0 output tokens were generated"]})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(summary(name, **changes).model_dump_json())
    summaries, folder = compare([str(tmp_path / "a"), str(tmp_path / "b")], tmp_path / "both")
    table = (folder / "table.txt").read_text()
    assert [s.label for s in summaries] == ["a", "b"] and "invalid: b concurrency 4: 0 output tokens" in table
    assert (folder / "pareto.png").stat().st_size > 0 and (folder / "ttft_vs_throughput.png").exists()
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["version"] == 1
    assert "\npoint  conc  n   req/s" in text_table(summaries)


def test_aiperf_reads_a_local_models_tokenizer_from_a_cache_layout(tmp_path):
    found = tokenizer_for(str(plan_of("mocker-agg", "local.yaml").model_path), tmp_path)
    snapshot = tmp_path / "hf" / "hub" / "models--local--tiny-mock"
    assert found == Tokenizer("local/tiny-mock", str(tmp_path / "hf"))
    assert (snapshot / "refs" / "main").read_text() == "0" * 40
    assert (snapshot / "snapshots" / ("0" * 40) / "tokenizer.json").exists()
    staged = "/cache/hub/models--openai--gpt-oss-120b/snapshots/" + "b" * 40
    assert tokenizer_for(staged, tmp_path) == Tokenizer("openai/gpt-oss-120b", "/cache", "b" * 40)


def test_two_benchmarks_of_one_second_get_ids_of_their_own(tmp_path):
    from slurmserve.bench import measure

    first = measure.unused_bench_id(tmp_path)
    (tmp_path / first).mkdir()
    second = measure.unused_bench_id(tmp_path)
    (tmp_path / second).mkdir()
    assert len({first, second, measure.unused_bench_id(tmp_path)}) == 3
