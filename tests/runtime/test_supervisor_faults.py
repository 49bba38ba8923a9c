"""The supervisor, status and cancel under faults: torn files, odd replies, a supervisor killed, PID reuse,
a failed start on the test cluster, SSH launches cancelled or orphaned, the NATS request plane, and
deregistration that is checked. Each asserts what `status --json` and events.jsonl say."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from slurmserve.runs import open_run
from slurmserve.transport.http import canary_completion, frontend_instances, serving
from slurmserve.transport.procfs import start_time, task_records
from slurmserve.waiting import wait_until

from ..helpers import events_of, lab_hosts_variant, slurmserve, status_of, submit_then_kill_the_cli, wait_for_event

pytestmark = pytest.mark.slow


def submit(run: str, *argv: str) -> dict:
    result = slurmserve("submit", "--name", run, "--timeout", "120", *argv)
    assert result.returncode == 0, result.stdout + result.stderr
    return status_of(run)


def heartbeat(run: str) -> int:
    return open_run(run).supervisor_state().heartbeat


def processes_mentioning(text: str) -> list[str]:
    """Processes of this machine (the lab's nodes share its PID space) whose command line holds `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.name != str(os.getpid()):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if text in cmdline and "pytest" not in cmdline:
                    found.append(f"{entry.name}: {cmdline[:160]}")
        except OSError:
            continue
    return found


# -- unit: an odd reply does not end anything ---------------------------------------------------------------


class NoUsage(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.dumps({"choices": [{"message": {"content": "hi"}}], "usage": None}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_canary_reply_without_usage_is_a_failed_canary_not_an_exception():
    server = ThreadingHTTPServer(("127.0.0.1", 0), NoUsage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert canary_completion(f"http://127.0.0.1:{server.server_address[1]}", "m") is None
    finally:
        server.shutdown()


# -- the local backend --------------------------------------------------------------------------------------


def test_torn_pid_file_and_torn_event_line_end_nothing(cancel_later):
    cancel_later("torn")
    submit("torn", "--recipe", "mocker-disagg")
    run = open_run("torn")
    pid_file = run.path / "pids" / "decode-0.pid"
    whole = pid_file.read_text()
    pid_file.write_text("")  # half-written, as a reader may catch one
    with open(run.path / "events.jsonl", "a") as events:
        events.write('{"version": 1, "time": "2026-11')  # a writer cut short
    before = heartbeat("torn")
    assert wait_until(lambda: heartbeat("torn") >= before + 4, 10), "the supervisor stopped ticking"
    status = status_of("torn")
    assert status["supervised"] and status["verdict"] == "ready", status
    pid_file.write_text(whole)
    seen = len(events_of("torn"))
    os.kill(int(whole.split()[0]), signal.SIGKILL)
    wait_for_event("torn", lambda e: e["event"] == "restarted" and e["process"] == "decode-0", 15, seen)
    assert wait_until(lambda: status_of("torn")["verdict"] == "ready", 20)
    assert not any(e["event"] == "supervisor error" for e in events_of("torn")), events_of("torn")


def test_a_killed_supervisor_is_named_by_status(cancel_later):
    cancel_later("orphaned")
    submit("orphaned", "--recipe", "mocker-agg")
    supervisor = open_run("orphaned").pid("supervisor")
    os.kill(supervisor, signal.SIGKILL)
    status = status_of("orphaned")
    assert not status["supervised"], status
    assert f"its supervisor (pid {supervisor} on " in status["reason"] and "is gone" in status["reason"], status
    assert status["verdict"] == "ready"  # the processes themselves still serve: asked of the backend


def test_a_recycled_pid_is_never_signalled(cancel_later):
    cancel_later("decoyed")
    submit("decoyed", "--recipe", "mocker-agg")
    run = open_run("decoyed")
    real = run.pid("agg-0")
    decoy = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        # The record names the decoy's PID with another start time: as if agg-0 had died and its PID been reused.
        (run.path / "pids" / "agg-0.pid").write_text(f"{decoy.pid} 1\n")
        assert slurmserve("cancel", "decoyed").returncode in (0, 1)
        assert decoy.poll() is None, "the decoy was signalled"
    finally:
        decoy.kill()
        os.killpg(real, signal.SIGKILL)


def test_deregistration_takes_a_dead_worker_off_the_frontend_at_once(cancel_later):
    """With a 60 s lease only the revocation can take the instance off the frontend's list in 2 s."""
    cancel_later("dereg")
    status = submit("dereg", "--recipe", "mocker-disagg", "--set", "discovery=etcd", "--set", "env.ETCD_LEASE_TTL=60")
    endpoint = status["endpoint"]
    decode = next(i for i in serving(frontend_instances(endpoint)) if i["component"] == "backend")
    seen = len(events_of("dereg"))
    os.kill(open_run("dereg").pid("decode-0"), signal.SIGKILL)
    assert wait_until(
        lambda: decode["instance_id"] not in {i["instance_id"] for i in frontend_instances(endpoint) or []}, 2.0
    ), "the dead worker is still listed 2 s after it died"
    event = wait_for_event("dereg", lambda e: e["event"] == "deregistered" and e["process"] == "decode-0", 5, seen)
    assert event["instances"] >= 1


@pytest.mark.parametrize("after_s", [0.1, 0.3, 0.8])
def test_a_supervisor_stopped_while_it_starts_records_its_stop(after_s):
    """A job cancelled right after it began: SIGTERM comes while the supervisor is still importing (or
    just after). It records its start and its stop, writes its final state, and ends."""
    from ..conftest import local_run

    run = local_run("mocker-agg", "early")
    # A launcher that lives on (this test): the supervisor has a deployment to wait for, not one to give up.
    (run.path / "pids" / "launcher.pid").write_text(f"{os.getpid()} {start_time(os.getpid())}\n")
    supervisor = subprocess.Popen([sys.executable, "-m", "slurmserve.node.supervisor", str(run.path)])
    time.sleep(after_s)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0
    said = [e["event"] for e in events_of("early")]
    assert "supervisor started" in said and said[-1] == "supervisor stopped", said
    state = run.supervisor_state()
    assert state is not None and state.final and state.reason.startswith("SIGTERM")


# -- the test cluster ---------------------------------------------------------------------------------------


def test_a_failed_start_on_the_test_cluster_leaves_nothing(slurm_lab, tmp_path, cancel_later):
    """etcd cannot start (the hosts file names an etcd that exits at once): submit fails, and neither the
    supervisor nor any task is left on any node."""
    cancel_later("lab-nostart")
    broken = tmp_path / "etcd"
    broken.write_text("#!/bin/sh\necho 'etcd: cannot start' >&2\nexit 1\n")
    broken.chmod(0o755)
    hosts = lab_hosts_variant(slurm_lab, "slurm", tmp_path, lambda h: h.update(control_plane={"etcd": str(broken)}))
    result = slurmserve(
        "submit", "--recipe", "mocker-disagg", "--hosts", hosts, "--name", "lab-nostart", "--timeout", "120"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "etcd" in result.stderr
    run = open_run("lab-nostart")
    assert wait_until(lambda: not status_of("lab-nostart")["supervised"], 15), status_of("lab-nostart")
    assert wait_until(lambda: not processes_mentioning(str(run.path)), 15), processes_mentioning(str(run.path))
    for process in run.plan().processes:
        assert not any(r.running() for r in task_records(run.path / "pids" / f"{process.name}.tasks"))
    status = status_of("lab-nostart")
    assert status["verdict"] == "failed" and status["reason"].startswith("the start failed"), status
    assert any(e["event"] == "supervisor stopped" for e in events_of("lab-nostart"))


def test_fail_fast_on_the_test_cluster_cancels_the_job(slurm_lab, tmp_path, cancel_later):
    cancel_later("lab-fastfail")
    hosts = lab_hosts_variant(slurm_lab, "slurm", tmp_path)
    submit(
        "lab-fastfail",
        "--recipe",
        "mocker-disagg",
        "--hosts",
        hosts,
        "--set",
        "restart.max_restarts=0",
        "--set",
        "restart.fail_fast=true",
    )
    run = open_run("lab-fastfail")
    os.kill(task_records(run.path / "pids" / "decode-0.tasks")[-1].pid, signal.SIGKILL)
    event = wait_for_event("lab-fastfail", lambda e: e["event"] == "cancel requested", 30)
    assert "restart.fail_fast" in event["reason"]
    # The supervisor is inside the job it cancels: Slurm ends it with the rest.
    assert wait_until(lambda: status_of("lab-fastfail")["scheduler"].endswith("CANCELLED"), 90), status_of(
        "lab-fastfail"
    )
    assert wait_until(lambda: not processes_mentioning(str(run.path)), 60), processes_mentioning(str(run.path))
    assert status_of("lab-fastfail")["verdict"] == "stopped"


def test_nats_request_plane_counts_the_workers(slurm_lab, tmp_path, cancel_later):
    cancel_later("lab-nats")
    hosts = lab_hosts_variant(slurm_lab, "slurm", tmp_path)
    submit("lab-nats", "--recipe", "mocker-disagg", "--hosts", hosts, "--set", "request_plane=nats")
    assert wait_until(lambda: status_of("lab-nats")["frontend"] == {"prefill": [1, 1], "decode": [1, 1]}, 15), (
        status_of("lab-nats")
    )
    assert {p["registered"] for p in status_of("lab-nats")["processes"] if p["role"] in ("prefill", "decode")} == {True}


def test_ssh_no_wait_then_cancel_at_once_leaves_nothing_and_starts_nothing_after(slurm_lab, cancel_later):
    cancel_later("ssh-quick")
    result = slurmserve(
        "submit",
        "--recipe",
        "mocker-disagg",
        "--hosts",
        str(slurm_lab.hosts_file("ssh")),
        "--name",
        "ssh-quick",
        "--no-wait",
    )
    assert result.returncode == 0, result.stderr
    assert slurmserve("cancel", "ssh-quick").returncode == 0
    run_dir = str(open_run("ssh-quick").path)
    time.sleep(5)  # long enough for a forgotten stage to have started something
    assert not processes_mentioning(run_dir), processes_mentioning(run_dir)


def test_ssh_cli_killed_mid_submit_leaves_a_run_that_status_and_cancel_handle(slurm_lab, cancel_later):
    cancel_later("ssh-orphan")
    submit_then_kill_the_cli(
        "ssh-orphan", "pids/launcher.pid", "--recipe", "mocker-agg", "--hosts", str(slurm_lab.hosts_file("ssh"))
    )
    assert wait_until(lambda: status_of("ssh-orphan")["verdict"] == "ready", 90), status_of("ssh-orphan")
    result = slurmserve("cancel", "ssh-orphan")
    assert result.returncode == 0 and "no process left" in result.stdout, result.stdout + result.stderr
    assert not processes_mentioning(str(open_run("ssh-orphan").path))
