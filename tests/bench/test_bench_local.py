"""`slurmserve bench` for real on this machine: the real aiperf against the real frontend and mock
workers; the validity gate against a worker killed mid-run and against outputs shorter than asked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurmserve.bench.results import BenchSummary
from slurmserve.runs import open_run, runs_root
from slurmserve.transport.procfs import group_members, read_pid_record

from ..helpers import slurmserve, wait_until

pytestmark = pytest.mark.slow


def deploy(run: str, recipe: str, *sets: str) -> None:
    argv = [word for assignment in sets for word in ("--set", assignment)]
    result = slurmserve("submit", "--recipe", recipe, "--name", run, *argv, "--timeout", "120")
    assert result.returncode == 0, result.stdout + result.stderr


def only_benchmark(run: str):
    (folder,) = [path for path in (open_run(run).path / "bench").iterdir() if path.name != "hf"]
    return folder, BenchSummary.model_validate_json((folder / "summary.json").read_text())


def test_a_two_point_benchmark_of_mocker_disagg_writes_summary_artifacts_and_plots(cancel_later):
    cancel_later("bench-local")
    deploy("bench-local", "mocker-disagg")
    result = slurmserve("bench", "bench-local", "--json", "--quick")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "concurrency 1: 10 requests" in result.stderr and "concurrency 4: 40 requests" in result.stderr
    folder, summary = only_benchmark("bench-local")
    assert BenchSummary.model_validate_json(result.stdout) == summary  # --json: the summary, on stdout alone
    assert [p.concurrency for p in summary.points] == [1, 4] and summary.valid
    assert all(p.errors == 0 and p.output_tokens == p.requests * 32 and p.ttft_ms for p in summary.points)
    assert summary.gpus == 8 and summary.points[1].output_tokens_per_s_per_gpu > 0
    for point in ("c1", "c4"):
        export = json.loads((folder / point / "profile_export_aiperf.json").read_text())
        assert export["request_count"]["avg"] == {"c1": 10, "c4": 40}[point]  # aiperf's own files, as it wrote them
    assert (folder / "pareto.png").stat().st_size > 10_000 and (folder / "ttft_vs_throughput.png").exists()
    table = (folder / "table.txt").read_text()
    assert "\npoint  " in table and "p99 of fewer than 100 requests" in table  # --quick: 10 and 40 requests


def test_a_decode_worker_killed_mid_run_fails_the_gate(cancel_later):
    cancel_later("bench-killed")
    deploy("bench-killed", "mocker-disagg", "restart.max_restarts=0", "mocker.speedup_ratio=1")
    bench = subprocess.Popen(
        [sys.executable, "-m", "slurmserve", "bench", "bench-killed", "--concurrency", "2", "--requests", "80"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    the_run = open_run("bench-killed")
    assert wait_until(lambda: list((the_run.path / "bench").glob("*/c2/profile_export.jsonl")), 60)
    time.sleep(1.0)  # requests in flight
    os.kill(the_run.pid("decode-0"), signal.SIGKILL)
    out, err = bench.communicate(timeout=300)
    assert bench.returncode == 1, out + err
    assert "failed the validity gate" in err
    _, summary = only_benchmark("bench-killed")
    (point,) = summary.points
    assert not point.valid
    assert any("requests failed" in problem or "without results" in problem for problem in point.problems)


def test_outputs_shorter_than_the_osl_fail_the_gate(cancel_later, tmp_path):
    """A mocker whose answers stop at 8 tokens when 16 are asked (ignore_eos): the gate names it."""
    trace = tmp_path / "short.jsonl"
    row = {"request_id": "osl-16", "timestamp": 0, "input_length": 1, "output_length": 8, "hash_ids": [0]}
    trace.write_text(json.dumps(row | {"output_token_ids": list(range(264, 272))}) + "\n")
    cancel_later("bench-short")
    deploy("bench-short", "mocker-agg", f"mocker.replay_trace={trace}")
    result = slurmserve("bench", "bench-short", "--concurrency", "1", "--osl", "16", "--requests", "5")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "outputs shorter than asked: as few as 8 of 16 tokens (ignore_eos)" in " ".join(result.stdout.split())


def test_fresh_between_points_restarts_the_workers_through_the_supervisor_outside_the_budget(cancel_later):
    cancel_later("bench-fresh")
    deploy("bench-fresh", "mocker-disagg", "restart.max_restarts=0")
    the_run = open_run("bench-fresh")
    before = {name: the_run.pid(name) for name in ("prefill-0", "decode-0")}
    result = slurmserve("bench", "bench-fresh", "--fresh-between-points", "--requests", "8")
    assert result.returncode == 0, result.stdout + result.stderr
    _, summary = only_benchmark("bench-fresh")
    assert [p.concurrency for p in summary.points] == [1, 4] and summary.valid
    requested = [e.process for e in the_run.events() if e.event == "restart requested"]
    assert sorted(requested) == ["decode-0", "prefill-0"]  # between the two points, once each
    assert all(the_run.pid(name) != pid for name, pid in before.items())
    status = json.loads(slurmserve("status", "bench-fresh", "--json").stdout)
    assert status["verdict"] == "ready" and all(p["restarts"] == 0 for p in status["processes"])


def processes_holding(path: Path) -> list[int]:
    """PIDs of this machine whose environment names `path` (aiperf's HF_HOME is in the run's bench/):
    found by what they carry, not by their name."""
    needle, found = str(path).encode(), []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone, or another user's
            continue
    return [pid for pid in found if pid != os.getpid()]


def left_of(run_path: Path, folder: str = "") -> list[int]:
    """Processes of a run (of its `folder`) still alive: by environment, and by aiperf's recorded process
    group (aiperf retitles its processes, which blanks their environment in /proc)."""
    record = read_pid_record(run_path / "pids" / "aiperf.bench")
    return processes_holding(run_path / folder) + (group_members(record[0]) if record else [])


def bench_in_background(run: str, *argv: str) -> subprocess.Popen:
    """A long benchmark, once its aiperf is sending requests."""
    the_run = open_run(run)
    before = set((the_run.path / "bench").glob("*/c2/profile_export.jsonl"))
    bench = subprocess.Popen(
        [sys.executable, "-m", "slurmserve", "bench", run, "--concurrency", "2", "--requests", "100000", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if not wait_until(lambda: set((the_run.path / "bench").glob("*/c2/profile_export.jsonl")) - before, 90):
        bench.kill()
        raise AssertionError(f"aiperf sent nothing: {bench.communicate()}")
    return bench


def test_sigterm_or_cancel_during_a_benchmark_leaves_no_aiperf_and_no_result(cancel_later):
    cancel_later("bench-stop")
    deploy("bench-stop", "mocker-agg")
    the_run = open_run("bench-stop")
    bench = bench_in_background("bench-stop")
    assert processes_holding(the_run.path / "bench")  # aiperf and its workers
    bench.send_signal(signal.SIGTERM)
    _, err = bench.communicate(timeout=60)
    assert wait_until(lambda: not left_of(the_run.path, "bench"), 5), left_of(the_run.path, "bench")
    assert bench.returncode == 130 and "interrupted: aiperf stopped" in err, err
    (folder,) = [path for path in (the_run.path / "bench").iterdir() if path.name != "hf"]
    assert (folder / "c2" / "incomplete").exists() and not (folder / "summary.json").exists()
    # `cancel` from another shell stops a benchmark's aiperf with the rest of the run.
    bench = bench_in_background("bench-stop")
    cancelled = slurmserve("cancel", "bench-stop")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert not left_of(the_run.path), left_of(the_run.path)
    _, err = bench.communicate(timeout=60)
    assert bench.returncode == 1 and "cancelled during the benchmark" in err, err


def test_a_second_benchmark_of_a_deployment_being_measured_is_refused(cancel_later):
    cancel_later("bench-twice")
    deploy("bench-twice", "mocker-agg")
    first = bench_in_background("bench-twice")
    try:
        second = slurmserve("bench", "bench-twice", "--concurrency", "1", "--requests", "2")
        assert second.returncode == 2, second.stdout + second.stderr
        (folder,) = [path.name for path in (open_run("bench-twice").path / "bench").iterdir() if path.name != "hf"]
        assert f"run bench-twice is being measured by bench {folder} (started" in " ".join(second.stderr.split())
    finally:
        first.send_signal(signal.SIGINT)  # Ctrl-C
        first.communicate(timeout=60)
    assert first.returncode == 130


def test_sigterm_during_a_sweep_stops_its_deployment_and_aiperf(tmp_path):
    argv = ["sweep", "--recipe", "mocker-agg", "--vary", "mocker.speedup_ratio=1,2", "--out", str(tmp_path / "sweep")]
    sweep = subprocess.Popen(
        [sys.executable, "-m", "slurmserve", *argv, "--concurrency", "2", "--requests", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    measuring = lambda: list(runs_root().glob("sweep-*/bench/*/c2/profile_export.jsonl"))  # noqa: E731
    if not wait_until(measuring, 150):
        sweep.kill()
        raise AssertionError(f"the sweep never measured: {sweep.communicate()}")
    (run_dir,) = {path.parents[3] for path in measuring()}
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=120)
    assert not left_of(run_dir), left_of(run_dir)  # the deployment and aiperf
    assert sweep.returncode == 130 and "sweep interrupted" in err, err
