"""Job state from every source `status` falls back on, in both accounting modes of the real cluster:
squeue (while slurmctld remembers the job), sacct (slurmdbd), sacct -c (jobcomp, no accounting)."""

from __future__ import annotations

import pytest

from slurmserve.runs import open_run
from slurmserve.transport.slurm import jobcomp_state, sacct_state, squeue_state
from slurmserve.waiting import wait_until

from ..helpers import slurmserve, status_of
from .test_slurm import submit_and_check_ready

pytestmark = pytest.mark.slow


def cancelled_job(run: str, hosts: str) -> str:
    submit_and_check_ready(run, "--recipe", "mocker-agg", "--hosts", hosts)
    job_id = open_run(run).handle().job_id
    assert squeue_state(job_id) == "RUNNING"
    assert slurmserve("cancel", run).returncode == 0
    assert status_of(run)["scheduler"] == f"Slurm job {job_id}: CANCELLED"
    return job_id


def test_without_accounting_the_jobcomp_file_knows_the_end(slurm_lab, cancel_later):
    cancel_later("acct-off")
    job_id = cancelled_job("acct-off", str(slurm_lab.hosts_file("slurm")))
    assert sacct_state(job_id) is None  # "accounting storage is disabled"
    assert wait_until(lambda: jobcomp_state(job_id) == "CANCELLED", 10)


def test_with_accounting_sacct_knows_the_end(slurm_lab_accounting, cancel_later):
    cancel_later("acct-on")
    job_id = cancelled_job("acct-on", str(slurm_lab_accounting.hosts_file("slurm")))
    assert wait_until(lambda: sacct_state(job_id) == "CANCELLED", 15)  # slurmdbd lags a few seconds
