"""Where a submitted deployment is, as `submit` shows it while it waits: queued (and why), staging the
model (bytes and rate), each role's readiness; read from the run directory, the scheduler and the cache."""

from __future__ import annotations

from slurmserve.backends.base import SchedulerView
from slurmserve.modelcache.snapshots import staging_root
from slurmserve.planning.plan import ModelStage
from slurmserve.runs import ProcessState
from slurmserve.runtime.launch import SubmitProgress

from ..conftest import local_run
from ..helpers import supervisor_state


def test_each_roles_readiness_in_start_order():
    run = local_run("mocker-disagg", "prog")
    progress = SubmitProgress(run.plan())
    assert progress.where() == "launching"  # no supervisor has reported yet
    ready, pending = ProcessState.READY, ProcessState.PENDING
    run.save_supervisor_state(
        supervisor_state({"prefill-0": ProcessState.STARTING, "decode-0": ready, "frontend": pending})
    )
    assert progress.where() == "prefill 0/1, decode ready, frontend 0/1"


def test_a_queued_job_says_so_with_the_schedulers_reason():
    run = local_run("mocker-agg", "queued")
    progress = SubmitProgress(run.plan())

    class Queued:
        def scheduler(self, _run: object) -> SchedulerView:
            return SchedulerView("Slurm job 42: PENDING, reason Priority", queued=True)

    progress.backend = Queued()  # type: ignore[assignment]
    assert progress.where() == "queued: Slurm job 42: PENDING, reason Priority"


def test_the_model_staging_shows_its_bytes_and_rate(tmp_path):
    run = local_run("mocker-agg", "staging")
    stage = ModelStage(repo="org/model", revision="a" * 40, cache=str(tmp_path))
    progress = SubmitProgress(run.plan().model_copy(update={"model_stage": stage}))
    folder = staging_root(tmp_path, "org/model", "a" * 40) / "nonce"
    folder.mkdir(parents=True)
    (folder / "model.safetensors.incomplete").write_bytes(b"x" * 2_000_000)
    assert progress.where() == "staging model org/model: 2 MB"
    (folder / "more.incomplete").write_bytes(b"x" * 10_000_000)
    where = progress.where()
    assert where.startswith("staging model org/model: 12 MB, ") and where.endswith(" MB/s"), where
