"""Each backend's traits (planning.traits), which its class states as `traits`. Apart from the backends'
modules, so that reading them imports none of them (fabric is slow to import): the planner needs them for
every plan, a backend only to run one."""

from __future__ import annotations

from ..planning.traits import BackendTraits

# Each says only what holds for it (a fact left out is false).
LOCAL_TRAITS = BackendTraits(launch_script="launch.sh", runs_on_this_machine=True, head_reads_run_dir=True)
SLURM_TRAITS = BackendTraits(
    launch_script="slurmserve.sbatch",
    has_allocation=True,
    stages_model_in_job=True,
    head_reads_run_dir=True,  # the run directory is on the shared filesystem
)
# The supervisor runs on the launching machine, whose files the hosts may not share: the head does not read them.
SSH_TRAITS = BackendTraits(launch_script="driver.sh", reaches_nodes_over_ssh=True)
