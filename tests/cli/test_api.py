"""The verbs as a Python API (the README's example), and `submit --dry-run` / `render` showing exactly
what `submit` starts: `submit` is `launch(prepare(...))`."""

from __future__ import annotations

import pytest

from slurmserve import deploy
from slurmserve.backends import traits_for
from slurmserve.runs import ProcessState, Verdict, open_run

from ..helpers import leftover_processes, slurmserve

pytestmark = pytest.mark.slow


def test_prepare_starts_and_writes_nothing(tmp_path):
    prepared = deploy.prepare("mocker-agg", name="dry", run_dir=str(tmp_path / "dry"))
    assert prepared.script == prepared.files["launch.sh"] and "plan.json" in prepared.files
    assert not (tmp_path / "dry").exists()


def test_the_dry_run_and_render_print_what_submit_starts(tmp_path, cancel_later):
    dry = slurmserve("submit", "--recipe", "mocker-agg", "--name", "same", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    cancel_later("same")
    started = slurmserve("submit", "--recipe", "mocker-agg", "--name", "same", "--no-wait")
    assert started.returncode == 0, started.stderr
    run = open_run("same")
    assert (run.path / traits_for(run.plan().backend).launch_script).read_text() == dry.stdout
    # A second dry run of another name while "same" runs: its port block, if it collides, is moved off.
    other = deploy.prepare("mocker-agg", name="same", run_dir=str(tmp_path / "other"))
    assert other.plan.port_block != run.plan().port_block
    # Cancelled while its launcher is still starting things: every process it started had a record.
    assert slurmserve("cancel", "same").returncode == 0
    assert leftover_processes("same") == []


def test_the_python_api_runs_a_deployment_end_to_end():
    prepared = deploy.prepare("mocker-agg", name="api")
    deployment = deploy.submit(prepared, timeout=120)
    try:
        assert deployment.sample is not None and deployment.sample["usage"]["completion_tokens"] > 0
        report = deploy.status(deployment.run)
        assert report.verdict == Verdict.READY and report.supervised
        assert {p.state for p in report.processes} == {ProcessState.READY}
        assert report.frontend == {"agg": (1, 1)}
        assert list(deploy.logs(deployment.run, "frontend")), "the frontend's log, line by line"
    finally:
        assert deploy.cancel(deployment.run) == []
    assert leftover_processes("api") == []
