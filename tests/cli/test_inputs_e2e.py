"""Inputs end to end: payloads and a planted token through real deployments (this machine and the test
cluster), and an SSH host whose key changed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from slurmserve.runs import open_run
from slurmserve.transport.procfs import task_records

from ..config.test_inputs import MARKER, assert_private
from ..helpers import completion_tokens, lab_hosts_variant, slurmserve, status_of

pytestmark = pytest.mark.slow

TOKEN = "hf_plantedTokenThatMustNeverShow0123456789"
PAYLOAD = f"$(touch {MARKER}); `touch {MARKER}`"
SERVED = f"tiny;touch {MARKER}"
SETS = ["--set", "env.HF_TOKEN=${HF_TOKEN}", "--set", f"env.PAYLOAD={PAYLOAD}", "--set", f"model.served_name={SERVED}"]


@pytest.fixture
def planted(monkeypatch):
    MARKER.unlink(missing_ok=True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield
    assert not MARKER.exists(), "a payload ran as a command"


def cmdlines_holding(secret: str) -> list[str]:
    """Every process of this machine (the lab's nodes share its PID space) whose argv holds the secret."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and secret.encode() in (entry / "cmdline").read_bytes():
                found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()[:200]!r}")
        except OSError:
            continue
    return found


def files_holding(secret: str, folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret in p.read_text(errors="replace")]


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def check_running(run: str, worker_pid: int) -> None:
    status = status_of(run)
    assert status["verdict"] == "ready", status
    assert completion_tokens(status["endpoint"], SERVED) > 0
    environment = environment_of(worker_pid)
    assert environment["PAYLOAD"] == PAYLOAD and environment["HF_TOKEN"] == TOKEN  # by the environment, as written
    assert cmdlines_holding(TOKEN) == [], "the token is in a process's argv"
    the_run = open_run(run)
    assert files_holding(TOKEN, the_run.path) == [], "the token is in a run-directory file"
    assert_private(the_run.path)


def test_payloads_and_a_planted_token_on_this_machine(planted, cancel_later):
    cancel_later("inert-local")
    result = slurmserve("submit", "--recipe", "mocker-agg", "--name", "inert-local", *SETS, "--timeout", "120")
    assert result.returncode == 0, result.stderr
    check_running("inert-local", open_run("inert-local").pid("agg-0"))
    assert slurmserve("cancel", "inert-local").returncode == 0


def test_payloads_and_a_planted_token_on_the_test_cluster(slurm_lab, tmp_path, planted, cancel_later):
    cancel_later("inert-lab")
    hosts = lab_hosts_variant(slurm_lab, "slurm", tmp_path)
    result = slurmserve(
        "submit", "--recipe", "mocker-agg", "--hosts", hosts, "--name", "inert-lab", *SETS, "--timeout", "120"
    )
    assert result.returncode == 0, result.stderr
    the_run = open_run("inert-lab")
    check_running("inert-lab", task_records(the_run.path / "pids" / "agg-0.tasks")[0].pid)
    job = the_run.handle().job_id
    records = subprocess.run(["scontrol", "show", "step", "-d", job], capture_output=True, text=True).stdout
    records += subprocess.run(["squeue", "--steps", "-j", job, "-o", "%all"], capture_output=True, text=True).stdout
    assert "agg-0" in records and TOKEN not in records, "the token is in Slurm's step records"
    assert slurmserve("cancel", "inert-lab").returncode == 0


def test_an_ssh_host_whose_key_changed_is_refused_naming_it(slurm_lab, tmp_path):
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    other = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    lines = slurm_lab.known_hosts.read_text().splitlines()
    tampered = tmp_path / "known_hosts"
    tampered.write_text(
        "".join(
            (f"node2,{slurm_lab.addresses['node2']} {other}" if line.startswith("node2,") else line) + "\n"
            for line in lines
        )
    )
    (Path(os.environ["HOME"]) / ".ssh" / "config").write_text(f"Host *\n    UserKnownHostsFile {tampered}\n")
    result = slurmserve(
        "submit",
        "--recipe",
        "mocker-disagg",
        "--hosts",
        str(slurm_lab.hosts_file("ssh")),
        "--name",
        "ssh-changed-key",
        "--no-wait",
    )
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"host node2 ({slurm_lab.addresses['node2']}): its SSH host key has changed" in message
    assert f"ssh-keygen -R {slurm_lab.addresses['node2']}" in message and "Nothing was started" in message
    assert json.loads(slurmserve("status", "--json").stdout) == []


def test_an_ssh_host_whose_key_is_unknown_is_refused_naming_it(slurm_lab, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    (Path(os.environ["HOME"]) / ".ssh" / "config").write_text(f"Host *\n    UserKnownHostsFile {empty}\n")
    result = slurmserve(
        "submit", "--recipe", "mocker-disagg", "--hosts", str(slurm_lab.hosts_file("ssh")), "--name", "ssh-unknown"
    )
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and "its SSH host key is unknown" in message and "host node1" in message, message
