"""The Slurm backend end to end on the real test cluster (tests/cluster/lab.py): 3 slurmd nodes in
network namespaces, 8 fake GPUs each, two leaf switches."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from slurmserve.runs import open_run
from slurmserve.transport.procfs import task_records

from ..helpers import completion_tokens, lab_hosts_variant, slurmserve, status_of

pytestmark = pytest.mark.slow


@pytest.fixture
def lab_hosts(slurm_lab):
    return str(slurm_lab.hosts_file("slurm"))


def worker_environ(run: str, process: str) -> dict[str, str]:
    """The running worker's environment (the lab shares one PID space)."""
    record = task_records(open_run(run).path / "pids" / f"{process}.tasks")[0]
    return dict(item.split("=", 1) for item in open(f"/proc/{record.pid}/environ").read().split("\0") if "=" in item)


def worker_gpus(run: str, process: str = "agg-0") -> list[str]:
    """CUDA_VISIBLE_DEVICES as the running worker sees it."""
    return worker_environ(run, process)["CUDA_VISIBLE_DEVICES"].split(",")


def jobs_in_queue() -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()


def submit_and_check_ready(run: str, *args: str) -> dict:
    result = slurmserve("submit", *args, "--name", run, "--timeout", "180")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is ready at http://10.77.0.1" in result.stdout
    status = status_of(run)
    assert status["verdict"] == "ready", status
    assert {p["state"] for p in status["processes"]} == {"ready"}
    assert status["scheduler"].endswith("RUNNING")
    return status


def assert_cancel_leaves_nothing(run: str) -> None:
    the_run = open_run(run)
    job_id = the_run.handle().job_id
    result = slurmserve("cancel", run)
    assert result.returncode == 0, result.stderr
    assert job_id not in jobs_in_queue() or status_of(run)["scheduler"].split()[-1] in ("CANCELLED", "COMPLETED")
    records = [r for name in the_run.process_names() for r in task_records(the_run.path / "pids" / f"{name}.tasks")]
    assert records and all(r.visible_here() and not r.running() for r in records)
    assert status_of(run)["verdict"] == "stopped"


def test_mocker_disagg_prefill_and_decode_on_different_nodes(lab_hosts, cancel_later):
    cancel_later("lab-disagg")
    status = submit_and_check_ready("lab-disagg", "--recipe", "mocker-disagg", "--hosts", lab_hosts)
    nodes = {p["name"]: p["nodes"] for p in status["processes"]}
    assert nodes["prefill-0"] != nodes["decode-0"]
    assert completion_tokens(status["endpoint"], "tiny-mock") > 0
    logs = slurmserve("logs", "lab-disagg", "decode-0")
    assert logs.returncode == 0 and logs.stdout.strip()
    # With plan.json unreadable, the handle's job and the task records still stop and check everything.
    (open_run("lab-disagg").path / "plan.json").write_text('{"recipe": "mocker-disagg", "scrape_interval_s": null}')
    damaged = status_of("lab-disagg")
    assert "plan.json is damaged" in damaged["reason"] and damaged["scheduler"].endswith("RUNNING"), damaged
    assert_cancel_leaves_nothing("lab-disagg")


@pytest.mark.parametrize("recipe", ["gpt-oss-120b-disagg", "gpt-oss-120b-vllm-disagg"])
def test_gpt_oss_rehearsal_on_the_lab(lab_hosts, cancel_later, recipe):
    run = f"lab-rehearsal-{recipe.removeprefix('gpt-oss-120b-')}"
    cancel_later(run)
    status = submit_and_check_ready(run, "--recipe", recipe, "--set", "engine=mocker", "--hosts", lab_hosts)
    assert completion_tokens(status["endpoint"], "openai/gpt-oss-120b") > 0
    # The mock engine runs where and as the real one would: with vLLM's NIXL side channel in its env.
    planned = open_run(run).plan().process("decode-0")
    kept = {key: value for key, value in planned.env.items() if key.startswith(("VLLM_", "DYN_SYSTEM_"))}
    assert ("VLLM_NIXL_SIDE_CHANNEL_PORT" in kept) == ("vllm" in recipe), kept
    assert {key: worker_environ(run, "decode-0")[key] for key in kept} == kept
    assert_cancel_leaves_nothing(run)


def test_deployment_spanning_all_three_nodes_with_etcd(lab_hosts, cancel_later):
    cancel_later("lab-wide")
    status = submit_and_check_ready(
        "lab-wide",
        "--recipe",
        "mocker-disagg",
        "--hosts",
        lab_hosts,
        "--set",
        "prefill.replicas=3",
        "--set",
        "decode.replicas=2",
    )
    plan = open_run("lab-wide").plan()
    assert {n.name for n in plan.nodes} == {"node1", "node2", "node3"} and plan.discovery == "etcd"
    seen = httpx.get(f"{status['endpoint']}/health", timeout=5).json()["instances"]
    assert sum(i["component"] == "prefill" and i["endpoint"] == "generate" for i in seen) == 3
    assert all(completion_tokens(status["endpoint"], "tiny-mock") > 0 for _ in range(4))
    assert_cancel_leaves_nothing("lab-wide")


def test_two_deployments_at_once_on_the_same_nodes(lab_hosts, cancel_later):
    for run in ("lab-a", "lab-b"):
        cancel_later(run)
        result = slurmserve("submit", "--recipe", "mocker-agg", "--hosts", lab_hosts, "--name", run, "--no-wait")
        assert result.returncode == 0, result.stderr
    from slurmserve.waiting import wait_until

    assert wait_until(lambda: all(status_of(run)["verdict"] == "ready" for run in ("lab-a", "lab-b")), 180)
    a, b = (open_run(run).plan() for run in ("lab-a", "lab-b"))
    assert a.nodes[0].name == b.nodes[0].name == "node1" and a.endpoint != b.endpoint
    assert completion_tokens(a.endpoint, "tiny-mock") > 0 and completion_tokens(b.endpoint, "tiny-mock") > 0
    # Slurm gave the two jobs different GPUs of node1; each worker runs on its own job's.
    devices = [worker_gpus(run) for run in ("lab-a", "lab-b")]
    assert all(len(d) == 4 for d in devices) and not set(devices[0]) & set(devices[1]), devices
    for run in ("lab-a", "lab-b"):
        assert_cancel_leaves_nothing(run)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"node": {"gpus": 16}}, "node.gpus: the hosts file gives node1 16 GPUs, Slurm has 8"),
        ({"slurm": {"partition": "nope"}}, "slurm.partition: partition 'nope' does not exist"),
    ],
)
def test_bad_submission_fails_before_sbatch(slurm_lab, tmp_path, change, expected):
    bad = lab_hosts_variant(
        slurm_lab, "slurm", tmp_path, lambda h: h.update({k: {**h.get(k, {}), **v} for k, v in change.items()})
    )
    before = jobs_in_queue()
    result = slurmserve("submit", "--recipe", "mocker-disagg", "--hosts", bad, "--name", "bad")
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert jobs_in_queue() == before


def test_without_hosts_submit_plans_for_the_cluster_it_talks_to(slurm_lab):
    result = slurmserve("plan", "--recipe", "mocker-disagg", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["backend"] == "slurm" and {n["name"] for n in plan["nodes"]} <= {"node1", "node2", "node3"}
    assert {n["switch"] for n in plan["nodes"]} <= {"leaf1", "leaf2"} and all(n["gpus"] == 8 for n in plan["nodes"])


def test_a_reused_run_name_starts_from_a_clean_etcd(lab_hosts, cancel_later, tmp_path, monkeypatch):
    """etcd keeps leases across restarts: a second run of the same name on the same node must not
    inherit the first one's (dead) workers."""
    for attempt in ("first", "second"):
        monkeypatch.setenv("SLURMSERVE_HOME", str(tmp_path / attempt))  # the same name, twice
        cancel_later("lab-again")
        status = submit_and_check_ready("lab-again", "--recipe", "mocker-disagg", "--hosts", lab_hosts)
        seen = httpx.get(f"{status['endpoint']}/health", timeout=5).json()["instances"]
        assert sum(i["endpoint"] == "generate" for i in seen) == 2, seen
        assert_cancel_leaves_nothing("lab-again")


def test_job_wide_layout_options_do_not_leak_into_steps(slurm_lab, tmp_path, cancel_later):
    """sbatch options such as --ntasks-per-node export SLURM_* defaults that every srun in the job
    inherits: each step states its own layout, so each process still runs with its planned tasks."""
    path = lab_hosts_variant(
        slurm_lab,
        "slurm",
        tmp_path,
        lambda h: h["slurm"].update(extra_sbatch=["--ntasks-per-node=8", "--cpus-per-task=2"]),
    )
    cancel_later("lab-layout")
    status = submit_and_check_ready("lab-layout", "--recipe", "mocker-disagg", "--hosts", path)
    assert completion_tokens(status["endpoint"], "tiny-mock") > 0
    run = open_run("lab-layout")
    for process in run.plan().processes:
        assert len(task_records(run.path / "pids" / f"{process.name}.tasks")) == process.tasks, process.name
    assert_cancel_leaves_nothing("lab-layout")


def test_one_prefill_one_decode_placed_inside_one_leaf_of_the_lab(slurm_lab, tmp_path, cancel_later):
    # node3 (alone under leaf2) listed first
    path = lab_hosts_variant(slurm_lab, "slurm", tmp_path, lambda h: h.update(hosts=h["hosts"][2:] + h["hosts"][:2]))
    cancel_later("lab-leaf")
    status = submit_and_check_ready("lab-leaf", "--recipe", "mocker-disagg", "--hosts", path)
    plan = open_run("lab-leaf").plan()
    assert {n.name for n in plan.nodes} == {"node1", "node2"} and {n.switch for n in plan.nodes} == {"leaf1"}
    assert "#SBATCH --switches=1" in (open_run("lab-leaf").path / "slurmserve.sbatch").read_text()
    assert completion_tokens(status["endpoint"], "tiny-mock") > 0
    assert_cancel_leaves_nothing("lab-leaf")
