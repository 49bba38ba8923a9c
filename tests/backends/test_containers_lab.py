"""Containers on the real test cluster: Slurm's own OCI support (`srun --container`, runc), with a
Debian image whose /opt/dynamo holds Dynamo's frontend and mock engine (tests/cluster/oci.py), not the
host's venv. The frontend and the workers run in it; etcd and slurmserve's helpers on the nodes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slurmserve.runs import open_run
from slurmserve.transport.procfs import task_records

from ..cluster import oci
from ..helpers import completion_tokens, lab_hosts_variant, slurmserve, status_of

pytestmark = pytest.mark.slow


def root_of(pid: int) -> tuple[int, int]:
    """The (device, inode) of a process's root directory: the node's `/` or the container's."""
    found = os.stat(f"/proc/{pid}/root/")
    return found.st_dev, found.st_ino


def test_mocker_disagg_serves_with_its_dynamo_processes_in_an_oci_container(
    slurm_lab, oci_image, tmp_path, cancel_later
):
    run = "lab-oci"
    cancel_later(run)

    def in_the_image(hosts: dict) -> None:
        hosts["slurm"] |= {"container_bundle": str(oci_image), "container_tools": {"python": oci.PYTHON}}

    hosts = lab_hosts_variant(slurm_lab, "slurm", tmp_path, in_the_image)
    result = slurmserve("submit", "--recipe", "mocker-disagg", "--hosts", hosts, "--name", run, "--timeout", "180")
    assert result.returncode == 0, result.stdout + result.stderr
    status = status_of(run)
    assert completion_tokens(status["endpoint"], "tiny-mock") > 0

    the_run = open_run(run)
    node_root = root_of(os.getpid())
    for name in ("frontend", "prefill-0", "decode-0"):
        (task,) = task_records(the_run.path / "pids" / f"{name}.tasks")
        assert root_of(task.pid) != node_root, f"{name} runs on the node, not in the image"
        # The image's interpreter; the host's venv is not even visible in there.
        assert open(f"/proc/{task.pid}/cmdline").read().split("\0")[0] == oci.PYTHON
        assert os.path.exists(f"/proc/{task.pid}/root{oci.VENV}/pyvenv.cfg")
        assert not os.path.exists(f"/proc/{task.pid}/root{sys.prefix}")
    (etcd,) = task_records(the_run.path / "pids" / "etcd.tasks")
    assert root_of(etcd.pid) == node_root  # the control plane runs from slurmserve's venv, on the node
    # The node preflight checked inside the container too, and found nothing lacking.
    assert the_run.preflight_report() == []
    assert (the_run.path / "preflight" / "node1@container.log").exists()

    assert slurmserve("cancel", run).returncode == 0
    records = [r for p in the_run.plan().processes for r in task_records(the_run.path / "pids" / f"{p.name}.tasks")]
    assert records and not any(r.running() for r in records)


def test_an_image_lacking_the_engine_fails_the_node_preflight_inside_it(slurm_lab, oci_image, tmp_path):
    """The image's system python3 has no Dynamo: the check run inside the container says so."""
    run = "lab-oci-lacking"

    def system_python(hosts: dict) -> None:
        hosts["slurm"] |= {"container_bundle": str(oci_image), "container_tools": {"python": "/usr/bin/python3"}}

    hosts = lab_hosts_variant(slurm_lab, "slurm", tmp_path, system_python)
    result = slurmserve("submit", "--recipe", "mocker-agg", "--hosts", hosts, "--name", run, "--timeout", "120")
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "node1 (in the container): dynamo.mocker cannot be imported by /usr/bin/python3 (No module named 'dynamo')"
        in result.stderr
    )


def image_with_a_planted_flag(image: Path, into: Path) -> Path:
    """A copy of the image (hard links: seconds, no space) whose Dynamo, versioned 1.6.1+planted, has no
    `--speedup-ratio` (renamed `--speedup`): a Dynamo that rejects a flag the host's accepts. The files
    changed are copied first, so the image itself stays as it was."""
    subprocess.run(["cp", "-al", str(image / "rootfs"), str(into / "rootfs")], check=True)
    shutil.copy(image / "config.json", into / "config.json")
    (site,) = (into / "rootfs" / oci.VENV.lstrip("/") / "lib").glob("python3*/site-packages")
    (metadata,) = site.glob("ai_dynamo-1.6.1.dist-info/METADATA")
    for path, old, new in (
        (site / "dynamo" / "mocker" / "args.py", '"--speedup-ratio"', '"--speedup"'),
        (metadata, "Version: 1.6.1\n", "Version: 1.6.1+planted\n"),
    ):
        text = path.read_text()
        assert old in text, f"{path} has no {old!r} to plant over"
        path.unlink()  # the hard link, not the image's file
        path.write_text(text.replace(old, new))
    return into


def test_an_image_whose_dynamo_rejects_a_flag_ends_the_job_before_anything_starts(slurm_lab, oci_image, tmp_path):
    """Before submit only this machine's Dynamo can be asked; the job's node preflight asks the image's,
    inside the container, and names the flag and that Dynamo's version."""
    run = "lab-oci-planted"
    planted = image_with_a_planted_flag(oci_image, tmp_path)

    def in_the_planted_image(hosts: dict) -> None:
        hosts["slurm"] |= {"container_bundle": str(planted), "container_tools": {"python": oci.PYTHON}}

    hosts = lab_hosts_variant(slurm_lab, "slurm", tmp_path, in_the_planted_image)
    result = slurmserve("submit", "--recipe", "mocker-agg", "--hosts", hosts, "--name", run, "--timeout", "120")
    assert result.returncode == 1, result.stdout + result.stderr
    said = "node1 (in the container): agg-0: Dynamo 1.6.1+planted's dynamo.mocker rejects --speedup-ratio "
    assert said in result.stderr and "unrecognized arguments: --speedup-ratio 100" in result.stderr, result.stderr
    the_run = open_run(run)
    assert not list(the_run.path.glob("pids/*.tasks")), "something started after the preflight failed"
