"""Deployments outlive upgrades: a run directory written by an older slurmserve (2a7c08e: untyped events,
its state.json and handle.json) still answers `status`, `logs` and `cancel`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from slurmserve import deploy
from slurmserve.runs import ProcessState, RunDir, Verdict, open_run, runs_root
from slurmserve.runs.events import Cancelled, CancelRequested, Created, Ready, StateChanged, VerdictChanged

OLD_RUN = Path(__file__).parent.parent / "fixtures" / "run-2a7c08e" / "old-run"


def test_a_run_directory_of_2a7c08e_answers_status_logs_and_cancel():
    shutil.copytree(OLD_RUN, runs_root() / "old-run")
    run = open_run("old-run")
    old_events = run.events()
    assert len(old_events) == len((OLD_RUN / "events.jsonl").read_text().splitlines()), "every old line reads"
    assert isinstance(old_events[0], Created) and old_events[0].recipe == "mocker-agg"
    assert any(isinstance(event, Ready) and event.endpoint == "http://127.0.0.1:29202" for event in old_events)
    assert any(isinstance(event, VerdictChanged) and event.verdict == Verdict.READY for event in old_events)
    assert {event.process for event in old_events if isinstance(event, StateChanged)} == {"agg-0", "frontend"}

    # Its supervisor is gone (on this machine by its PID, elsewhere by its heartbeat), and so are its processes.
    report = deploy.status(run)
    assert not report.supervised and report.verdict == Verdict.FAILED, report
    assert {process.name: process.state for process in report.processes} == {
        "agg-0": ProcessState.FAILED,
        "frontend": ProcessState.FAILED,
    }

    assert "dynamo_runtime" in "".join(deploy.logs(run, "frontend"))

    assert deploy.cancel(run) == []
    assert not run.paths.targets.exists()
    new_events = run.events()[len(old_events) :]
    assert [type(event) for event in new_events] == [CancelRequested, Cancelled]
    assert deploy.status(run).verdict == Verdict.STOPPED


@pytest.mark.parametrize("backend", ["slurm", "ssh"])
def test_a_handle_of_2a7c08e_still_finds_the_deployment(tmp_path, backend):
    """Without its handle, `status` and `cancel` would take a Slurm or SSH deployment for one that never started."""
    shutil.copy(OLD_RUN.parent / f"handle-{backend}.json", tmp_path / "handle.json")
    handle = RunDir(tmp_path).handle()
    assert handle is not None and handle.backend == backend
    if backend == "slurm":
        assert handle.job_id == "17" and handle.final_state is not None
    else:
        assert {name: (group.host, group.pgid) for name, group in handle.processes.items()} == {
            "frontend": ("node1", 4242),
            "agg-0": ("node2", 4343),
        }
