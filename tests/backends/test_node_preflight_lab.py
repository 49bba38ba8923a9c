"""The node preflight inside the job, on the real test cluster: nodes that lack what the plan needs
end the job before anything starts, and `submit` names each node and what it lacks."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime

import pytest

from slurmserve.deploy import prepare
from slurmserve.runs import open_run
from slurmserve.transport.procfs import task_records

from ..cluster.lab import node_address
from ..helpers import lab_hosts_variant, slurmserve

pytestmark = pytest.mark.slow

# Seconds from the job's start to `submit` reporting the failure (the bound).
REPORT_WITHIN_S = 10


def hold_port_in_node(node: str, port: int) -> subprocess.Popen:
    """A listener on the node's address, in the node's network namespace (what a stray server would be)."""
    holder = subprocess.Popen(
        [
            "nsenter",
            f"--net=/run/netns/{node}",
            sys.executable,
            "-c",
            "import socket, sys, time\n"
            "s = socket.socket(); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); print('held', flush=True)\n"
            "time.sleep(600)",
            node_address(node),
            str(port),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def interpreter_lacking_dynamo_on(node: str, folder) -> str:
    """An interpreter path that is slurmserve's venv everywhere but on `node`, where it is the system's
    Python (no Dynamo, no slurmserve): a node whose image lacks what the others have."""
    wrapper = folder / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$(cat /proc/sys/kernel/hostname)" = {node} ]; then exec /usr/bin/python3 -I "$@"; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def test_nodes_lacking_what_the_plan_needs_end_the_job_with_a_line_each(slurm_lab, tmp_path):
    run = "lab-preflight"
    python = interpreter_lacking_dynamo_on("node2", tmp_path)

    def lacking(hosts: dict) -> None:
        hosts["python"] = python
        hosts["control_plane"] = {"etcd": "/nonexistent/bin/etcd"}

    hosts = lab_hosts_variant(slurm_lab, "slurm", tmp_path, lacking)
    argv = ["--recipe", "mocker-disagg", "--hosts", hosts, "--name", run]
    argv += ["--set", "mocker.model_path=/nonexistent/tokenizer"]
    plan = prepare("mocker-disagg", hosts, ["mocker.model_path=/nonexistent/tokenizer"], name=run).plan
    frontend, decode = plan.process("frontend"), plan.process("decode-0")
    assert frontend.nodes == ["node1"] and decode.nodes == ["node2"]

    holder = hold_port_in_node("node1", frontend.ports["http"])
    try:
        result = slurmserve("submit", *argv, "--timeout", "120")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1, result.stdout + result.stderr
    message = result.stderr
    assert "the node preflight failed, nothing was started" in message and "Traceback" not in message
    node1 = next(line for line in message.splitlines() if line.strip().startswith("node1:"))
    node2 = next(line for line in message.splitlines() if line.strip().startswith("node2:"))
    assert "/nonexistent/bin/etcd not found (run by etcd)" in node1
    assert f"port {frontend.ports['http']} (frontend http) is in use on 10.77.0.11" in node1
    assert "model folder /nonexistent/tokenizer does not exist" in node1
    assert f"dynamo.mocker cannot be imported by {python} (No module named 'dynamo')" in node2
    assert "model folder /nonexistent/tokenizer does not exist" in node2

    the_run = open_run(run)
    # Nothing started: no process has a record, and the job ended within seconds of starting.
    assert not any(task_records(the_run.path / "pids" / f"{p.name}.tasks") for p in plan.processes)
    assert not (the_run.path / "state.json").exists()
    failed_at = next(e for e in the_run.events() if e.event == "failed").time
    job_started = next(e for e in the_run.events() if e.event == "job submitted").time
    seconds = (datetime.fromisoformat(failed_at) - datetime.fromisoformat(job_started)).total_seconds()
    assert seconds < REPORT_WITHIN_S, f"reported {seconds:.1f} s after the job was submitted"


def test_a_healthy_cluster_passes_the_node_preflight_without_a_line(slurm_lab):
    run = "lab-preflight-ok"
    hosts = str(slurm_lab.hosts_file("slurm"))
    result = slurmserve("submit", "--recipe", "mocker-agg", "--hosts", hosts, "--name", run, "--timeout", "120")
    assert result.returncode == 0, result.stdout + result.stderr
    the_run = open_run(run)
    assert the_run.preflight_report() == []
    assert sorted(path.name for path in (the_run.path / "preflight").iterdir()) == ["node1.log"]
    assert slurmserve("cancel", run).returncode == 0
