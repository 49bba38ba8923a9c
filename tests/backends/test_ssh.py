"""The SSH backend end to end on the test cluster's sshd hosts (node1-3, one per network namespace)."""

from __future__ import annotations

import subprocess
import time

import pytest

from slurmserve.backends.ssh import PREFLIGHT_DEADLINE_S
from slurmserve.runs import open_run
from slurmserve.transport.procfs import group_members
from slurmserve.waiting import wait_until

from ..helpers import ClientLoop, completion_tokens, kill_and_recover, lab_hosts_variant, slurmserve, status_of

pytestmark = pytest.mark.slow


@pytest.fixture
def ssh_hosts(slurm_lab):
    return str(slurm_lab.hosts_file("ssh"))


def processes_left(run: str) -> list[int]:
    """Members of the run's process groups (the lab's hosts share this machine's PID space)."""
    started = open_run(run).handle().processes
    return [pid for info in started.values() for pid in group_members(info.pgid)]


def test_mocker_disagg_over_ssh_then_cancel_leaves_nothing(ssh_hosts, cancel_later):
    cancel_later("ssh-disagg")
    result = slurmserve("submit", "--recipe", "mocker-disagg", "--hosts", ssh_hosts, "--name", "ssh-disagg")
    assert result.returncode == 0, result.stdout + result.stderr
    status = status_of("ssh-disagg")
    assert status["verdict"] == "ready" and {p["state"] for p in status["processes"]} == {"ready"}
    hosts = {p["name"]: open_run("ssh-disagg").handle().processes[p["name"]].host for p in status["processes"]}
    assert hosts["prefill-0"] != hosts["decode-0"]
    assert completion_tokens(status["endpoint"], "tiny-mock") > 0
    logs = slurmserve("logs", "ssh-disagg", "decode-0")
    assert logs.returncode == 0 and "generate" in logs.stdout
    tail = slurmserve("logs", "ssh-disagg", "decode-0", "--tail", "2")  # tail -n 2 on its host
    assert tail.returncode == 0 and len(tail.stdout.splitlines()) == 2, tail.stdout  # the log grows: not which
    assert slurmserve("logs", "ssh-disagg", "supervisor").returncode == 0  # on this machine

    # The supervisor (on this machine) restarts a killed worker through its host's launch script.
    with ClientLoop(status["endpoint"], "tiny-mock") as client:
        time.sleep(1)
        kill_and_recover("ssh-disagg", "decode-0", open_run("ssh-disagg").handle().processes["decode-0"].pgid, client)
    assert client.error_window_s() <= 5.0, f"clients saw errors for {client.error_window_s():.2f} s"
    assert next(p for p in status_of("ssh-disagg")["processes"] if p["name"] == "decode-0")["restarts"] == 1

    assert processes_left("ssh-disagg")
    result = slurmserve("cancel", "ssh-disagg")
    assert result.returncode == 0 and "no process left" in result.stdout, result.stderr
    assert processes_left("ssh-disagg") == []
    assert status_of("ssh-disagg")["verdict"] == "stopped"


def test_no_wait_hands_the_stages_to_a_detached_launcher(ssh_hosts, cancel_later):
    cancel_later("ssh-nowait")
    result = slurmserve("submit", "--recipe", "mocker-agg", "--hosts", ssh_hosts, "--name", "ssh-nowait", "--no-wait")
    assert result.returncode == 0, result.stderr
    assert wait_until(lambda: status_of("ssh-nowait")["verdict"] == "ready", 60)
    assert completion_tokens(status_of("ssh-nowait")["endpoint"], "tiny-mock") > 0

    # With plan.json unreadable, the handle still finds every process: status shows them, cancel stops them.
    (open_run("ssh-nowait").path / "plan.json").write_text('{"recipe": "mocker-agg", "scrape_interval_s": null}')
    damaged = status_of("ssh-nowait")
    assert damaged["verdict"] == "failed" and "plan.json is damaged" in damaged["reason"], damaged
    assert {"agg-0", "frontend"} <= {p["name"] for p in damaged["processes"] if p["state"] == "starting"}
    result = slurmserve("cancel", "ssh-nowait")
    assert result.returncode == 0 and "no process left" in result.stdout, result.stderr
    assert processes_left("ssh-nowait") == []


@pytest.mark.parametrize(
    "problem, change, expected",
    [
        (
            "host down",
            lambda h: h["hosts"].append({**h["hosts"][0], "name": "node9", "address": "10.77.0.19"}),
            "host node9 (10.77.0.19): ",
        ),
        (
            "wrong key",
            lambda h: h["hosts"][1].update(identity_file=None),
            "host node2 (10.77.0.12): SSH authentication failed",
        ),
    ],
)
def test_an_unfit_host_fails_preflight_naming_it_and_nothing_starts(slurm_lab, tmp_path, problem, change, expected):
    if problem == "wrong key":
        key = tmp_path / "stranger_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        change = lambda h: h["hosts"][1].update(identity_file=str(key))  # noqa: E731  (a key node2 does not know)
    hosts = lab_hosts_variant(slurm_lab, "ssh", tmp_path, change)
    # Spread the workers so that the broken host has a part in the plan.
    sets = (
        ["--set", "agg.replicas=4", "--set", "agg.tensor_parallel=8"]
        if problem == "host down"
        else ["--set", "agg.replicas=2", "--set", "agg.tensor_parallel=8"]
    )
    started = time.monotonic()
    result = slurmserve(
        "submit", "--recipe", "mocker-agg", "--hosts", hosts, "--name", f"ssh-{problem.replace(' ', '-')}", *sets
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in " ".join(result.stderr.split()) and "Nothing was started" in result.stderr
    assert elapsed < PREFLIGHT_DEADLINE_S + 10
    assert slurmserve("status", f"ssh-{problem.replace(' ', '-')}").returncode == 2  # no run was even created


def test_a_model_folder_missing_on_the_hosts_fails_preflight(slurm_lab, tmp_path):
    hosts = lab_hosts_variant(slurm_lab, "ssh", tmp_path)
    result = slurmserve(
        "submit",
        "--recipe",
        "mocker-agg",
        "--hosts",
        hosts,
        "--name",
        "ssh-nomodel",
        "--set",
        f"mocker.model_path={tmp_path}/not-there",
    )
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and f"host node1: model folder {tmp_path}/not-there does not exist" in message, (
        result.stderr
    )
