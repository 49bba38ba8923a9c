"""Health watching and recovery on the local backend: real frontend, mock workers and etcd on this
machine, the supervisor watching them, real faults (SIGKILL) and a client measuring what it sees."""

from __future__ import annotations

import subprocess
import time

import pytest

from slurmserve.runs import open_run
from slurmserve.waiting import wait_until

from ..helpers import (
    ClientLoop,
    events_of,
    kill_and_recover,
    leftover_processes,
    slurmserve,
    status_of,
    submit_then_kill_the_cli,
    survive_kills,
    wait_for_event,
)

pytestmark = pytest.mark.slow


def submit(run: str, *sets: str) -> dict:
    args = [word for assignment in sets for word in ("--set", assignment)]
    result = slurmserve("submit", "--recipe", "mocker-disagg", *args, "--name", run, "--timeout", "120")
    assert result.returncode == 0, result.stdout + result.stderr
    status = status_of(run)
    assert status["verdict"] == "ready" and status["supervised"], status
    return status


def pid_of(run: str, process: str) -> int:
    return open_run(run).pid(process)


def test_killed_decode_worker_is_reported_restarted_and_serves_again(cancel_later):
    cancel_later("heal")
    status = submit("heal")  # file discovery: one host
    with ClientLoop(status["endpoint"], "tiny-mock") as client:
        time.sleep(1)
        kill_and_recover("heal", "decode-0", pid_of("heal", "decode-0"), client)
    assert client.error_window_s() <= 5.0, f"clients saw errors for {client.error_window_s():.2f} s"
    decode = next(p for p in status_of("heal")["processes"] if p["name"] == "decode-0")
    assert decode["state"] == "ready" and decode["restarts"] == 1 and "exited" in decode["last_error"]
    assert any(e["event"] == "deregistered" and e["process"] == "decode-0" for e in events_of("heal"))


def test_frontend_and_etcd_deaths_are_survived(cancel_later):
    cancel_later("survive")
    status = submit("survive", "discovery=etcd")
    survive_kills("survive", status["endpoint"], ["frontend", "etcd"], pid_of)
    assert wait_until(lambda: status_of("survive")["verdict"] == "ready", 15)


def test_spent_restart_budget_fails_the_deployment_and_fail_fast_cancels_it(cancel_later):
    cancel_later("budget")
    submit("budget", "restart.max_restarts=0")
    seen = len(events_of("budget"))
    subprocess.run(["kill", "-KILL", str(pid_of("budget", "decode-0"))], check=True)
    wait_for_event("budget", lambda e: e["event"] == "restart budget spent", 10, seen)
    assert wait_until(lambda: status_of("budget")["verdict"] == "failed", 5)
    assert "decode-0 failed for good" in status_of("budget")["reason"]
    assert leftover_processes("budget") != []  # what did not fail still runs

    cancel_later("fastfail")
    submit("fastfail", "restart.max_restarts=0", "restart.fail_fast=true")
    subprocess.run(["kill", "-KILL", str(pid_of("fastfail", "decode-0"))], check=True)
    wait_for_event("fastfail", lambda e: e["event"] == "cancelled", 20)
    assert wait_until(lambda: leftover_processes("fastfail") == [], 10)
    assert status_of("fastfail")["verdict"] == "stopped"


def test_cli_killed_mid_submit_leaves_a_run_that_status_and_cancel_handle(cancel_later):
    cancel_later("orphan")
    submit_then_kill_the_cli("orphan", "pids/launcher.pid", "--recipe", "mocker-disagg")
    # The launcher finishes the start on its own, and its supervisor takes over.
    assert wait_until(lambda: status_of("orphan")["verdict"] == "ready", 60), status_of("orphan")
    result = slurmserve("cancel", "orphan")
    assert result.returncode == 0, result.stderr
    assert leftover_processes("orphan") == []
    assert status_of("orphan")["verdict"] == "stopped"
