"""Ctrl-C or SIGTERM during `submit` stops what that submit started, as `cancel` does, says so in one
line and exits 130 (SIGINT) or 143 (SIGTERM): at every moment (planning, mid-launch, waiting for
readiness) and on every backend. Nothing of the run is left, by its PID records and by a scan of every
process's command line and environment for the run's directory."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from slurmserve import deploy
from slurmserve.errors import Interrupted
from slurmserve.runs import open_run, runs_root
from slurmserve.transport import runner
from slurmserve.transport.procfs import task_records
from slurmserve.waiting import wait_until

from ..conftest import HOSTS
from ..helpers import (
    events_of,
    leftover_processes,
    local_hosts_with_cache,
    processes_carrying,
    status_of,
    submit_then_interrupt,
)

pytestmark = pytest.mark.slow


def started(run: str, *records: str):
    """The moment one of the run's PID records (a path in its directory, glob patterns allowed) exists."""
    return lambda: any(next((runs_root() / run).glob(record), None) for record in records)


def assert_cancelled_and_nothing_left(run: str, result, signum: int) -> None:
    code = 128 + signum
    assert result.returncode == code, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert f"submit interrupted ({signal.Signals(signum).name}, exit {code}): run {run} cancelled; no process left" in (
        said
    ), said
    assert "Traceback" not in result.stderr
    run_dir = open_run(run).plan().run_dir
    assert wait_until(lambda: not processes_carrying(run_dir), 10), f"left running: {processes_carrying(run_dir)}"
    assert status_of(run)["verdict"] == "stopped"


def test_interrupted_while_planning_starts_nothing(tmp_path, monkeypatch):
    """Planning asks the hub for the model's revision: an endpoint that never answers holds it there."""
    silent = socket.create_server(("127.0.0.1", 0))
    silent.setblocking(False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    hosts = local_hosts_with_cache(tmp_path)
    asked = []

    def hub_asked() -> bool:
        try:
            asked.append(silent.accept()[0])
        except BlockingIOError:
            return False
        return True

    with silent:
        result = submit_then_interrupt(
            "planning",
            hub_asked,
            signal.SIGINT,
            "--recipe",
            "mocker-agg",
            "--hosts",
            str(hosts),
            "--set",
            "model.repo=acme/tiny-chat",
            "--set",
            "mocker.use_recipe_model=true",
        )
    assert result.returncode == 130, result.stdout + result.stderr
    assert "submit interrupted (SIGINT, exit 130): nothing had started" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not (runs_root() / "planning").exists()


def test_ctrl_c_mid_launch_cancels_the_local_run(cancel_later):
    cancel_later("ctrl-c")
    moment = started("ctrl-c", "pids/decode-0.pid")  # the workers are starting; the frontend is not yet
    result = submit_then_interrupt("ctrl-c", moment, signal.SIGINT, "--recipe", "mocker-disagg")
    assert_cancelled_and_nothing_left("ctrl-c", result, signal.SIGINT)
    assert leftover_processes("ctrl-c") == []


def test_a_second_ctrl_c_does_not_cut_the_cleanup_short(cancel_later):
    cancel_later("twice")
    moment = started("twice", "pids/frontend.pid")

    def cleaning_up() -> bool:  # the first Ctrl-C's cancel has begun
        return "cancel requested" in [event["event"] for event in events_of("twice")]

    result = submit_then_interrupt("twice", moment, signal.SIGINT, "--recipe", "mocker-agg", again=cleaning_up)
    assert_cancelled_and_nothing_left("twice", result, signal.SIGINT)
    assert leftover_processes("twice") == []


def test_sigterm_while_waiting_for_readiness_cancels_the_local_run(cancel_later):
    cancel_later("term")
    moment = started("term", "pids/frontend.pid")  # everything started: submit waits for it to serve
    result = submit_then_interrupt("term", moment, signal.SIGTERM, "--recipe", "mocker-disagg")
    assert_cancelled_and_nothing_left("term", result, signal.SIGTERM)
    assert leftover_processes("term") == []


def test_an_interrupt_between_starting_the_launcher_and_recording_it_stops_the_launch(monkeypatch):
    """Ctrl-C right after the launcher was started, before its PID is recorded: still found and stopped."""
    prepared = deploy.prepare("mocker-agg", str(HOSTS / "local.yaml"), name="race")
    run_dir = prepared.plan.run_dir
    recorded = runner.start_time

    def interrupted_before_the_record(pid: int) -> str | None:
        os.kill(os.getpid(), signal.SIGINT)
        return recorded(pid)

    monkeypatch.setattr(runner, "start_time", interrupted_before_the_record)
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            deploy.submit(prepared, timeout=60)
        assert wait_until(lambda: not processes_carrying(run_dir), 10), f"left running: {processes_carrying(run_dir)}"
        assert isinstance(caught.value, Interrupted) and "no process left" in str(caught.value)
    finally:
        for pid in processes_carrying(run_dir):  # what the run started, should the check above fail
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    "record, signum",
    [
        ("pids/launcher.pid", signal.SIGTERM),  # the launcher has just started: nothing on the hosts yet
        ("handle.json", signal.SIGINT),  # the first stage runs on its hosts
    ],
    ids=["launcher-started", "first-stage-started"],
)
def test_an_interrupted_ssh_submit_stops_every_host(slurm_lab, cancel_later, record, signum):
    cancel_later("ssh-stopped")
    hosts = str(slurm_lab.hosts_file("ssh"))
    moment = started("ssh-stopped", record)
    result = submit_then_interrupt("ssh-stopped", moment, signum, "--recipe", "mocker-disagg", "--hosts", hosts)
    assert_cancelled_and_nothing_left("ssh-stopped", result, signum)


@pytest.mark.parametrize(
    "record, signum",
    [
        ("handle.json", signal.SIGINT),  # sbatch has answered: the job may still be queued
        ("pids/*.tasks", signal.SIGTERM),  # the job runs and has started a process
    ],
    ids=["job-submitted", "job-started"],
)
def test_an_interrupted_slurm_submit_cancels_its_job(slurm_lab, cancel_later, record, signum):
    cancel_later("lab-stopped")
    hosts = str(slurm_lab.hosts_file("slurm"))
    moment = started("lab-stopped", record)
    result = submit_then_interrupt("lab-stopped", moment, signum, "--recipe", "mocker-agg", "--hosts", hosts)
    assert_cancelled_and_nothing_left("lab-stopped", result, signum)
    the_run = open_run("lab-stopped")
    records = [r for p in the_run.plan().processes for r in task_records(the_run.path / "pids" / f"{p.name}.tasks")]
    assert not any(r.visible_here() and r.running() for r in records)
