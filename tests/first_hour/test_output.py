"""A newcomer's first hour, the output a person reads: the CLI run as a user would, through a pipe and with
COLUMNS=80. Nothing a user copies is folded or cut (recipe, model and worker names, run names, endpoints,
process names); logs take --tail and the supervisor's; a stopped process dates from when it stopped;
submit says where it is while it waits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from slurmserve.runs import ProcessState
from slurmserve.runs.events import Cancelled

from ..conftest import local_run
from ..helpers import leftover_processes, supervisor_state


def at_80(*args: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, its output through a pipe, COLUMNS=80."""
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "slurmserve", *args], capture_output=True, text=True, timeout=300, env=env
    )


def words(text: str) -> set[str]:
    return {word.strip(",()") for word in text.split()}


def test_recipes_shows_every_recipe_model_and_worker_name_whole():
    shown = at_80("recipes")
    assert shown.returncode == 0 and all(len(line) <= 80 for line in shown.stdout.splitlines()), shown.stdout
    catalogue = json.loads(at_80("recipes", "--json").stdout)
    said = words(shown.stdout)
    assert {recipe["name"] for recipe in catalogue} <= said and {recipe["model"] for recipe in catalogue} <= said
    for workers in ("prefill-fast", "prefill-slow", "fast-agg", "interactive-agg"):
        assert workers in said, shown.stdout
    assert "prefill-fast-prefill" not in shown.stdout and "decode-decode" not in shown.stdout


def stopped_run(name: str) -> None:
    """A run its supervisor saw ready an hour ago, cancelled now."""
    run = local_run("mocker-two-pools-disagg", name)
    ready = dict.fromkeys((p.name for p in run.plan().processes), ProcessState.READY)
    run.save_supervisor_state(supervisor_state(ready, at=time.time() - 3600, final=True))
    run.record(Cancelled(leftovers=[]))
    (run.paths.logs / "decode-0.log").write_text("".join(f"line {n}\n" for n in range(1, 101)))
    (run.paths.logs / "supervisor.log").write_text("supervisor started\nwatching 8 processes\n")


def test_status_keeps_run_names_endpoints_and_process_names_whole_and_dates_a_stop():
    stopped_run("mocker-two-pools-disagg-20261207-142725-a2c0")
    listed = at_80("status", "--all")
    endpoint = json.loads(at_80("status", "--all", "--json").stdout)[0]["endpoint"]
    assert listed.returncode == 0 and endpoint in words(listed.stdout), listed.stdout
    assert "mocker-two-pools-disagg-20261207-142725-a2c0" in words(listed.stdout)
    shown = at_80("status", "mocker-two-pools-disagg-20261207-142725-a2c0")
    said = words(shown.stdout)
    assert {"prefill-fast-0", "prefill-slow-0", "decode-0", "prefill-fast-router", "global-router"} <= said
    assert f"endpoint {endpoint}" in shown.stdout
    decode = next(line for line in shown.stdout.splitlines() if " decode-0 " in line)
    assert "stopped" in decode and " s ago" in decode and "min ago" not in decode, decode  # when it stopped


def test_status_with_no_runs_says_so():
    shown = at_80("status")
    assert shown.returncode == 0 and shown.stdout == "no live runs (--all lists stopped ones too)\n", shown.stdout


def test_logs_tail_and_the_supervisors_log():
    stopped_run("logs")
    tail = at_80("logs", "logs", "decode-0", "--tail", "3")
    assert tail.returncode == 0 and tail.stdout == "line 98\nline 99\nline 100\n", tail.stdout + tail.stderr
    supervisor = at_80("logs", "logs", "supervisor")
    assert supervisor.returncode == 0 and "watching 8 processes" in supervisor.stdout, supervisor.stderr
    every = at_80("logs", "logs", "-n", "1")
    assert every.returncode == 0 and "line 100" in every.stdout and "line 99" not in every.stdout


@pytest.mark.slow
def test_a_local_deployment_as_a_newcomer_sees_it(cancel_later):
    """submit through a pipe says where it is, a line per change; status, logs and cancel at 80 columns."""
    cancel_later("first-hour")
    submitted = at_80("submit", "--recipe", "mocker-agg", "--name", "first-hour", "--timeout", "120")
    assert submitted.returncode == 0, submitted.stderr
    progress = [line for line in submitted.stdout.splitlines() if line.startswith("[")]
    # Ready in seconds here, often before its supervisor's first report: at least where it began.
    assert progress[:1] == ["[0 s] launching"] and len(progress) == len(set(progress)), submitted.stdout
    assert "starting..." not in submitted.stdout
    endpoint = json.loads(at_80("status", "first-hour", "--json").stdout)["endpoint"]
    assert endpoint in words(at_80("status").stdout)
    shown = at_80("status", "first-hour").stdout
    assert "agg-0" in words(shown) and "Ctrl-C" not in shown
    assert at_80("logs", "first-hour", "frontend", "--tail", "2").stdout.count("\n") <= 2
    assert at_80("logs", "first-hour", "supervisor").returncode == 0
    assert at_80("cancel", "first-hour").returncode == 0 and leftover_processes("first-hour") == []
    stopped = next(line for line in at_80("status", "first-hour").stdout.splitlines() if " agg-0 " in line)
    assert "stopped" in stopped and " s ago" in stopped, stopped


@pytest.mark.slow
def test_submit_on_slurm_says_it_is_queued_and_why_then_each_roles_readiness(slurm_lab, cancel_later):
    """Every node taken by another job: submit's lines say it is queued with Slurm's reason (Resources);
    once the nodes are free, where the launch is, and that it serves."""
    hosts = str(slurm_lab.hosts_file("slurm"))
    blocker = subprocess.run(
        ["sbatch", "--parsable", "--nodes=3", "--exclusive", "--output=/dev/null", "--wrap", "sleep 600"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    cancel_later("lab-queued")
    submit = subprocess.Popen(
        [sys.executable, "-m", "slurmserve", "submit", "--recipe", "mocker-agg", "--hosts", hosts]
        + ["--name", "lab-queued", "--timeout", "180"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    try:
        seen = []
        for line in submit.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if "queued: Slurm job" in line:
                break
        assert seen and ", reason " in seen[-1], seen
    finally:
        subprocess.run(["scancel", blocker], check=True)
    rest, _ = submit.communicate(timeout=240)
    assert submit.returncode == 0, "".join(seen) + rest
    # The job started: what submit says next is where the launch is (launching, or already a stage's
    # readiness when the first look comes after the supervisor's first state), then that it serves.
    assert "is ready at" in rest and ("] launching" in rest or " ready, " in rest), rest
