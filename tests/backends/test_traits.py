"""Each backend states its traits; `traits_for` answers the same without importing the backend."""

from __future__ import annotations

import subprocess
import sys

import pydantic
import pytest

from slurmserve.backends import LOCAL_TRAITS, SLURM_TRAITS, SSH_TRAITS, backend_for, traits_for
from slurmserve.errors import UserError


@pytest.mark.parametrize("name", ["local", "slurm", "ssh"])
def test_traits_for_a_name_are_its_backends_own(name):
    assert traits_for(name) is backend_for(name).traits


def test_each_backends_traits():
    assert LOCAL_TRAITS.launch_script == "launch.sh"
    assert LOCAL_TRAITS.runs_on_this_machine and LOCAL_TRAITS.head_reads_run_dir
    assert not (LOCAL_TRAITS.has_allocation or LOCAL_TRAITS.reaches_nodes_over_ssh or LOCAL_TRAITS.stages_model_in_job)

    assert SLURM_TRAITS.launch_script == "slurmserve.sbatch"
    assert SLURM_TRAITS.has_allocation and SLURM_TRAITS.stages_model_in_job and SLURM_TRAITS.head_reads_run_dir
    assert not (SLURM_TRAITS.runs_on_this_machine or SLURM_TRAITS.reaches_nodes_over_ssh)

    assert SSH_TRAITS.launch_script == "driver.sh"
    assert SSH_TRAITS.reaches_nodes_over_ssh
    assert not (SSH_TRAITS.runs_on_this_machine or SSH_TRAITS.has_allocation or SSH_TRAITS.stages_model_in_job)
    assert not SSH_TRAITS.head_reads_run_dir  # its supervisor's files stay on the launching machine


def test_traits_are_frozen_values():
    with pytest.raises(pydantic.ValidationError):
        SLURM_TRAITS.has_allocation = False  # type: ignore[misc]


def test_an_unknown_backend_has_no_traits():
    with pytest.raises(UserError, match="unknown backend 'pbs'"):
        traits_for("pbs")


def test_reading_the_ssh_traits_imports_no_backend():
    """The planner reads traits for every plan; the SSH backend's module (fabric, invoke) is slow to import."""
    code = (
        "import sys; from slurmserve.backends import traits_for; traits_for('ssh'); "
        "print(sorted(m for m in sys.modules if m in ('invoke', 'fabric', 'slurmserve.backends.ssh')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
