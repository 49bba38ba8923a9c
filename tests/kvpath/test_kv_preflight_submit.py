"""`submit --preflight` on the test cluster: the KV-path check runs between the control plane and the
workers, reports bandwidth, and stops the submission when a planned device does not exist."""

from __future__ import annotations

import pytest

from slurmserve.runs import open_run

from ..helpers import lab_hosts_variant, slurmserve

pytestmark = pytest.mark.slow


def kv_lines(run: str, kind: str) -> str:
    the_run = open_run(run)
    if kind == "slurm":
        return (the_run.path / "logs" / "launcher.log").read_text()
    return "\n".join(e.result for e in the_run.events() if e.event == "kv path checked")


@pytest.mark.parametrize("kind", ["slurm", "ssh"])
def test_preflight_reports_bandwidth_between_prefill_and_decode(slurm_lab, tmp_path, kind, cancel_later):
    run = f"kv-{kind}"
    cancel_later(run)
    result = slurmserve(
        "submit",
        "--recipe",
        "mocker-disagg",
        "--hosts",
        lab_hosts_variant(slurm_lab, kind, tmp_path),
        "--name",
        run,
        "--preflight",
        "--timeout",
        "120",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = kv_lines(run, kind)
    assert "KV path node1 -> node2" in lines and " MB/s" in lines and "[tcp/eth0]" in lines, lines
    assert slurmserve("cancel", run).returncode == 0


@pytest.mark.parametrize("kind", ["slurm", "ssh"])
def test_a_planned_device_that_does_not_exist_stops_the_submission(slurm_lab, tmp_path, kind, cancel_later):
    run = f"kv-bad-{kind}"
    cancel_later(run)
    nics = [{"name": "mlx5_0", "port": 1, "gpus": [0, 1, 2, 3, 4, 5, 6, 7]}]
    result = slurmserve(
        "submit",
        "--recipe",
        "mocker-disagg",
        "--hosts",
        lab_hosts_variant(slurm_lab, kind, tmp_path, lambda h: h["node"].update(nics=nics)),
        "--name",
        run,
        "--preflight",
        "--timeout",
        "120",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert "node1 -> node2 over mlx5_0:1" in message and "not available" in message, message
    workers_started = [p for p, info in open_run(run).handle().processes.items() if p.startswith(("prefill", "decode"))]
    assert workers_started == []  # stopped before any worker (SSH; on Slurm the job ended at the check)
