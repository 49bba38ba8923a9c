"""`slurmserve probe` on the test cluster: a Slurm step (or SSH) per node, parsed into a hosts file that `plan` accepts."""

from __future__ import annotations

import json

import pytest
import yaml

from ..helpers import lab_hosts_variant, slurmserve

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["slurm", "ssh"])
def test_probe_writes_a_hosts_file_for_every_node(slurm_lab, tmp_path, kind):
    out = tmp_path / f"probed-{kind}.yaml"
    result = slurmserve("probe", "--hosts", str(slurm_lab.hosts_file(kind)), "--out", str(out))
    assert result.returncode == 0, result.stderr
    probed = yaml.safe_load(out.read_text())
    assert probed["backend"] == kind
    assert {(h["name"], h["address"]) for h in probed["hosts"]} == {
        (n, slurm_lab.addresses[n]) for n in slurm_lab.nodes
    }
    assert "nics" not in probed.get("node", {}) or probed["node"]["nics"] == []  # no RDMA in the lab
    plan = slurmserve("plan", "--recipe", "mocker-disagg", "--hosts", str(out), "--json")
    if kind == "slurm":  # the lab's GPUs are Slurm GRES only: the probe takes Slurm's count
        assert plan.returncode == 0, plan.stderr
        assert {n["gpus"] for n in json.loads(plan.stdout)["nodes"]} == {8}
    else:  # over SSH nothing shows the fake GPUs, and the planner says so
        assert plan.returncode == 2 and "the nodes have no GPUs" in plan.stderr
    assert (
        slurmserve("probe", "--hosts", str(slurm_lab.hosts_file(kind)), "--out", str(out)).returncode == 2
    )  # never overwrites


def test_probe_of_an_unreachable_host_names_it(slurm_lab, tmp_path):
    path = lab_hosts_variant(
        slurm_lab,
        "ssh",
        tmp_path,
        lambda h: h["hosts"].append({**h["hosts"][0], "name": "node9", "address": "10.77.0.19"}),
    )
    result = slurmserve("probe", "--hosts", path)
    assert result.returncode == 2 and "host node9 (10.77.0.19)" in result.stderr
