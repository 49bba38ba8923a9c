"""Run names taken again on the test cluster (tests/cluster/lab.py): a cancelled Slurm (or SSH) run, its
folder under the hosts file's run_root, is set aside under its start time and stays readable (on SSH, each
host's copy is renamed too); `rm` refuses the live run and removes both once it is cancelled."""

from __future__ import annotations

import json

import pytest

from ..helpers import lab_hosts_variant, slurmserve, status_of

pytestmark = pytest.mark.slow


def listed(*options: str) -> set[str]:
    result = slurmserve("status", "--json", *options)
    assert result.returncode == 0, result.stderr
    return {row["run"] for row in json.loads(result.stdout)}


@pytest.mark.parametrize("kind", ["slurm", "ssh"])
def test_a_cancelled_runs_name_is_taken_again_on_the_lab(slurm_lab, tmp_path, cancel_later, kind):
    run_root = tmp_path / "shared-runs"
    hosts = lab_hosts_variant(slurm_lab, kind, tmp_path, lambda h: h.update(run_root=str(run_root)))
    submit = ("submit", "--recipe", "mocker-agg", "--hosts", hosts, "--name", "lab-again")
    cancel_later("lab-again")
    first = slurmserve(*submit, "--timeout", "180")
    assert first.returncode == 0, first.stdout + first.stderr
    assert slurmserve("cancel", "lab-again").returncode == 0
    second = slurmserve(*submit, "--no-wait")
    assert second.returncode == 0, second.stdout + second.stderr
    (aside,) = listed("--all") - {"lab-again"}
    assert aside.startswith("lab-again-") and (run_root / aside / "plan.json").exists()
    old = status_of(aside)
    assert old["verdict"] == "stopped" and (kind == "ssh" or old["scheduler"].endswith("CANCELLED")), old
    assert slurmserve("logs", aside, "frontend").stdout.strip()
    assert listed() == {"lab-again"}  # live runs only
    refused = slurmserve("rm", "lab-again", aside)
    assert refused.returncode == 2 and "lab-again" in refused.stderr and (run_root / aside).exists()
    assert slurmserve("cancel", "lab-again").returncode == 0
    removed = slurmserve("rm", "lab-again", aside)
    assert removed.returncode == 0, removed.stderr
    assert listed("--all") == set() and list(run_root.iterdir()) == []
