"""Benchmarks on the real test cluster: aiperf as a step of the deployment's own job, and a sweep that
deploys one job per point, draws the combined Pareto plot, and resumes without starting a job."""

from __future__ import annotations

import signal

import pytest

from slurmserve.bench.results import BenchSummary
from slurmserve.runs import list_runs, open_run
from slurmserve.transport.slurm import steps_named

from ..helpers import slurmserve
from .test_bench_local import bench_in_background, left_of

pytestmark = pytest.mark.slow


def test_bench_runs_aiperf_inside_the_job_with_fresh_workers_between_points(slurm_lab, cancel_later):
    hosts = str(slurm_lab.hosts_file("slurm"))
    cancel_later("lab-bench")
    result = slurmserve("submit", "--recipe", "mocker-disagg", "--hosts", hosts, "--name", "lab-bench")
    assert result.returncode == 0, result.stdout + result.stderr
    # Fresh workers for the second point: the supervisor, inside the job, cancels each worker's step and
    # starts a new one.
    result = slurmserve("bench", "lab-bench", "--fresh-between-points", "--quick")
    assert result.returncode == 0, result.stdout + result.stderr
    the_run = open_run("lab-bench")
    assert sorted(e.process for e in the_run.events() if e.event == "restart requested") == ["decode-0", "prefill-0"]
    (folder,) = [path for path in (open_run("lab-bench").path / "bench").iterdir() if path.name != "hf"]
    summary = BenchSummary.model_validate_json((folder / "summary.json").read_text())
    assert summary.backend == "slurm" and [p.concurrency for p in summary.points] == [1, 4]
    assert summary.valid and all(p.errors == 0 and p.output_tokens == p.requests * 32 for p in summary.points)
    assert (folder / "c4" / "profile_export_aiperf.json").exists() and (folder / "pareto.png").exists()
    # aiperf ran as a step of the job, on the deployment's head node (node1's UTS namespace).
    assert (folder / "c1" / "aiperf.log").read_text(errors="replace").splitlines()[0] == "aiperf on node1"
    # A TERM to the bench (as Ctrl-C) ends aiperf's step with it: no step, no process of it left.
    bench = bench_in_background("lab-bench")
    bench.send_signal(signal.SIGTERM)
    _, err = bench.communicate(timeout=90)
    job_id = the_run.handle().job_id  # type: ignore[union-attr]
    assert not steps_named(job_id, "bench") and not left_of(the_run.path, "bench"), err
    assert bench.returncode == 130, err


def test_a_sweep_makes_a_job_per_point_a_combined_plot_and_resumes_without_a_job(slurm_lab, tmp_path):
    hosts = str(slurm_lab.hosts_file("slurm"))
    out = tmp_path / "sweep"
    argv = ["sweep", "--recipe", "mocker-disagg", "--hosts", hosts, "--vary", "decode.replicas=1,2"]
    argv += ["--concurrency", "1,2", "--requests", "8", "--out", str(out)]
    result = slurmserve(*argv)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "measured 2, skipped 0, failed 0" in " ".join(result.stdout.split())
    summaries = {
        name: BenchSummary.model_validate_json((out / name / "summary.json").read_text())
        for name in ("decode.replicas=1", "decode.replicas=2")
    }
    jobs = {open_run(s.run).handle().job_id for s in summaries.values()}  # type: ignore[union-attr]
    assert len(jobs) == 2 and None not in jobs  # one Slurm job per point
    assert all(s.valid and s.backend == "slurm" for s in summaries.values())
    assert (out / "pareto.png").stat().st_size > 10_000 and "decode.replicas=2" in (out / "table.txt").read_text()
    runs_before = {run.name for run in list_runs()}
    again = slurmserve(*argv)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "measured 0, skipped 2, failed 0" in " ".join(again.stdout.split())
    assert {run.name for run in list_runs()} == runs_before  # nothing was deployed: no job


def test_over_ssh_aiperf_runs_on_the_head_host(slurm_lab, tmp_path, cancel_later):
    hosts = str(slurm_lab.hosts_file("ssh"))
    cancel_later("ssh-bench")
    result = slurmserve("submit", "--recipe", "mocker-agg", "--hosts", hosts, "--name", "ssh-bench")
    assert result.returncode == 0, result.stdout + result.stderr
    result = slurmserve("bench", "ssh-bench", "--concurrency", "2", "--requests", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    (folder,) = [path for path in (open_run("ssh-bench").path / "bench").iterdir() if path.name != "hf"]
    assert BenchSummary.model_validate_json((folder / "summary.json").read_text()).valid
    assert (folder / "c2" / "aiperf.log").read_text(errors="replace").splitlines()[0] == "aiperf on node1"
    # A TERM to the bench (as Ctrl-C) stops aiperf's group on the head host; `cancel` stops a benchmark's
    # aiperf there with the rest of the run.
    bench = bench_in_background("ssh-bench")
    bench.send_signal(signal.SIGTERM)
    _, err = bench.communicate(timeout=90)
    assert not left_of(open_run("ssh-bench").path, "bench") and bench.returncode == 130, err
    bench = bench_in_background("ssh-bench")
    cancelled = slurmserve("cancel", "ssh-bench")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert not left_of(open_run("ssh-bench").path, "bench")
    _, err = bench.communicate(timeout=90)
    assert bench.returncode == 1 and "cancelled during the benchmark" in err, err
