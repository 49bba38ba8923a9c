"""SshRunner against the lab's sshd (root and the lab cluster: run under the lab lock)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from slurmserve.config.hosts import concrete_nodes, load_hosts
from slurmserve.transport.runner import TIMED_OUT
from slurmserve.transport.ssh import SshRunner


@pytest.fixture
def node1(slurm_lab):
    nodes = {node.name: node for node in concrete_nodes(load_hosts(slurm_lab.hosts_file("ssh")))}
    return SshRunner(nodes["node1"])


def test_run_env_and_exit_status_over_ssh(node1):
    ran = node1.run(["sh", "-c", 'echo "$GREETING" $(hostname); exit 4'], env={"GREETING": "a,b c"}, timeout=30)
    assert (ran.exited, ran.stdout.split()) == (4, ["a,b", "c", "node1"])


def test_a_run_past_its_timeout_says_so(node1):
    started = time.monotonic()
    ran = node1.run(["sleep", "30"], timeout=1)
    assert ran.timed_out and ran.exited == TIMED_OUT and ran.stderr.endswith("no answer within 1 s")
    assert time.monotonic() - started < 10


def test_upload_then_lines_and_start_detached(node1, tmp_path):
    folder = f"/tmp/slurmserve-runner-lab-{time.monotonic_ns()}"
    node1.upload({f"{folder}/sub/hello.txt": "one\ntwo\n"})
    assert list(node1.lines(["cat", f"{folder}/sub/hello.txt"])) == ["one\n", "two\n"]
    started = node1.start_detached(["sh", "-c", "echo started; sleep 30"], log=f"{folder}/detached.log")
    assert started.pgid > 0 and started.started
    groups = node1.run(["ps", "-o", "pgid=,sid=", "-p", str(started.pgid)], timeout=30).stdout.split()
    assert groups == [str(started.pgid)] * 2  # a session and group of its own, outliving the SSH session
    node1.run(["kill", "--", f"-{started.pgid}"], timeout=30)
    node1.run(["rm", "-rf", folder], timeout=30)


def test_check_connection_names_an_unreachable_host(node1):
    assert node1.check_connection(10) is None
    ssh = node1.node.ssh.model_copy(update={"port": 1})
    gone = SshRunner(dataclasses.replace(node1.node, name="nowhere", address="127.0.0.1", ssh=ssh))
    problem = gone.check_connection(10)
    assert problem is not None and problem.startswith("host nowhere (127.0.0.1): unreachable")
