"""Elastic workers' jobs as the supervisor sees them (backends.elastic), squeue and scancel stood in for (a
fast unit test): the jobs themselves are proven on the test cluster (tests/runtime/test_scaling_slurm.py)."""

from __future__ import annotations

import time

from slurmserve.backends import elastic
from slurmserve.backends.elastic import QUEUE_BOUND_S, ElasticJobs
from slurmserve.runs import create_run
from slurmserve.transport.slurm import JobState

from ..conftest import plan_of


def test_a_worker_job_running_queued_gone_or_queued_too_long(monkeypatch, tmp_path):
    plan = plan_of("mocker-disagg-autoscale", "two-node-8gpu.yaml", "autoscale.capacity=elastic")
    plan = plan.model_copy(update={"run_dir": str(tmp_path / "run")})
    run = create_run(plan)
    now = time.time()
    run.paths.pid_record("decode-1", "job").write_text(f"41 {now}\n")
    run.paths.pid_record("decode-2", "job").write_text(f"42 {now - QUEUE_BOUND_S - 1}\n")
    states = {"41": JobState.RUNNING, "42": JobState.PENDING}
    cancelled: list[tuple[str, ...]] = []
    asked: list[list[str]] = []

    def squeue(jobs: list[str]) -> dict[str, JobState]:
        asked.append(jobs)
        return {job: states[job] for job in jobs if job in states}

    monkeypatch.setattr(elastic, "states_of", squeue)
    monkeypatch.setattr(elastic, "scancel", lambda *jobs, signal=None: cancelled.append(jobs))
    jobs = ElasticJobs()
    assert jobs.alive(run, plan) == {"decode-1": True, "decode-2": None} and not cancelled  # status only asks
    assert jobs.alive(run, plan, supervising=True) == {"decode-1": True, "decode-2": False}  # past the bound
    assert cancelled == [("42",)]

    states.clear()  # both jobs ended: squeue lists them no more
    assert jobs.alive(run, plan)["decode-1"] is True and len(asked) == 1  # the last answer, for 2 s
    jobs.asked_at = 0.0
    assert jobs.alive(run, plan)["decode-1"] is False and len(asked) == 2
    assert jobs.alive(run, plan)["decode-1"] is False and len(asked) == 2  # an ended job is not asked every tick
    jobs.stop(run, plan.process("decode-1"), grace_s=0.0)  # what scaling does to remove it: its record goes
    assert jobs.alive(run, plan)["decode-1"] is None
