"""Health watching and recovery on the real test cluster: the supervisor runs inside the Slurm job,
restarts a dead process as a new srun step in the allocation, and names a node whose slurmd or link
is gone. Faults are real: SIGKILL of a task, a killed slurmd, a link taken down, an outside scancel,
a CLI killed mid-submit."""

from __future__ import annotations

import subprocess

import pytest

from slurmserve.runs import open_run, runs_root
from slurmserve.transport.procfs import task_records
from slurmserve.waiting import wait_until

from ..backends.test_slurm import assert_cancel_leaves_nothing, submit_and_check_ready
from ..helpers import events_of, slurmserve, status_of, submit_then_kill_the_cli, survive_kills, wait_for_event

pytestmark = pytest.mark.slow


@pytest.fixture
def lab_hosts(slurm_lab):
    return str(slurm_lab.hosts_file("slurm"))


def task_pid(run: str, process: str) -> int:
    """The PID of the process's latest task (the lab's nodes share this machine's PID space)."""
    return task_records(open_run(run).path / "pids" / f"{process}.tasks")[-1].pid


def test_killed_decode_frontend_and_etcd_are_restarted_in_the_allocation(lab_hosts, cancel_later):
    cancel_later("lab-heal")
    status = submit_and_check_ready("lab-heal", "--recipe", "mocker-disagg", "--hosts", lab_hosts)
    survive_kills("lab-heal", status["endpoint"], ["decode-0", "frontend", "etcd"], task_pid)
    assert wait_until(lambda: status_of("lab-heal")["verdict"] == "ready", 15)
    report = status_of("lab-heal")
    assert report["supervised"]
    restarts = {p["name"]: p["restarts"] for p in report["processes"]}
    assert restarts["decode-0"] == 1 and restarts["etcd"] == 1 and restarts["frontend"] >= 1
    assert len(task_records(open_run("lab-heal").path / "pids" / "decode-0.tasks")) == 2  # a second srun step
    assert_cancel_leaves_nothing("lab-heal")


def test_dead_slurmd_and_cut_link_are_reported_with_the_node(lab_hosts, slurm_lab, cancel_later):
    cancel_later("lab-nodes")
    submit_and_check_ready("lab-nodes", "--recipe", "mocker-disagg", "--hosts", lab_hosts)
    decode_node = open_run("lab-nodes").plan().process("decode-0").nodes[0]
    seen = len(events_of("lab-nodes"))
    slurm_lab.kill_slurmd(decode_node)
    try:
        wait_for_event("lab-nodes", lambda e: e["event"] == "node problem" and e["node"] == decode_node, 10, seen)
        report = status_of("lab-nodes")
        assert report["verdict"] == "degraded" and "slurmd" in report["nodes"][decode_node]
        assert f"node {decode_node}: slurmd" in slurmserve("status", "lab-nodes").stdout
    finally:
        slurm_lab.start_slurmd(decode_node)
    wait_for_event("lab-nodes", lambda e: e["event"] == "node recovered", 10, seen)

    seen = len(events_of("lab-nodes"))
    slurm_lab.set_link(decode_node, up=False)
    try:
        wait_for_event("lab-nodes", lambda e: e["event"] == "node problem" and e["node"] == decode_node, 10, seen)
        decode = next(p for p in status_of("lab-nodes")["processes"] if p["name"] == "decode-0")
        assert (
            decode["state"] in ("unhealthy", "failed", "starting") and status_of("lab-nodes")["verdict"] == "degraded"
        )
    finally:
        slurm_lab.set_link(decode_node, up=True)
    wait_for_event("lab-nodes", lambda e: e["event"] == "deployment" and e["verdict"] == "ready", 30, seen)
    assert_cancel_leaves_nothing("lab-nodes")


def test_outside_scancel_is_reported_and_cancel_still_works(lab_hosts, cancel_later):
    cancel_later("lab-scancel")
    submit_and_check_ready("lab-scancel", "--recipe", "mocker-agg", "--hosts", lab_hosts)
    job_id = open_run("lab-scancel").handle().job_id
    subprocess.run(["scancel", job_id], check=True)
    wait_for_event("lab-scancel", lambda e: e["event"] == "supervisor stopped", 15)
    assert wait_until(lambda: status_of("lab-scancel")["verdict"] == "stopped", 30)
    report = status_of("lab-scancel")
    assert f"Slurm job {job_id} CANCELLED" in report["reason"] and not report["supervised"]
    assert {p["state"] for p in report["processes"]} == {"stopped"}
    assert_cancel_leaves_nothing("lab-scancel")


def test_cli_killed_mid_submit_and_a_lost_handle(lab_hosts, cancel_later):
    cancel_later("lab-orphan")
    submit_then_kill_the_cli("lab-orphan", "handle.json", "--recipe", "mocker-agg", "--hosts", lab_hosts)
    handle = runs_root() / "lab-orphan" / "handle.json"
    # As if the CLI had died between sbatch and writing the handle: the job is found by its name.
    job_id = open_run("lab-orphan").handle().job_id
    handle.unlink()
    assert wait_until(lambda: status_of("lab-orphan")["verdict"] == "ready", 60), status_of("lab-orphan")
    assert open_run("lab-orphan").handle().job_id == job_id
    assert_cancel_leaves_nothing("lab-orphan")
